"""`kmnist-search`: the command line.

Every option is checked before any work starts; users see one line naming the problem
and the fix, never a traceback.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import optuna
from rich.console import Console
from rich.table import Table

from objectives.budget import Budget, format_cost
from objectives.datasets import DATASET_NAMES, SOURCES, DataUnavailableError, default_data_dir
from objectives.errors import DeviceUnavailableError, TensorFileError
from search.budget import UnmeetableBudgetError, record_budget, settled_budget
from search.export import ExportError, checked_params, choose_trials, export_config
from search.front import COSTS, FrontError
from search.progress import leaderboard_table
from search.replay import TABLE_COLUMNS, table_cells
from search.study import (
    GRACE_PERIOD_S,
    HEARTBEAT_INTERVAL_S,
    MAX_CONSECUTIVE_FAILURES,
    PRUNERS,
    StudyMismatchError,
    check_matches,
    enqueue_documented,
    find_study,
    finished_count,
    make_pruner,
    make_sampler,
    open_study,
    queued_documented,
    resume_interrupted,
    retry_callback,
    study_precision,
)
from spaces import ALL_SPACES, get_space
from spaces.base import UnknownSpaceError, format_widths
from storage.artifacts import artifact_dir, attach, open_artifact_store
from storage.configs import FORMATS, ConfigError
from storage.resilient import DEFAULT_RETRY_FOR_S, ResilientStorage, open_resilient_storage
from storage.urls import DEFAULT_STORAGE, StorageError, open_storage, proxy_address, storage_lock


class SearchStoppedError(RuntimeError):
    """The search gave up (every trial failing); stored trials are kept."""


USER_ERRORS = (UnknownSpaceError, DataUnavailableError, StorageError, StudyMismatchError, ExportError,
               ConfigError, SearchStoppedError, TensorFileError, DeviceUnavailableError,
               UnmeetableBudgetError, FrontError)


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse prints usage + message; we print one line
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _whole_number(low: int, high: int | None = None):
    """An argparse type: a whole number in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if high is not None and not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must lie between {low} and {high}, got {value}")
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


_positive_int = _whole_number(1)
_port = _whole_number(1, 65535)
PROXY_PORT = 13000  # Optuna's default for its gRPC storage proxy


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must lie between 0 and 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _points(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must lie between 0 and 100 percentage points, got {text}")
    return value


DEFAULT_CURVE_SIZES = "500,750,1000,1500,2000,3000,4000,all"


def _sizes(text: str) -> tuple[int, ...]:
    """Comma-separated training-set sizes; 'all' (0) is the whole training split."""
    sizes = []
    for part in text.split(","):
        part = part.strip()
        if part == "all":
            sizes.append(0)
        elif part.isdigit() and int(part) >= 10:
            sizes.append(int(part))
        else:
            raise argparse.ArgumentTypeError(f"{part!r} is not a size of 10 or more images or 'all'")
    return tuple(sizes)


def _report_number(text: str) -> str:
    if not (len(text) == 3 and text.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a three-digit report number such as 002")
    return text


def _device(text: str) -> str:
    if text not in ("auto", "cpu") and not text.startswith("cuda"):
        raise argparse.ArgumentTypeError(f"{text!r} is not auto, cpu or cuda[:N]")
    return text


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", choices=DATASET_NAMES, default="kmnist")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="dataset root in torchvision's layout (default: $KMNIST_SEARCH_DATA "
                        "or ~/.cache/kmnist-search)")
    parser.add_argument("--val-fraction", type=_fraction, default=1 / 6,
                        help="share of the training set held out for validation (default 1/6)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", type=_device, default="auto", help="auto, cpu or cuda[:N]")


def _add_precision_option(parser: argparse.ArgumentParser, default_help: str) -> None:
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default=None,
                        help=f"training arithmetic: bf16 autocast or float32 ({default_help}; "
                        "auto = bf16 on CUDA and on CPUs with native bf16)")


def _add_worker_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=_positive_int, default=None,
                        help="torch threads per worker (default: cores / jobs)")
    parser.add_argument("--heartbeat-interval", type=_positive_int, default=HEARTBEAT_INTERVAL_S,
                        help=f"seconds between a running trial's heartbeats (default {HEARTBEAT_INTERVAL_S})")
    parser.add_argument("--grace-period", type=_positive_int, default=GRACE_PERIOD_S,
                        help="seconds without a heartbeat before a trial counts as dead and is retried "
                        f"(default {GRACE_PERIOD_S})")
    parser.add_argument("--retry-for", type=_positive_float, default=DEFAULT_RETRY_FOR_S, metavar="SECONDS",
                        help="keep retrying an unreachable storage this long before giving up "
                        f"(default {DEFAULT_RETRY_FOR_S})")


def _add_budget_options(parser: argparse.ArgumentParser) -> None:
    budget = parser.add_argument_group(
        "deployment budget", "a model over it is pruned before training; stored on the study "
        "(a later start or worker without these options searches under the stored one)")
    budget.add_argument("--max-params", type=_positive_int, default=None, metavar="N",
                        help="most parameters a model may have")
    budget.add_argument("--max-mflops", type=_positive_float, default=None, metavar="M",
                        help="most MFLOPs per image of a forward pass")
    budget.add_argument("--max-latency-ms", type=_positive_float, default=None, metavar="L",
                        help="most milliseconds per image at batch 1 on one CPU thread (measured)")


def _add_pick_options(parser: argparse.ArgumentParser, within_help: str) -> None:
    parser.add_argument("--cost", choices=tuple(COSTS), default="params",
                        help="params, mflops or latency (ms per image at batch 1, one CPU thread); "
                        "default params")
    parser.add_argument("--within-points", type=_points, default=None, metavar="X", help=within_help)


def asked_budget(args: argparse.Namespace) -> Budget | None:
    """The budget the options give, or None when none was given."""
    budget = Budget(args.max_params, args.max_mflops, args.max_latency_ms)
    return budget if budget.limits() else None


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="kmnist-search", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    start = commands.add_parser("start", help="create or resume a study and search")
    start.add_argument("--space", required=True, help="see `kmnist-search spaces`")
    start.add_argument("--study", help="study name (default: the space name)")
    start.add_argument("--trials", type=_positive_int, default=100,
                       help="TOTAL finished trials the study should hold (default 100)")
    start.add_argument("--storage", default=DEFAULT_STORAGE)
    start.add_argument("--epochs", type=_positive_int, default=None,
                       help="epoch budget per trial (default: the space's, see `kmnist-search "
                       "spaces`); longer documented runs are capped")
    start.add_argument("--timeout", type=_positive_float, default=None, metavar="MINUTES",
                       help="start no trial after this many minutes (running ones finish); "
                       "the same command later goes on")
    start.add_argument("--pruner", choices=PRUNERS, default="median")
    start.add_argument("--artifact-dir", type=Path, default=None,
                       help="artifact store for plots and CSVs (default: <storage file>-artifacts)")
    start.add_argument("--jobs", type=_positive_int, default=1,
                       help="worker processes on this machine (default 1)")
    _add_worker_options(start)
    start.add_argument("--no-replay", action="store_true",
                       help="do not enqueue the space's documented experiments")
    _add_budget_options(start)
    _add_precision_option(start, "default: auto for a new study, a resumed study's own")
    _add_data_options(start)

    worker = commands.add_parser(
        "worker", help="join an existing study as one more worker (any machine that reaches its storage)"
    )
    worker.add_argument("--study", required=True)
    worker.add_argument("--storage", default=DEFAULT_STORAGE)
    worker.add_argument("--trials", type=_positive_int, default=None,
                        help="total finished trials to reach (default: the target `start` set)")
    worker.add_argument("--data-dir", type=Path, default=None)
    worker.add_argument("--device", type=_device, default="auto")
    worker.add_argument("--artifact-dir", type=Path, default=None)
    worker.add_argument("--quiet", action="store_true", help="no progress display")
    worker.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    _add_precision_option(worker, "default and only choice: the study's")
    _add_worker_options(worker)
    _add_budget_options(worker)

    replay = commands.add_parser(
        "replay", help="run the documented experiments and audit the reports' claims"
    )
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("--space", help="replay this space's documented experiments")
    which.add_argument("--all", action="store_true", help="replay every documented experiment")
    replay.add_argument("--max-epochs", type=_positive_int, default=None,
                        help="cap each experiment's documented epochs (the cap is shown)")
    replay.add_argument("--storage", default=DEFAULT_STORAGE)
    replay.add_argument("--out", type=Path, default=Path("replay"),
                        help="folder for replay.csv, replay.md and claims.csv (default ./replay)")
    replay.add_argument("--artifact-dir", type=Path, default=None)
    replay.add_argument("--tolerance", type=_fraction, default=0.01,
                        help="accuracy difference still counted as reproduced (default 0.01)")
    replay.add_argument("--dataset", choices=DATASET_NAMES, default=None,
                        help="run every experiment on this dataset (default: each its documented one)")
    replay.add_argument("--data-dir", type=Path, default=None)
    replay.add_argument("--val-fraction", type=_fraction, default=1 / 6)
    replay.add_argument("--seed", type=int, default=0)
    replay.add_argument("--device", type=_device, default="auto")
    replay.add_argument("--report", type=_report_number, default=None, metavar="NNN",
                        help="only the experiments of this report (000-004)")
    curve = replay.add_argument_group(
        "learning curve", "with --learning-curve, each experiment trains at several training-set sizes and "
        "its claimed test accuracy is judged against the curve extrapolated to the report's size")
    curve.add_argument("--learning-curve", action="store_true",
                       help="audit by learning curves: writes audit.md, audit.csv and curve-runs.csv")
    curve.add_argument("--sizes", type=_sizes, default=_sizes(DEFAULT_CURVE_SIZES),
                       help=f"training-set sizes, comma-separated; 'all' is the whole training split "
                       f"(default {DEFAULT_CURVE_SIZES})")
    curve.add_argument("--curve-seeds", type=_whole_number(2), default=4,
                       help="runs per size, each with its own nested subsets (default 4)")
    curve.add_argument("--level", type=_fraction, default=0.9,
                       help="nominal coverage of the prediction intervals (default 0.9)")
    curve.add_argument("--validate-up-to", type=_sizes, default=_sizes("2000,4000"),
                       help="check the method: fit on sizes up to each of these, predict the largest "
                       "(default 2000,4000)")
    curve.add_argument("--bootstrap", type=_whole_number(20), default=500,
                       help="bootstrap refits per interval (default 500)")
    curve.add_argument("--threads", type=_positive_int, default=None, help="torch threads (default: torch's)")

    export = commands.add_parser("export", help="write the best trial(s) as a self-contained config")
    export.add_argument("--study", required=True)
    export.add_argument("--storage", default=DEFAULT_STORAGE)
    export.add_argument("-o", "--output", type=Path, default=None,
                        help="file to write (default best.json or best.yaml)")
    export.add_argument("-f", "--format", choices=FORMATS, default=None,
                        help="json or yaml (default: from the -o suffix, else json)")
    export.add_argument("--trial", type=int, default=None, help="export this trial instead of the best")
    export.add_argument("--top", type=_positive_int, default=1,
                        help="export the K best trials as NAME-1, NAME-2, ...")
    export.add_argument("--force", action="store_true", help="overwrite existing files")
    _add_pick_options(export, "export the cheapest trial within X percentage points of the best "
                      "validation accuracy (see `kmnist-search front`)")

    front = commands.add_parser(
        "front", help="the completed trials no other beats on both validation accuracy and a cost, "
        "as a table and a figure attached to the study")
    front.add_argument("--study", required=True)
    front.add_argument("--storage", default=DEFAULT_STORAGE)
    front.add_argument("--artifact-dir", type=Path, default=None,
                       help="artifact store (default: <storage file>-artifacts, as `start` writes)")
    _add_pick_options(front, "also name the cheapest trial within X percentage points of the best")
    front.add_argument("-o", "--output", type=Path, default=None, help="also write the figure to this PNG")
    front.add_argument("--force", action="store_true", help="overwrite an existing -o file")

    retrain = commands.add_parser("retrain", help="train an exported config on train+validation, test it")
    retrain.add_argument("config", type=Path, help="a file written by `kmnist-search export`")
    retrain.add_argument("--seeds", type=_positive_int, default=3,
                         help="train this many times (seeds seed, seed+1, ...) and report mean ± std")
    retrain.add_argument("--out", type=Path, default=None, help="run folder (default runs/<study>-trial<N>)")
    retrain.add_argument("--data-dir", type=Path, default=None)
    retrain.add_argument("--device", type=_device, default="auto")
    retrain.add_argument("--force", action="store_true", help="overwrite an existing run folder")
    retrain.add_argument("--threads", type=_positive_int, default=None,
                         help="torch threads (default: torch's, all cores)")

    evaluate = commands.add_parser("evaluate", help="reload a retrained model and recompute test metrics")
    evaluate.add_argument("run", type=Path, help="a folder written by `kmnist-search retrain`")
    evaluate.add_argument("--data-dir", type=Path, default=None,
                          help="dataset root (default: the one retrain used)")
    evaluate.add_argument("--device", type=_device, default="auto")

    commands.add_parser("spaces", help="list the search spaces and their documented experiments")

    dashboard = commands.add_parser("dashboard", help="serve optuna-dashboard on the study storage")
    dashboard.add_argument("--storage", default=DEFAULT_STORAGE)
    dashboard.add_argument("--host", default="127.0.0.1")
    dashboard.add_argument("--port", type=_port, default=8080)
    dashboard.add_argument("--artifact-dir", type=Path, default=None,
                           help="artifact store (default: <storage file>-artifacts, as `start` writes)")

    proxy = commands.add_parser(
        "proxy", help="serve a database to many workers over gRPC (their --storage grpc://HOST:PORT)"
    )
    proxy.add_argument("--storage", required=True, help="the database: postgresql://USER:PASSWORD@HOST/DB")
    proxy.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1; 0.0.0.0 for other machines)")
    proxy.add_argument("--port", type=_port, default=PROXY_PORT, help=f"(default {PROXY_PORT})")
    proxy.add_argument("--grace-period", type=_positive_int, default=GRACE_PERIOD_S,
                       help="seconds a running trial may go without a heartbeat where its worker "
                       f"recorded none (default {GRACE_PERIOD_S}; workers send their own)")
    proxy.add_argument("--check-every", type=_positive_float, default=HEARTBEAT_INTERVAL_S, metavar="SECONDS",
                       help=f"seconds between checks for dead workers (default {HEARTBEAT_INTERVAL_S})")

    status = commands.add_parser("status", help="print a study's leaderboard")
    status.add_argument("--study", help="study name (default: every study in the storage)")
    status.add_argument("--storage", default=DEFAULT_STORAGE)

    root = commands.add_parser(
        "build-root", help="make a dataset root from test images only (when training files are missing)"
    )
    root.add_argument("--source", type=Path, required=True,
                      help="folder with t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz")
    root.add_argument("--out", type=Path, required=True, help="dataset root to write")
    root.add_argument("--test-fraction", type=_fraction, default=0.2)
    root.add_argument("--dataset", choices=SOURCES, default="kmnist")
    root.add_argument("--seed", type=int, default=0)
    return parser


def record_search_settings(study: optuna.Study, args: argparse.Namespace, split_hash: str) -> None:
    """What `worker` and `export` need to rejoin the study and rebuild its data split."""
    settings = {"val_fraction": args.val_fraction, "seed": args.seed, "split_hash": split_hash,
                "epochs": args.epochs, "pruner": args.pruner, "target": args.trials,
                "precision": args.precision}
    if study.user_attrs.get("search_settings") != settings:
        study.set_user_attr("search_settings", settings)


def open_worker_storage(args: argparse.Namespace) -> ResilientStorage:
    """Storage with heartbeats, so trials of dead workers fail and are retried, that rides out
    outages of up to --retry-for seconds."""
    def say(line: str) -> None:
        print(f"kmnist-search {args.command}: {line}", file=sys.stderr, flush=True)

    return open_resilient_storage(args.storage, args.retry_for, heartbeat_interval=args.heartbeat_interval,
                                  grace_period=args.grace_period, stale_trial_callback=retry_callback(),
                                  say=say, must_exist=args.command == "worker")  # only start creates


def cmd_start(args: argparse.Namespace, console: Console) -> int:
    space = get_space(args.space)
    args.epochs = args.epochs or space.epochs
    deadline = time.time() + args.timeout * 60 if args.timeout else None
    study_name = args.study or space.name
    storage = open_worker_storage(args)
    existing = find_study(storage, study_name)
    budget = settled_budget(existing, asked_budget(args))
    args.precision = study_precision(existing, args.precision)
    if existing is not None:
        check_matches(existing, space, args.dataset)
        if finished_count(existing) >= args.trials:
            console.print(f"study {study_name!r} already holds {finished_count(existing)} finished "
                          f"trials (target {args.trials}): nothing to do")
            console.print(leaderboard_table(existing))
            return 0
    # torch loads only now, so option and storage errors answer at once
    from objectives.data import load_search_data
    from objectives.training import resolve_device, resolve_precision
    from search.worker import WorkerSettings, default_threads, run_worker, spawn_workers, wait_for_workers

    device = resolve_device(args.device)
    data_dir = args.data_dir or default_data_dir()
    data = load_search_data(args.dataset, data_dir, args.val_fraction, args.seed, device)
    study = open_study(storage, study_name, space, args.dataset, make_sampler(args.seed),
                       make_pruner(args.pruner, args.epochs, space.pruner_warmup(args.epochs)))
    record_search_settings(study, args, data.split_hash)
    record_budget(study, budget)
    added = 0 if args.no_replay else enqueue_documented(study, space, lock=storage_lock(args.storage))
    resumed = resume_interrupted(study)
    threads = args.threads or default_threads(args.jobs)
    console.print(
        f"study {study_name!r} on {args.storage}: {finished_count(study)} of {args.trials} trials "
        f"finished, {added} documented experiments enqueued, {resumed} interrupted trials resumed; "
        f"{len(data.train)} train / {len(data.val)} validation images of {args.dataset} on {device} "
        f"in {resolve_precision(args.precision, device)}; "
        f"{args.jobs} worker(s) x {threads} thread(s); {budget.describe()}", highlight=False,
    )
    folder = artifact_dir(args.storage, args.artifact_dir)
    extra = spawn_workers(args.jobs - 1, study_name, args.storage, args.trials, threads, data_dir,
                          args.device, folder, args.heartbeat_interval, args.grace_period, deadline,
                          args.retry_for)
    try:
        settings = WorkerSettings(args.trials, args.epochs, args.seed, folder, threads, deadline, budget,
                                  args.precision)
        completed = run_worker(study, space, data, settings, console)
    finally:
        problems = wait_for_workers(extra)
    console.print(leaderboard_table(study))
    for problem in problems:
        console.print(f"a worker failed: {problem}", highlight=False)
    if not completed:
        raise SearchStoppedError(f"stopped after {MAX_CONSECUTIVE_FAILURES} failed trials in a row: "
                                 "see their fail_reason in `kmnist-search status` or the dashboard")
    if finished_count(study) < args.trials:
        console.print(f"time limit of {args.timeout:g} minutes reached with {finished_count(study)} of "
                      f"{args.trials} trials finished: run the same command to go on", highlight=False)
    console.print(
        "next:\n"
        f"  kmnist-search dashboard --storage {args.storage}\n"
        f"  kmnist-search export --study {study_name} --storage {args.storage} -o best.json\n"
        f"  kmnist-search status --study {study_name} --storage {args.storage}",
        highlight=False,
    )
    return 1 if problems else 0


def cmd_worker(args: argparse.Namespace, console: Console) -> int:
    storage = open_worker_storage(args)
    study = find_study(storage, args.study)
    if study is None or "search_settings" not in study.user_attrs:
        raise StudyMismatchError(f"no study {args.study!r} started by kmnist-search in {args.storage}: "
                                 "create it with `kmnist-search start --space NAME --study "
                                 f"{args.study} --storage {args.storage}`")
    settings = study.user_attrs["search_settings"]
    space, dataset = get_space(study.user_attrs["space"]), study.user_attrs["dataset"]
    target = args.trials or settings["target"]
    budget = settled_budget(study, asked_budget(args))
    precision = study_precision(study, args.precision)

    from objectives.data import load_search_data
    from objectives.training import resolve_device
    from search.worker import WorkerSettings, default_threads, run_worker

    data = load_search_data(dataset, args.data_dir or default_data_dir(), settings["val_fraction"],
                            settings["seed"], resolve_device(args.device))
    if data.split_hash != settings["split_hash"]:
        raise StudyMismatchError(f"this worker's {dataset} files give a different validation split "
                                 "than the study's: point --data-dir at the same dataset files")
    study = optuna.load_study(study_name=args.study, storage=storage,
                              sampler=make_sampler(settings["seed"] + os.getpid()),
                              pruner=make_pruner(settings["pruner"], settings["epochs"],
                                                 space.pruner_warmup(settings["epochs"])))
    worker = WorkerSettings(target, settings["epochs"], settings["seed"],
                            artifact_dir(args.storage, args.artifact_dir),
                            args.threads or default_threads(1), args.deadline, budget, precision)
    if not args.quiet:
        console.print(f"worker joined study {args.study!r}: {finished_count(study)} of {target} "
                      "trials finished", highlight=False)
    completed = run_worker(study, space, data, worker, console, show_progress=not args.quiet)
    if not completed:
        raise SearchStoppedError(f"stopped after {MAX_CONSECUTIVE_FAILURES} failed trials in a row")
    return 0


def cmd_replay(args: argparse.Namespace, console: Console) -> int:
    from objectives.objective import Objective
    from objectives.training import resolve_device
    from search.evidence import TrialEvidence
    from search.replay import audit_rows, headline, replay_experiment, write_audit

    chosen = replay_choice(args)
    if args.learning_curve:
        return cmd_replay_curve(args, console, chosen)
    storage = open_storage(args.storage)
    evidence = TrialEvidence(open_artifact_store(artifact_dir(args.storage, args.artifact_dir)))
    device = resolve_device(args.device)
    data_dir = args.data_dir or default_data_dir()
    load = replay_data(args, data_dir, device)
    claims, summary = [], []
    for space, experiment in chosen:
        dataset = args.dataset or experiment.dataset
        loaded = load(dataset)
        if isinstance(loaded, str):
            rows = audit_rows(space, experiment, dataset, None, 0, not_run=loaded,
                              accuracy_tolerance=args.tolerance)
        else:
            data, test = loaded
            epochs = min(experiment.epochs, args.max_epochs or experiment.epochs)
            console.print(f"replaying {experiment.key} on {dataset} for {epochs} of "
                          f"{experiment.epochs} epochs", highlight=False)
            objective = Objective(space, data, epochs, args.seed, test=test, on_trial_end=evidence)
            trial = replay_experiment(storage, space, experiment, dataset, objective, args.seed)
            rows = audit_rows(space, experiment, dataset, trial, len(data.train) + len(data.val),
                              accuracy_tolerance=args.tolerance)
        claims += rows
        summary.append(headline(rows))
    table = Table(title="documented vs reproduced")
    for column in TABLE_COLUMNS:
        table.add_column(column, overflow="fold")
    for row in summary:
        table.add_row(*table_cells(row))
    console.print(table)
    cap = f"epochs capped at {args.max_epochs}" if args.max_epochs else "documented epochs"
    header = (f"Data: {data_dir}; {cap}; validation fraction {args.val_fraction:.3g}; seed {args.seed}; "
              f"accuracy tolerance {args.tolerance:g}.")
    for path in write_audit(args.out, summary, claims, header):
        console.print(f"wrote {path}", highlight=False)
    return 0


def replay_choice(args: argparse.Namespace) -> list:
    """The (space, experiment) pairs `replay` runs: --space or --all, narrowed by --report."""
    from search.replay import select_experiments

    chosen = select_experiments(ALL_SPACES if args.all else (get_space(args.space),))
    if args.report is None:
        return chosen
    picked = [(space, e) for space, e in chosen if e.key.startswith(f"{args.report}/")]
    if not picked:
        reports = sorted({e.key.split("/")[0] for _, e in chosen})
        raise UnknownSpaceError(f"no documented experiment of report {args.report} in the chosen spaces: "
                                f"use --report {' / '.join(reports)} or another --space")
    return picked


def replay_data(args: argparse.Namespace, data_dir: Path, device) -> Callable[[str], tuple | str]:
    """dataset -> (search data, test split), or why it could not be loaded; each loaded once."""
    from objectives.data import load_search_data, load_test_split

    loaded: dict[str, tuple | str] = {}

    def load(dataset: str) -> tuple | str:
        if dataset not in loaded:
            try:
                data = load_search_data(dataset, data_dir, args.val_fraction, args.seed, device)
                loaded[dataset] = (data, load_test_split(dataset, data_dir, data.mean, data.std, device))
            except DataUnavailableError as error:
                loaded[dataset] = f"not run: {error}"
        return loaded[dataset]

    return load


def cmd_replay_curve(args: argparse.Namespace, console: Console, chosen: list) -> int:
    from objectives.training import resolve_device
    from search.curve_audit import CurveSettings, audit_by_curves, table_cells, write_curve_audit

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    storage = open_storage(args.storage)
    device = resolve_device(args.device)
    data_dir = args.data_dir or default_data_dir()
    load = replay_data(args, data_dir, device)
    settings = CurveSettings(args.sizes, args.curve_seeds, args.max_epochs, args.seed, args.level,
                             args.bootstrap)
    rows, runs, validations = audit_by_curves(
        storage, chosen, load, args.dataset, settings, args.validate_up_to, args.tolerance,
        report=lambda line: console.print(line, highlight=False))
    for validation in validations:
        console.print(validation.describe(), highlight=False)
    cap = f"documented epochs capped at {args.max_epochs}" if args.max_epochs else "documented epochs"
    sizes = ", ".join(str(n or "all") for n in args.sizes)
    header = (f"Data: `{data_dir}`; {cap} (documented early stopping applies); validation fraction "
              f"{args.val_fraction:.3g} held out once; sizes {sizes}; "
              f"{args.curve_seeds} seeds from {args.seed}; {100 * args.level:.0f}% prediction intervals from "
              f"{args.bootstrap} bootstrap refits; accuracy tolerance {args.tolerance:g}.")
    paths = write_curve_audit(args.out, rows, runs, validations, header)
    table = Table(title="claims against learning curves")
    for column in ("report", "experiment", "claim", "extrapolated", "verdict"):
        table.add_column(column, overflow="fold")
    for row in rows:
        cells = table_cells(row)
        table.add_row(cells[0], cells[1], cells[3], cells[5], cells[6])
    console.print(table)
    for path in paths:
        console.print(f"wrote {path}", highlight=False)
    return 0


def cmd_spaces(console: Console) -> int:
    for space in ALL_SPACES:
        console.print(f"[bold]{space.name}[/bold] ({space.family}): {space.description}")
        console.print(f"  default budget: {space.epochs} epochs per trial, median pruner after "
                      f"{space.pruner_warmup_epochs} epochs", highlight=False)
        for p in space.params:
            console.print(f"  {p.name:<16} {p.describe()}", highlight=False)
        for e in space.experiments:
            claims = ", ".join(f"{c.metric} {c.value:g}" for c in e.claims)
            widths = e.config.get("hidden_layers")
            arch = f" {format_widths(widths)}" if widths else ""
            console.print(f"  replays {e.key}{arch}: {claims}", highlight=False)
    return 0


def cmd_proxy(args: argparse.Namespace, console: Console) -> int:
    from search.proxy import serve_proxy

    if proxy_address(args.storage) is not None:
        raise StorageError("a proxy serves a database: give --storage postgresql://USER:PASSWORD@HOST/DB")
    rdb = open_storage(args.storage, must_exist=True)
    if not is_loopback(args.host):
        print(f"kmnist-search proxy: warning: --host {args.host} serves beyond this machine, and the "
              "gRPC storage proxy has no login or encryption: anyone who reaches the port can read, "
              "change and delete every study; keep it on a private network", file=sys.stderr)
    console.print(f"serving {args.storage} on grpc://{args.host}:{args.port} (workers: --storage "
                  f"grpc://HOST:{args.port}); dead workers' trials retried within their grace period "
                  f"+ {2 * args.check_every:g} s; Ctrl-C stops it", highlight=False)
    try:
        serve_proxy(rdb, args.host, args.port, args.grace_period, args.check_every)
    except RuntimeError as error:  # grpc cannot bind the port
        raise StorageError(f"cannot listen on {args.host}:{args.port} ({error}): choose another --port "
                           "or stop what uses it") from None
    return 0


def cmd_status(args: argparse.Namespace, console: Console) -> int:
    storage = open_storage(args.storage, must_exist=True)
    names = [args.study] if args.study else optuna.study.get_all_study_names(storage)
    if not names:
        console.print(f"no studies in {args.storage}: run `kmnist-search start --space NAME` first")
        return 0
    for name in names:
        study = find_study(storage, name)
        if study is None:
            raise StudyMismatchError(f"no study {name!r} in {args.storage}: run `kmnist-search status` "
                                     "to list the studies there")
        console.print(leaderboard_table(study))
        queued = queued_documented(study)
        if queued:
            console.print(f"{queued} documented experiment{'s' if queued > 1 else ''} still queued "
                          "(run start with a higher --trials to replay them)", highlight=False)
    return 0


def cmd_dashboard(args: argparse.Namespace, console: Console) -> int:
    from search.dashboard import serve_dashboard

    storage = open_storage(args.storage, must_exist=True)
    folder = artifact_dir(args.storage, args.artifact_dir)
    if not is_loopback(args.host):
        print(f"kmnist-search dashboard: warning: --host {args.host} serves beyond this machine, and "
              "optuna-dashboard has no login: anyone who reaches the port can edit notes and delete "
              "studies", file=sys.stderr)
    console.print(f"optuna-dashboard on http://{args.host}:{args.port}/ for {args.storage} "
                  f"(artifacts: {folder}); Ctrl-C stops it", highlight=False)
    serve_dashboard(storage, args.host, args.port, open_artifact_store(folder))
    return 0


def check_output_path(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise ConfigError(f"{path} exists: pass --force to overwrite it or choose another -o path")
    if not path.parent.is_dir():
        raise ConfigError(f"folder {path.parent} does not exist: create it or choose another -o path")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def cmd_export(args: argparse.Namespace, console: Console) -> int:
    from storage.configs import write_config

    fmt = args.format or ("yaml" if args.output and args.output.suffix in (".yaml", ".yml") else "json")
    output = args.output or Path(f"best.{fmt}")
    storage = open_storage(args.storage, must_exist=True)
    study = find_study(storage, args.study)
    if study is None:
        raise ExportError(f"no study {args.study!r} in {args.storage}: see `kmnist-search status "
                          f"--storage {args.storage}`")
    if args.within_points is None:
        trials = choose_trials(study, args.trial, args.top)
    elif args.trial is not None or args.top != 1:
        raise ExportError("--within-points picks the trial itself: leave out --trial and --top")
    else:
        from search.front import costed_trials, smallest_within

        cost = COSTS[args.cost]
        trials = [smallest_within(costed_trials(study, cost), cost, args.within_points)]
    paths = [output] if len(trials) == 1 else [
        output.with_name(f"{output.stem}-{rank}{output.suffix}") for rank in range(1, len(trials) + 1)
    ]
    for path in paths:  # check every target before writing any
        check_output_path(path, args.force)
    for trial, path in zip(trials, paths, strict=True):
        write_config(export_config(study, trial, args.storage), path, fmt, force=args.force)
        console.print(f"wrote {path}: trial {trial.number}, validation accuracy {trial.value:.4f}",
                      highlight=False)
    console.print(f"next: kmnist-search retrain {paths[0]} --seeds 3", highlight=False)
    return 0


def cmd_front(args: argparse.Namespace, console: Console) -> int:
    import shutil
    import tempfile

    from search.budget import stored_budget
    from search.front import costed_trials, pareto_front, plot_front, smallest_within
    from search.progress import format_params
    from search.study import trial_source

    if args.output is not None:
        check_output_path(args.output, args.force)
    storage = open_storage(args.storage, must_exist=True)
    study = find_study(storage, args.study)
    if study is None:
        raise FrontError(f"no study {args.study!r} in {args.storage}: see `kmnist-search status "
                         f"--storage {args.storage}`")
    cost = COSTS[args.cost]
    trials = costed_trials(study, cost)
    front = pareto_front(trials, cost)
    pick = None if args.within_points is None else smallest_within(trials, cost, args.within_points)
    table = Table(title=f"study {study.study_name}: {len(front)} of {len(trials)} completed trials on the "
                        f"front of validation accuracy against {cost.unit}")
    for column in ("trial", "val accuracy", "parameters", "MFLOPs", "ms/image", "ms/256 images", "source",
                   "params"):
        table.add_column(column, overflow="fold")
    for t in front:
        attrs = t.user_attrs
        table.add_row(str(t.number), f"{t.value:.4f}", f"{attrs['param_count']:,}",
                      f"{attrs['forward_mflops']:.3g}", str(attrs.get("latency_ms", "-")),
                      str(attrs.get("latency_ms_batch256", "-")), trial_source(t), format_params(t.params))
    console.print(table)
    title = f"{study.study_name}: validation accuracy against {cost.unit}"
    with tempfile.TemporaryDirectory() as folder:
        path = plot_front(trials, front, cost, stored_budget(study), title,
                          Path(folder) / f"front-{cost.name}-{len(trials)}-trials.png", pick)
        attach(open_artifact_store(artifact_dir(args.storage, args.artifact_dir)), path, study)
        if args.output is not None:
            shutil.copyfile(path, args.output)
    console.print(f"attached {path.name} to study {study.study_name!r} (the dashboard lists it under the "
                  f"study's artifacts){f'; wrote {args.output}' if args.output else ''}", highlight=False)
    if pick is not None:
        best = max(t.value for t in trials)
        console.print(f"cheapest within {args.within_points:g} points of the best ({best:.4f}): trial "
                      f"{pick.number}, validation accuracy {pick.value:.4f}, "
                      f"{format_cost(pick.user_attrs[cost.attr])} {cost.unit}; export it with "
                      f"`kmnist-search export --study {study.study_name} --storage {args.storage} "
                      f"--trial {pick.number}`", highlight=False)
    return 0


def cmd_retrain(args: argparse.Namespace, console: Console) -> int:
    from storage.configs import read_config

    config = read_config(args.config)
    _, params = checked_params(config)
    provenance = config.get("provenance", {})
    out = args.out or Path("runs") / f"{provenance.get('study', config['space'])}-trial" \
        f"{provenance.get('trial', 'x')}"
    if (out / "metrics.json").exists() and not args.force:
        raise ConfigError(f"{out} already holds a retrained run: pass --force or choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot create {out} ({error.strerror}): choose a writable --out") from None

    from objectives.training import resolve_device
    from search.retrain import remove_legacy_models, train_and_test, write_run

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    data_dir = args.data_dir or default_data_dir()
    seeds = [config["seed"] + i for i in range(args.seeds)]
    console.print(f"retraining {config['space']} on {config['dataset']} for {config['epochs']} epochs, "
                  f"seeds {seeds}", highlight=False)
    remove_legacy_models(out)
    results = train_and_test(config, params, data_dir, seeds, resolve_device(args.device), out)
    metrics = write_run(out, config, results, data_dir)
    acc = metrics["test_accuracy"]
    console.print(f"test accuracy {100 * acc['mean']:.2f}% ± {100 * acc['std']:.2f} over {len(seeds)} "
                  f"seeds; wrote {out}/model.safetensors, metrics.json, report.md, confusion_matrix.png, "
                  "learning_curve.png", highlight=False)
    link_retrain_to_study(config, out, metrics, console)
    return 0


def link_retrain_to_study(config: dict, out: Path, metrics: dict, console: Console) -> None:
    """Note on the exported trial (and artifacts on its study) so the dashboard shows where it went."""
    from search.evidence import append_note

    provenance = config.get("provenance", {})
    if not {"storage", "study", "trial"} <= set(provenance):
        return
    try:
        storage = open_storage(provenance["storage"], must_exist=True)
        study = find_study(storage, provenance["study"])
    except StorageError as error:
        console.print(f"warning: could not link the run to its study ({error})", highlight=False)
        return
    if study is None:
        console.print(f"warning: study {provenance['study']!r} is gone; the run is not linked")
        return
    trial = next(t for t in study.get_trials(deepcopy=False) if t.number == provenance["trial"])
    acc = metrics["test_accuracy"]
    summary = {"run": str(out.resolve()), "test_accuracy_mean": acc["mean"], "test_accuracy_std": acc["std"],
               "seeds": metrics["seeds"]}
    study.set_user_attr(f"retrained_trial_{trial.number}", summary)
    store = open_artifact_store(artifact_dir(provenance["storage"]))
    for name in ("report.md", "metrics.json", "confusion_matrix.png", "learning_curve.png"):
        attach(store, out / name, study)
    append_note(study, trial, f"## Retrained\n\n{out.resolve()}: test accuracy "
                              f"{100 * acc['mean']:.2f}% ± {100 * acc['std']:.2f} over "
                              f"{len(metrics['seeds'])} seeds (files attached to the study).")


def cmd_evaluate(args: argparse.Namespace, console: Console) -> int:
    import json

    from objectives.data import load_raw, to_device
    from objectives.training import evaluate, resolve_device
    from search.retrain import load_saved_model, model_file, test_metrics

    metrics_path = args.run / "metrics.json"
    model_path = model_file(args.run)
    if not model_path.exists() or not metrics_path.exists():
        raise ConfigError(f"{args.run} holds no {model_path.name} and metrics.json: give a folder "
                          "written by `kmnist-search retrain`")
    try:
        recorded = json.loads(metrics_path.read_text())
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read {metrics_path} ({error}): retrain to write a new run") from None
    device = resolve_device(args.device)
    model, saved = load_saved_model(model_path, device)
    try:
        data_dir = args.data_dir or Path(recorded["data_dir"])
        expected = recorded["test_accuracy"]["per_seed"][str(saved.seed)]
    except (KeyError, TypeError):
        raise ConfigError(f"{metrics_path} lacks the data folder or seed {saved.seed}'s test accuracy: "
                          "retrain to write a new run") from None
    images, labels = load_raw(saved.config["dataset"], data_dir, train=False)
    evaluation = evaluate(model, to_device(images, labels, saved.mean, saved.std, device))
    details = test_metrics(labels.numpy(), evaluation.predictions.numpy(), saved.num_classes,
                           saved.config["dataset"])
    console.print(f"test accuracy {100 * evaluation.accuracy:.2f}%, loss {evaluation.loss:.4f} "
                  f"({len(labels):,} images); retrain recorded {100 * expected:.2f}% for seed "
                  f"{saved.seed}: {'matches' if evaluation.accuracy == expected else 'DIFFERS'}",
                  highlight=False)
    table = Table(title="per class")
    for column in ("label", "class", "precision", "recall", "f1-score", "support"):
        table.add_column(column)
    for (label, row), name in zip(details["per_class"].items(), details["class_names"], strict=True):
        table.add_row(label, name, *(f"{row[k]:.4f}" for k in ("precision", "recall", "f1-score")),
                      str(row["support"]))
    console.print(table)
    return 0


def cmd_build_root(args: argparse.Namespace, console: Console) -> int:
    from objectives.data import build_root_from_test_images

    folder = build_root_from_test_images(args.source, args.out, args.test_fraction, args.seed,
                                         args.dataset)
    console.print(f"wrote {folder}: use --data-dir {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console()
    if not console.is_terminal:  # logs and pipes: wide lines instead of folded tables
        console = Console(width=200)
    # our progress lines report failed trials (with their reason) without Optuna's tracebacks
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    commands = {
        "start": cmd_start, "worker": cmd_worker, "replay": cmd_replay, "export": cmd_export,
        "retrain": cmd_retrain, "evaluate": cmd_evaluate, "dashboard": cmd_dashboard,
        "status": cmd_status, "build-root": cmd_build_root, "front": cmd_front, "proxy": cmd_proxy,
        "spaces": lambda _, console: cmd_spaces(console),
    }
    try:
        if getattr(args, "device", "auto").startswith("cuda"):  # before anything is created
            from objectives.training import resolve_device

            resolve_device(args.device)
        return commands[args.command](args, console)
    except USER_ERRORS as error:
        print(f"kmnist-search {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.command in ("dashboard", "proxy"):
            return 0
        resume = "; run the same command again to resume" if args.command in ("start", "worker") else ""
        print(f"kmnist-search {args.command}: interrupted{resume}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
