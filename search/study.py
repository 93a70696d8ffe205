"""Creating, resuming and driving studies.

`--trials N` is the TOTAL number of finished (complete or pruned) trials a study should
hold: Optuna's own `n_trials` counts only the trials of one call (optuna#2638).
"""

from __future__ import annotations

import collections
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from objectives.schema import MAX_EPOCHS, MAX_SEED, SchemaError, mapping, number, one_of, text, whole_number
from spaces.base import RECIPE, DocumentedExperiment, SearchSpace
from storage.artifacts import inside, safe_slug
from storage.resilient import retry_callback
from storage.urls import storage_lock

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
METRIC_NAME = "validation accuracy"
PRUNERS = ("median", "hyperband", "none")
MAX_CONSECUTIVE_FAILURES = 5
HEARTBEAT_INTERVAL_S = 10
GRACE_PERIOD_S = 30
WAIT_POLL_S = 1.0


class StudyMismatchError(ValueError):
    """An existing study was created for a different space or dataset."""


def make_sampler(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(name: str, epochs: int, warmup_epochs: int = 2) -> optuna.pruners.BasePruner:
    if name == "median":
        # wait for a few complete trials and some epochs (the space says how many): early
        # epochs rank models poorly, annealed schedules most of all. Chosen over ASHA,
        # hyperband, a patient median and other warm-ups by BENCHMARKS.md part 7
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=warmup_epochs)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {name!r}")


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def finished_and_running(study: optuna.Study) -> tuple[int, int]:
    states = collections.Counter(t.state for t in study.get_trials(
        deepcopy=False, states=(*FINISHED, TrialState.RUNNING)))
    return sum(states[state] for state in FINISHED), states[TrialState.RUNNING]


def find_study(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study | None:
    if name not in optuna.study.get_all_study_names(storage):
        return None
    return optuna.load_study(study_name=name, storage=storage)


def require_study(storage: optuna.storages.BaseStorage, name: str, where: str,
                  error: type[Exception] = StudyMismatchError) -> optuna.Study:
    """Study `name`; `error` (one line) when `where` (the storage as users see it) holds none."""
    study = find_study(storage, name)
    if study is None:
        raise error(f"no study {name!r} in {where}: see `kmnist-search status --storage {where}`")
    return study


def check_matches(study: optuna.Study, space: SearchSpace, dataset: str) -> None:
    attrs = study.user_attrs
    for key, wanted in (("space", space.name), ("dataset", dataset)):
        if key in attrs and attrs[key] != wanted:
            raise StudyMismatchError(
                f"study {study.study_name!r} was created with {key} {attrs[key]!r}, not "
                f"{wanted!r}: use --{key} {attrs[key]} or another --study name"
            )


PRECISIONS = ("auto", "fp32", "bf16")
SETTINGS_ATTR = "search_settings"


@dataclass(frozen=True)
class SearchSettings:
    """What `start` stores on a study so that workers can rejoin it with the same data split,
    epochs, pruner and precision, and `export` can rebuild its split. Saved and loaded here only."""

    val_fraction: float
    seed: int
    split_hash: str  # identifies which training images went to validation
    epochs: int
    pruner: str
    target: int  # total finished trials the study should hold
    precision: str = "fp32"  # studies from before --precision trained in float32 on CPUs

    def save(self, study: optuna.Study) -> None:
        if study.user_attrs.get(SETTINGS_ATTR) != asdict(self):
            study.set_user_attr(SETTINGS_ATTR, asdict(self))

    @classmethod
    def load(cls, study: optuna.Study) -> SearchSettings:
        """The stored settings, each field checked (anyone who reaches the storage can change
        them); StudyMismatchError names a missing study setting or a bad field."""
        stored = study.user_attrs.get(SETTINGS_ATTR)
        if stored is None:
            raise StudyMismatchError(f"study {study.study_name!r} was not started by kmnist-search: create "
                                     f"it with `kmnist-search start --space NAME --study {study.study_name}`")
        try:
            mapping(stored, SETTINGS_ATTR)
            return cls(val_fraction=number(stored["val_fraction"], "val_fraction", 0, 1, open_interval=True),
                       seed=whole_number(stored["seed"], "seed", 0, MAX_SEED),
                       split_hash=text(stored["split_hash"], "split_hash", 128),
                       epochs=whole_number(stored["epochs"], "epochs", 1, MAX_EPOCHS),
                       pruner=text(stored["pruner"], "pruner", 64),
                       target=whole_number(stored["target"], "target", 1, 10**7),
                       precision=one_of(stored.get("precision") or "fp32", "precision", PRECISIONS))
        except SchemaError as error:
            raise StudyMismatchError(f"study {study.study_name!r} has damaged search settings ({error}): "
                                     "start a new study") from None
        except KeyError as error:
            raise StudyMismatchError(f"study {study.study_name!r} has search settings without {error}: "
                                     "start a new study") from None


def study_precision(study: optuna.Study | None, requested: str | None) -> str:
    """The precision a study's trials train in: the one it was started with, so one ranking
    never mixes numerics; `requested` (a --precision option, None when not given) must match."""
    settings = study.user_attrs.get(SETTINGS_ATTR) if study is not None else None
    if settings is None:
        return requested or "auto"
    recorded = settings.get("precision", "fp32")  # studies from before --precision: fp32 on CPUs
    if requested is not None and requested != recorded:
        raise StudyMismatchError(f"study {study.study_name!r} trains in precision {recorded!r}, not "
                                 f"{requested!r}: use --precision {recorded} or another --study name")
    return recorded


def open_study(storage: optuna.storages.BaseStorage, name: str, space: SearchSpace,
               dataset: str, sampler: optuna.samplers.BaseSampler,
               pruner: optuna.pruners.BasePruner) -> optuna.Study:
    """Create study `name` for `space`, or resume it if it exists for the same space."""
    existing = find_study(storage, name)
    if existing is not None:
        check_matches(existing, space, dataset)
    study = optuna.create_study(
        study_name=name, storage=storage, sampler=sampler, pruner=pruner,
        direction="maximize", load_if_exists=True,
    )
    if existing is None:
        study.set_user_attr("space", space.name)
        study.set_user_attr("dataset", dataset)
        study.set_metric_names([METRIC_NAME])
    return study


def _enqueue_missing(study: optuna.Study, attr: str, entries: Sequence[tuple[str, dict, dict]],
                     lock: AbstractContextManager | None) -> int:
    """Enqueue each (key, params, user_attrs) whose key no trial holds in user attribute `attr`;
    `lock` (storage.urls.storage_lock) makes check-then-enqueue atomic across workers."""
    with lock or nullcontext():
        present = {t.user_attrs.get(attr) for t in study.get_trials(deepcopy=False)}
        new = [(params, attrs) for key, params, attrs in entries if key not in present]
        for params, attrs in new:
            study.enqueue_trial(params, user_attrs=attrs)
    return len(new)


def enqueue_documented(study: optuna.Study, space: SearchSpace,
                       experiments: Sequence[DocumentedExperiment] | None = None,
                       lock: AbstractContextManager | None = None) -> int:
    """Enqueue each documented experiment not yet in the study; returns how many were added."""
    chosen = space.experiments if experiments is None else experiments
    return _enqueue_missing(study, "documented_experiment", [
        (e.key, space.trial_params(e.config), e.trial_attrs()) for e in chosen], lock)


def enqueue_recipes(study: optuna.Study, space: SearchSpace,
                    lock: AbstractContextManager | None = None) -> int:
    """Enqueue each of the space's recipes not yet in the study (after the documented
    experiments, so replays still run first); returns how many were added."""
    return _enqueue_missing(study, RECIPE, [
        (r.name, space.trial_params(r.config), r.trial_attrs()) for r in space.recipes], lock)


def queued_documented(study: optuna.Study) -> int:
    """Documented experiments enqueued but not yet run (a --trials below their number)."""
    return sum("documented_experiment" in t.user_attrs
               for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def retried(study: optuna.Study) -> set[int]:
    return {n for t in study.get_trials(deepcopy=False) for n in t.system_attrs.get("retry_history", [])}


def resume_interrupted(study: optuna.Study) -> int:
    """Requeue trials stopped by Ctrl-C (they resume from their checkpoint)."""
    done = retried(study)
    interrupted = [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
                   if t.user_attrs.get("interrupted") and t.number not in done]
    for trial in interrupted:
        retry_callback()(study, trial)
    return len(interrupted)


class CheckpointPaths:
    """One checkpoint file per trial lineage: a retry resumes its original trial's file.

    Paths are built from integers and a safe slug of the study's name, and checked to stay
    inside the checkpoint folder: a study name or trial attribute (which anyone who reaches
    the storage can set) never picks a path. As a study.optimize callback it deletes the file
    of a trial once the trial's end is stored, not before: a worker killed between the two
    leaves a retry that replays the saved epochs instead of training them again."""

    def __init__(self, folder: Path, study: optuna.Study) -> None:
        self.root, self.study = Path(folder), study
        self.folder = self.root / safe_slug(study.study_name)

    def __call__(self, trial: optuna.Trial) -> Path:
        system_attrs = self.study._storage.get_trial_system_attrs(trial._trial_id)
        return self._path(system_attrs, trial.number)

    def _path(self, system_attrs: dict, number: int) -> Path:
        lineage = system_attrs.get("failed_trial", number)
        if isinstance(lineage, bool) or not isinstance(lineage, int) or not 0 <= lineage <= number:
            lineage = number  # a forged attribute: this trial's own file
        return inside(self.root, self.folder.name, f"trial-{lineage}.safetensors")

    def discard_finished(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state in FINISHED:
            self._path(trial.system_attrs, trial.number).unlink(missing_ok=True)


def study_lock(study: optuna.Study) -> Callable[[], AbstractContextManager] | None:
    """The cross-process lock of the study's storage (SQLite file, PostgreSQL advisory lock)."""
    own_lock = getattr(study._storage, "lock", None)  # a worker's storage: taking it rides out outages
    if callable(own_lock):
        return own_lock
    backend = getattr(study._storage, "_backend", study._storage)  # behind Optuna's cache
    url = getattr(backend, "url", None)
    return (lambda: storage_lock(url)) if isinstance(url, str) else None


class AskGate:
    """Holds the storage lock from a worker's "fewer than target finished or running" check
    until its new trial is running, so two workers never both start the last trial: Optuna
    cannot delete a trial once asked, and one that never ran would otherwise stay a FAIL."""

    def __init__(self, lock: Callable[[], AbstractContextManager] | None) -> None:
        self.lock, self.held = lock, None

    def acquire(self) -> None:
        if self.lock is not None and self.held is None:
            held = ExitStack()
            held.enter_context(self.lock())
            self.held = held

    def release(self) -> None:
        if self.held is not None:
            held, self.held = self.held, None
            held.close()


class SurplusTrialError(Exception):
    """Other workers already run enough trials to reach the target."""


class TrialGuard:
    """Wraps the objective for one worker: keeps the total exact and records interruptions.

    With the storage's lock (`AskGate`) no trial past the target is ever created. Without one
    (other storages) a trial runs only if fewer than `target` trials are finished or were started before it
    (ordered by start time, then number). Each worker checks after its own trial is marked
    running, so of two racing trials the later one always sees the earlier.
    """

    def __init__(self, study: optuna.Study, target: int,
                 objective: Callable[[optuna.Trial], float], gate: AskGate | None = None) -> None:
        self.study, self.target, self.objective = study, target, objective
        self.gate = gate or AskGate(None)
        self.trial_id: int | None = None

    def __call__(self, trial: optuna.Trial) -> float:
        self.gate.release()  # this trial is running now: other workers count it
        self.trial_id = trial._trial_id
        self._check_target(trial)
        try:
            return self.objective(trial)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise

    def failed_elsewhere(self) -> bool:
        """Whether the last trial was failed by another process while this one ran it (its
        heartbeats came late, so it looked dead); that process requeued it."""
        return self.trial_id is not None and \
            self.study._storage.get_trial(self.trial_id).state == TrialState.FAIL

    def _check_target(self, trial: optuna.Trial) -> None:
        # one read of the study: Optuna's cache fetches only new and unfinished trials, and
        # this trial is among the running ones it returns
        live = self.study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
        me = next((t for t in live if t.number == trial.number), None) or \
            self.study._storage.get_trial(trial._trial_id)
        key = (me.datetime_start, me.number)
        ahead = sum(1 for t in live
                    if t.state in FINISHED or (t is not me and (t.datetime_start, t.number) < key))
        if ahead < self.target:
            return
        trial.set_user_attr("surplus", "not run: other workers reached the target")
        if {"fixed_params", "failed_trial"} & set(me.system_attrs):
            # an enqueued trial, or the retry of a dead worker's trial, must not be lost with it
            self.study.add_trial(optuna.trial.create_trial(
                state=TrialState.WAITING, params=me.params, distributions=me.distributions,
                user_attrs=me.user_attrs, system_attrs=me.system_attrs))
        raise SurplusTrialError("target reached by other workers")


class FailureStreak:
    """Counts consecutive failed trials: a search whose every trial crashes must stop."""

    def __init__(self) -> None:
        self.streak = 0

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        surplus = "surplus" in trial.user_attrs
        self.streak = self.streak + 1 if trial.state == TrialState.FAIL and not surplus else 0


def heartbeat_enabled(study: optuna.Study) -> bool:
    get_interval = getattr(study._storage, "get_heartbeat_interval", None)
    return get_interval is not None and get_interval() is not None


def run_until(study: optuna.Study, objective: Callable[[optuna.Trial], float], target: int,
              callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
              deadline: float | None = None) -> bool:
    """Run trials until the study holds exactly `target` finished trials, counting every
    worker's, or until `deadline` (time.time()) passes: no trial starts after it, the running
    one finishes. Returns False when it gave up after repeated failures."""
    gate = AskGate(study_lock(study))
    guard, failures = TrialGuard(study, target, objective, gate), FailureStreak()
    while deadline is None or time.time() < deadline:
        if failures.streak >= MAX_CONSECUTIVE_FAILURES:
            return False
        gate.acquire()
        try:
            finished, running = finished_and_running(study)
            if finished >= target:
                break
            if finished + running >= target:  # the last trials are running elsewhere
                gate.release()
                if heartbeat_enabled(study):  # (study.optimize does this itself before each trial)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                        optuna.storages.fail_stale_trials(study)  # requeues trials of dead workers
                time.sleep(WAIT_POLL_S)
                continue
            study.optimize(guard, n_trials=1, callbacks=[failures, *callbacks],
                           catch=(RuntimeError, ValueError), gc_after_trial=False)
        except SurplusTrialError:
            continue
        except Exception as error:
            unavailable = getattr(study._storage, "unavailable", lambda: None)()
            if unavailable is not None:  # the storage stayed away (Optuna's tell can mask that)
                raise unavailable from None
            # Optuna's "Cannot tell a FAIL trial": another process failed it as stale; its retry runs it
            if not (isinstance(error, (RuntimeError, ValueError)) and guard.failed_elsewhere()):
                raise
        finally:
            gate.release()  # the guard released it already unless asking failed
    return True


def trial_source(trial: FrozenTrial) -> str:
    """Where a trial's parameters came from: a documented experiment's key, "recipe NAME" or
    "sampled". Attributes are read back, so only text values count."""
    documented, recipe = trial.user_attrs.get("documented_experiment"), trial.user_attrs.get(RECIPE)
    if isinstance(documented, str):
        return documented
    if isinstance(recipe, str):
        return f"recipe {recipe}"
    return "sampled"


def leaderboard(study: optuna.Study, limit: int = 10) -> list[FrozenTrial]:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(complete, key=lambda t: t.value, reverse=True)[:limit]


# --- the re-evaluated pick (search/reevaluate.py writes it; export, status and the dashboard read it) ---

PICK_ATTR = "reevaluated_pick"


def stored_pick(study: optuna.Study) -> dict[str, Any] | None:
    """The study's re-evaluated pick (trial number, mean, folds, cost), checked; None if absent."""
    value = study.user_attrs.get(PICK_ATTR)
    try:
        mapping(value, PICK_ATTR)
        return {"trial": whole_number(value["trial"], "trial", 0, 10**9),
                "mean": number(value["mean"], "mean", 0, 1), "std": number(value["std"], "std", 0, 1),
                "folds": whole_number(value["folds"], "folds", 2, 100),
                "top": whole_number(value["top"], "top", 1, 10**4),
                "seconds": number(value["seconds"], "seconds", 0, 10**9)}
    except (SchemaError, KeyError, TypeError):
        return None


def describe_pick(pick: dict[str, Any]) -> str:
    return (f"re-evaluated pick: trial {pick['trial']}, {100 * pick['mean']:.2f}% ± {100 * pick['std']:.2f} "
            f"mean over {pick['folds']} folds, chosen among the top {pick['top']} "
            f"({pick['seconds'] / 60:.1f} min of training)")
