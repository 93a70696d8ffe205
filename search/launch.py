"""One way to launch a search: `start` and `worker` (and the benchmarks and tests) call these.

`start_search` creates or resumes a study, records its `SearchSettings`, enqueues the
documented experiments, spawns the extra local workers and runs one itself; `join_search`
runs one more worker on a study `start` created, from any machine that reaches its storage.
Both report through `say` (progress lines), `warn` (storage outages, on stderr) and `console`
(the live progress).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from rich.console import Console

from objectives.budget import Budget, record_budget, settled_budget
from objectives.datasets import default_data_dir
from search.study import (
    GRACE_PERIOD_S,
    HEARTBEAT_INTERVAL_S,
    MAX_CONSECUTIVE_FAILURES,
    PRUNERS,
    SearchSettings,
    StudyMismatchError,
    check_matches,
    enqueue_documented,
    enqueue_recipes,
    find_study,
    finished_count,
    make_pruner,
    make_sampler,
    open_study,
    resume_interrupted,
    study_precision,
)
from spaces import get_space
from storage.artifacts import artifact_dir
from storage.resilient import DEFAULT_RETRY_FOR_S, ResilientStorage, open_resilient_storage, retry_callback
from storage.urls import redact_url, storage_lock

Say = Callable[[str], None]


class SearchStoppedError(RuntimeError):
    """The search gave up (every trial failing); stored trials are kept."""


@dataclass(frozen=True)
class Connection:
    """How a worker reaches its storage and tells the others it is alive."""

    storage: str
    heartbeat_interval: int = HEARTBEAT_INTERVAL_S
    grace_period: int = GRACE_PERIOD_S
    retry_for: float = DEFAULT_RETRY_FOR_S


@dataclass(frozen=True)
class StartRequest:
    """What `kmnist-search start` asks for; None means the default described beside it."""

    space: str
    connection: Connection
    study: str | None = None  # the space's name
    trials: int = 100
    epochs: int | None = None  # the space's
    timeout_s: float | None = None  # no new trial after this long
    pruner: str = "median"
    artifact_dir: Path | None = None  # beside the SQLite file
    jobs: int = 1
    threads: int | None = None  # cores / jobs
    replay: bool = True  # the space's documented experiments first
    recipes: bool = True  # then its recipes
    budget: Budget | None = None  # the study's stored budget, else none
    precision: str | None = None  # auto for a new study, a resumed study's own
    dataset: str = "kmnist"
    data_dir: Path | None = None  # default_data_dir()
    val_fraction: float = 1 / 6
    seed: int = 0
    device: str = "auto"


@dataclass(frozen=True)
class JoinRequest:
    """What `kmnist-search worker` asks for."""

    study: str
    connection: Connection
    trials: int | None = None  # the target `start` set
    data_dir: Path | None = None
    device: str = "auto"
    artifact_dir: Path | None = None
    threads: int | None = None
    deadline: float | None = None  # time.time() after which no new trial starts
    budget: Budget | None = None
    precision: str | None = None
    show_progress: bool = True


@dataclass
class SearchOutcome:
    study: optuna.Study
    target: int
    nothing_to_do: bool = False
    timed_out: bool = False
    worker_problems: list[str] = field(default_factory=list)  # last stderr line of each failed worker

    @property
    def finished(self) -> int:
        return finished_count(self.study)


def open_worker_storage(connection: Connection, warn: Say, must_exist: bool) -> ResilientStorage:
    """Storage with heartbeats, so trials of dead workers fail and are retried, that rides out
    outages of up to `retry_for` seconds."""
    return open_resilient_storage(connection.storage, connection.retry_for,
                                  heartbeat_interval=connection.heartbeat_interval,
                                  grace_period=connection.grace_period, stale_trial_callback=retry_callback(),
                                  say=warn, must_exist=must_exist)


def start_search(request: StartRequest, console: Console, say: Say, warn: Say) -> SearchOutcome:
    """Create or resume the study and search until it holds `request.trials` finished trials
    (or the time is up). SearchStoppedError when every trial keeps failing."""
    space = get_space(request.space)
    epochs = request.epochs or space.epochs
    deadline = time.time() + request.timeout_s if request.timeout_s else None
    study_name = request.study or space.name
    connection = request.connection
    storage = open_worker_storage(connection, warn, must_exist=False)  # only start creates
    existing = find_study(storage, study_name)
    budget = settled_budget(existing, request.budget)
    precision = study_precision(existing, request.precision)
    if existing is not None:
        check_matches(existing, space, request.dataset)
        if finished_count(existing) >= request.trials:
            return SearchOutcome(existing, request.trials, nothing_to_do=True)
    # torch loads only now, so option and storage errors answer at once
    from objectives.data import load_search_data
    from objectives.training import resolve_device, resolve_precision
    from search.worker import WorkerSettings, default_threads, run_worker, spawn_workers, wait_for_workers

    device = resolve_device(request.device)
    data_dir = request.data_dir or default_data_dir()
    data = load_search_data(request.dataset, data_dir, request.val_fraction, request.seed, device)
    study = open_study(storage, study_name, space, request.dataset, make_sampler(request.seed),
                       make_pruner(request.pruner, epochs, space.pruner_warmup(epochs)))
    SearchSettings(request.val_fraction, request.seed, data.split_hash, epochs, request.pruner,
                   request.trials, precision).save(study)
    record_budget(study, budget)
    added = enqueue_documented(study, space, lock=storage_lock(connection.storage)) if request.replay else 0
    recipes = enqueue_recipes(study, space, lock=storage_lock(connection.storage)) if request.recipes else 0
    resumed = resume_interrupted(study)
    threads = request.threads or default_threads(request.jobs)
    say(f"study {study_name!r} on {redact_url(connection.storage)}: {finished_count(study)} of "
        f"{request.trials} trials finished, {added} documented experiment(s) and "
        f"{recipes} recipe(s) enqueued, {resumed} interrupted "
        f"trials resumed; {len(data.train)} train / {len(data.val)} validation images of {request.dataset} "
        f"on {device} in {resolve_precision(precision, device)}; {request.jobs} worker(s) x {threads} "
        f"thread(s); {budget.describe()}")
    folder = artifact_dir(connection.storage, request.artifact_dir)
    extra = spawn_workers(request.jobs - 1, study_name, connection.storage, request.trials, threads, data_dir,
                          request.device, folder, connection.heartbeat_interval, connection.grace_period,
                          deadline, connection.retry_for)
    try:
        settings = WorkerSettings(request.trials, epochs, request.seed, folder, threads, deadline, budget,
                                  precision)
        completed = run_worker(study, space, data, settings, console)
    finally:
        problems = wait_for_workers(extra)
    if not completed:
        raise SearchStoppedError(f"stopped after {MAX_CONSECUTIVE_FAILURES} failed trials in a row: "
                                 "see their fail_reason in `kmnist-search status` or the dashboard")
    return SearchOutcome(study, request.trials, timed_out=finished_count(study) < request.trials,
                         worker_problems=problems)


def join_search(request: JoinRequest, console: Console, say: Say, warn: Say) -> SearchOutcome:
    """Run one more worker on a study `start` created, with the study's own settings."""
    where = redact_url(request.connection.storage)
    storage = open_worker_storage(request.connection, warn, must_exist=True)
    study = find_study(storage, request.study)
    if study is None:
        raise StudyMismatchError(f"no study {request.study!r} started by kmnist-search in {where}: create it "
                                 f"with `kmnist-search start --space NAME --study {request.study} --storage "
                                 f"{where}`")
    settings = SearchSettings.load(study)
    if settings.pruner not in PRUNERS:
        raise StudyMismatchError(f"study {request.study!r} uses pruner {settings.pruner!r}, which workers do "
                                 f"not know ({', '.join(PRUNERS)}): start a new study")
    space, dataset = get_space(str(study.user_attrs.get("space"))), str(study.user_attrs.get("dataset"))
    target = request.trials or settings.target
    budget = settled_budget(study, request.budget)
    precision = study_precision(study, request.precision)

    from objectives.data import load_search_data
    from objectives.training import resolve_device
    from search.worker import WorkerSettings, default_threads, run_worker

    data = load_search_data(dataset, request.data_dir or default_data_dir(), settings.val_fraction,
                            settings.seed, resolve_device(request.device))
    if data.split_hash != settings.split_hash:
        raise StudyMismatchError(f"this worker's {dataset} files give a different validation split "
                                 "than the study's: point --data-dir at the same dataset files")
    # each worker its own sampler seed: identical seeds would propose identical trials
    study = optuna.load_study(study_name=request.study, storage=storage,
                              sampler=make_sampler(settings.seed + os.getpid()),
                              pruner=make_pruner(settings.pruner, settings.epochs,
                                                 space.pruner_warmup(settings.epochs)))
    worker = WorkerSettings(target, settings.epochs, settings.seed,
                            artifact_dir(request.connection.storage, request.artifact_dir),
                            request.threads or default_threads(1), request.deadline, budget, precision)
    if request.show_progress:
        say(f"worker joined study {request.study!r}: {finished_count(study)} of {target} trials finished")
    if not run_worker(study, space, data, worker, console, show_progress=request.show_progress):
        raise SearchStoppedError(f"stopped after {MAX_CONSECUTIVE_FAILURES} failed trials in a row")
    return SearchOutcome(study, target)
