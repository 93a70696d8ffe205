"""`kmnist-search`: the command line, one function per command.

The options' vocabulary (types, units, shared options) lives in `search.cli_options`.
Every option is checked before any work starts; users see one line naming the problem
and the fix, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import optuna
from rich.console import Console
from rich.table import Table
from rich.text import Text

from objectives.budget import Budget, BudgetMismatchError, UnmeetableBudgetError, format_cost
from objectives.datasets import SOURCES, DataUnavailableError, default_data_dir
from objectives.errors import DeviceUnavailableError, TensorFileError
from search.cli_options import (
    DeprecatedSpelling,
    OneLineParser,
    TimeoutAction,
    add_artifact_dir_option,
    add_budget_options,
    add_data_dir_option,
    add_data_options,
    add_dataset_option,
    add_device_option,
    add_grace_period_option,
    add_listen_options,
    add_output_option,
    add_pick_options,
    add_precision_option,
    add_pruner_option,
    add_seed_option,
    add_storage_option,
    add_study_option,
    add_threads_option,
    add_worker_options,
    duration,
    fraction,
    points_as_fraction,
    positive_int,
    seconds_text,
    whole_number,
)
from search.dashboard import is_loopback
from search.export import ExportError, export_config
from search.front import COSTS, FrontError
from search.launch import Connection, SearchStoppedError
from search.progress import leaderboard_table
from search.replay import TABLE_COLUMNS, ReplayRequest, replay_documented, table_cells
from search.study import (
    HEARTBEAT_INTERVAL_S,
    StudyMismatchError,
    describe_pick,
    queued_documented,
    require_study,
    stored_pick,
)
from spaces import ALL_SPACES, get_space
from spaces.base import UnknownSpaceError, format_widths
from storage.artifacts import artifact_dir, open_artifact_store
from storage.configs import FORMATS, ConfigError
from storage.urls import (
    DEFAULT_STORAGE,
    STORAGE_ENV,
    StorageError,
    open_storage,
    proxy_address,
    redact_text,
    redact_url,
)

DEBUG_ENV = "KMNIST_SEARCH_DEBUG"


USER_ERRORS = (UnknownSpaceError, DataUnavailableError, StorageError, StudyMismatchError, ExportError,
               ConfigError, SearchStoppedError, TensorFileError, DeviceUnavailableError,
               BudgetMismatchError, UnmeetableBudgetError, FrontError)


PROXY_PORT = 13000  # Optuna's default for its gRPC storage proxy
DEFAULT_CURVE_SIZES = "500,750,1000,1500,2000,3000,4000,all"
DESCRIPTION = ("Hyperparameter search with Optuna for PyTorch image classifiers on KMNIST: search a space "
               "with one or many workers, replay and audit the documented experiments, then export, "
               "retrain and evaluate the best models.")
EPILOG = ("Run `kmnist-search COMMAND --help` for a command's options. Durations take a unit: 90s, 30m, "
          "2h.")


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


def asked_budget(args: argparse.Namespace) -> Budget | None:
    """The budget the options give, or None when none was given."""
    budget = Budget(args.max_params, args.max_mflops, args.max_latency_ms)
    return budget if budget.limits() else None


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="kmnist-search", description=DESCRIPTION, epilog=EPILOG)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser,
                                     title="commands", metavar="COMMAND")

    def command(name: str, summary: str, description: str | None = None) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=summary, description=description or f"{summary[0].upper()}"
                                   f"{summary[1:]}.")

    start = command("start", "create or resume a study and search it",
                    "Create or resume a study and search it until it holds --trials finished trials; "
                    "the space's documented experiments run first.")
    start.add_argument("--space", required=True, metavar="NAME", help="the search space (see `kmnist-search "
                       "spaces`)")
    add_study_option(start, default="the space name")
    start.add_argument("--trials", type=positive_int, default=100, metavar="N",
                       help="TOTAL finished trials the study should hold")
    add_storage_option(start)
    start.add_argument("--epochs", type=positive_int, default=None, metavar="N",
                       help="epoch budget per trial; longer documented runs are capped (default: the "
                       "space's, see `kmnist-search spaces`)")
    start.add_argument("--timeout", action=TimeoutAction, default=None, metavar="DURATION",
                       help="start no trial after this long, e.g. 45m or 2h (running ones finish, the same "
                       "command later goes on); a bare number still means minutes, deprecated "
                       "(default: no limit)")
    add_pruner_option(start)
    add_artifact_dir_option(start)
    start.add_argument("--jobs", type=positive_int, default=1, metavar="N",
                       help="worker processes on this machine")
    add_worker_options(start)
    start.add_argument("--no-replay", action="store_true",
                       help="do not enqueue the space's documented experiments")
    start.add_argument("--no-recipes", action="store_true",
                       help="do not enqueue the space's recipes (strong starting points that no report "
                       "documents; `kmnist-search spaces` lists them)")
    add_budget_options(start)
    add_precision_option(start, "auto for a new study, a resumed study's own")
    add_data_options(start, "the validation split, the sampler and the training runs")

    worker = command("worker", "join a running study as one more worker",
                     "Join an existing study as one more worker, on any machine that reaches its storage; "
                     "the data split, epochs and pruner come from the study.")
    add_study_option(worker)
    add_storage_option(worker)
    worker.add_argument("--trials", type=positive_int, default=None, metavar="N",
                        help="total finished trials to reach (default: the target `start` set)")
    add_data_dir_option(worker)
    add_device_option(worker)
    add_artifact_dir_option(worker)
    worker.add_argument("--quiet", action="store_true", help="no progress display")
    worker.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    add_precision_option(worker, "the study's, the only choice")
    add_worker_options(worker)
    add_budget_options(worker)

    replay = command("replay", "rerun the documented experiments and audit their claims",
                     "Rerun the experiments the reports document and audit each claim against the rerun.")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("--space", metavar="NAME", help="replay this space's documented experiments")
    which.add_argument("--all", action="store_true", help="replay every documented experiment")
    replay.add_argument("--max-epochs", type=positive_int, default=None, metavar="N",
                        help="cap each experiment's documented epochs, the cap is shown (default: no cap)")
    add_storage_option(replay)
    add_output_option(replay, "out", "folder for replay.csv, replay.md and claims.csv (with "
                      "--learning-curve: audit.md, audit.csv and curve-runs.csv)", default="replay",
                      metavar="DIR")
    add_artifact_dir_option(replay)
    tolerance = replay.add_mutually_exclusive_group()
    tolerance.add_argument("--tolerance-points", dest="tolerance", type=points_as_fraction, default="1",
                           metavar="X", help="accuracy difference, in percentage points, still counted as "
                           "reproduced")
    tolerance.add_argument("--tolerance", type=fraction, action=DeprecatedSpelling,
                           instead=lambda value: f"--tolerance-points {100 * value:g}")
    add_data_options(replay, "the validation split and the training runs",
                     dataset_default="each experiment's documented one")
    replay.add_argument("--report", type=_report_number, default=None, metavar="NNN",
                        help="only the experiments of this report, 000-004 (default: every report)")
    curve = replay.add_argument_group(
        "learning curve", "with --learning-curve, each experiment trains at several training-set sizes and "
        "its claimed test accuracy is judged against the curve extrapolated to the report's size")
    curve.add_argument("--learning-curve", action="store_true",
                       help="audit by learning curves: writes audit.md, audit.csv and curve-runs.csv")
    curve.add_argument("--sizes", type=_sizes, default=DEFAULT_CURVE_SIZES, metavar="N,N,...",
                       help="training-set sizes, comma-separated; 'all' is the whole training split")
    curve.add_argument("--curve-seeds", type=whole_number(2), default=4, metavar="N",
                       help="runs per size, each with its own nested subsets")
    curve.add_argument("--level", type=fraction, default=0.9, metavar="P",
                       help="nominal coverage of the prediction intervals")
    curve.add_argument("--validate-up-to", type=_sizes, default="2000,4000", metavar="N,N,...",
                       help="check the method: fit on sizes up to each of these, predict the largest")
    curve.add_argument("--bootstrap", type=whole_number(20), default=500, metavar="N",
                       help="bootstrap refits per interval")
    add_threads_option(curve)

    export = command("export", "write the best trial(s) as a config file",
                     "Write the best trial(s) of a study as self-contained config files for `retrain`.")
    add_study_option(export)
    add_storage_option(export)
    add_output_option(export, "output", "file to write", default_words="best.json, or best.yaml with -f yaml",
                      metavar="FILE")
    export.add_argument("-f", "--format", choices=FORMATS, default=None,
                        help="json or yaml (default: from the -o suffix, else json)")
    export.add_argument("--trial", type=int, default=None, metavar="N",
                        help="export this trial number (default: the best)")
    export.add_argument("--top", type=positive_int, default=1, metavar="K",
                        help="export the K best trials as NAME-1, NAME-2, ...")
    export.add_argument("--force", action="store_true", help="overwrite existing files")
    add_pick_options(export)

    reeval = command("reevaluate", "cross-validate the top trials and pick by the mean",
                     "Re-evaluate the best completed trials by stratified cross-validation on the whole "
                     "training set and record the one with the best mean; `export` then exports it.")
    add_study_option(reeval)
    add_storage_option(reeval)
    reeval.add_argument("--top", type=whole_number(1, 100), default=5, metavar="K",
                        help="how many of the best completed trials to re-evaluate")
    reeval.add_argument("--folds", type=whole_number(2, 20), default=3, metavar="F",
                        help="stratified folds of the whole training set, one training run each")
    add_data_dir_option(reeval)
    add_device_option(reeval)
    add_threads_option(reeval)

    front = command("front", "show the trials on the accuracy-against-cost front",
                    "The completed trials no other beats on both validation accuracy and a cost, as a "
                    "table and a figure attached to the study.")
    add_study_option(front)
    add_storage_option(front)
    add_artifact_dir_option(front)
    add_pick_options(front)
    add_output_option(front, "output", "also write the figure to this PNG",
                      default_words="only attached to the study", metavar="FILE")
    front.add_argument("--force", action="store_true", help="overwrite an existing -o file")

    retrain = command("retrain", "train an exported config on train+validation, then test it",
                      "Train an exported config on train+validation and test it on the test set; the run is "
                      "linked to its trial when --storage holds the study it was exported from.")
    retrain.add_argument("config", type=Path, help="a file written by `kmnist-search export`")
    retrain.add_argument("--seeds", type=positive_int, default=3, metavar="N",
                         help="train this many times, from the config's seed upwards, and report mean ± std")
    add_output_option(retrain, "out", "run folder", default_words="runs/<study>-trial<N>", metavar="DIR")
    add_data_dir_option(retrain)
    add_device_option(retrain)
    retrain.add_argument("--force", action="store_true", help="overwrite an existing run folder")
    add_threads_option(retrain)
    add_storage_option(retrain)
    add_artifact_dir_option(retrain)

    evaluate = command("evaluate", "reload a retrained model and recompute its test metrics")
    evaluate.add_argument("run", type=Path, help="a folder written by `kmnist-search retrain`")
    add_data_dir_option(evaluate)
    add_device_option(evaluate)

    command("spaces", "list the search spaces and their documented experiments")

    dashboard = command("dashboard", "serve optuna-dashboard on a study storage")
    add_storage_option(dashboard)
    add_listen_options(dashboard, 8080, "optuna-dashboard")
    add_artifact_dir_option(dashboard)

    proxy = command("proxy", "serve a database to many workers over gRPC",
                    "Serve a database to many workers over gRPC; workers give --storage grpc://HOST:PORT.")
    proxy.add_argument("--storage", required=True, metavar="URL",
                       help="the database: postgresql://USER@HOST/DB (password from PGPASSWORD or ~/.pgpass)")
    add_listen_options(proxy, PROXY_PORT, "the gRPC storage proxy")
    add_grace_period_option(proxy, "; a worker's own --grace-period, sent with its heartbeats, wins")
    proxy.add_argument("--check-every", type=duration, default=seconds_text(HEARTBEAT_INTERVAL_S),
                       metavar="DURATION", help="how often to look for trials of dead workers")

    status = command("status", "print the leaderboard of one study or of every study")
    add_study_option(status, default="every study in the storage")
    add_storage_option(status)

    root = command("build-root", "make a dataset root from test images alone",
                   "Make a dataset root from the official test images alone, for when the training files "
                   "cannot be had.")
    root.add_argument("--source", type=Path, required=True, metavar="DIR",
                      help="folder with t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz")
    add_output_option(root, "out", "dataset root to write", required=True, metavar="DIR")
    root.add_argument("--test-fraction", type=fraction, default=0.2, metavar="F",
                      help="share of the images kept for testing; the rest become training images")
    add_dataset_option(root, choices=SOURCES)
    add_seed_option(root, "the split into training and test images")
    return parser


def printer(console: Console) -> Callable[[str], None]:
    """A line printer for the library's progress messages (never read as markup or highlighted)."""
    return lambda line: console.print(line, highlight=False)


def connection(args: argparse.Namespace) -> Connection:
    return Connection(args.storage, args.heartbeat_interval, args.grace_period, args.retry_for)


def warn_for(args: argparse.Namespace) -> Callable[[str], None]:
    def warn(line: str) -> None:
        print(f"kmnist-search {args.command}: {line}", file=sys.stderr, flush=True)

    return warn


def cmd_start(args: argparse.Namespace, console: Console) -> int:
    from search.launch import StartRequest, start_search

    request = StartRequest(
        space=args.space, connection=connection(args), study=args.study, trials=args.trials,
        epochs=args.epochs, timeout_s=args.timeout, pruner=args.pruner, artifact_dir=args.artifact_dir,
        jobs=args.jobs, threads=args.threads, replay=not args.no_replay, recipes=not args.no_recipes,
        budget=asked_budget(args), precision=args.precision, dataset=args.dataset, data_dir=args.data_dir,
        val_fraction=args.val_fraction, seed=args.seed, device=args.device)
    outcome = start_search(request, console, say=printer(console),
                           warn=warn_for(args))
    name = outcome.study.study_name
    if outcome.nothing_to_do:
        console.print(f"study {name!r} already holds {outcome.finished} finished trials (target "
                      f"{args.trials}): nothing to do", highlight=False)
        console.print(leaderboard_table(outcome.study))
        return 0
    console.print(leaderboard_table(outcome.study))
    for problem in outcome.worker_problems:
        console.print(f"a worker failed: {problem}", highlight=False)
    if outcome.timed_out:
        console.print(f"time limit of {args.timeout / 60:g} minutes reached with {outcome.finished} of "
                      f"{args.trials} trials finished: run the same command to go on", highlight=False)
    console.print(
        "next:\n"
        f"  kmnist-search dashboard --storage {args.storage_shown}\n"
        f"  kmnist-search export --study {name} --storage {args.storage_shown} -o best.json\n"
        f"  kmnist-search status --study {name} --storage {args.storage_shown}",
        highlight=False,
    )
    return 1 if outcome.worker_problems else 0


def cmd_worker(args: argparse.Namespace, console: Console) -> int:
    from search.launch import JoinRequest, join_search

    request = JoinRequest(
        study=args.study, connection=connection(args), trials=args.trials, data_dir=args.data_dir,
        device=args.device, artifact_dir=args.artifact_dir, threads=args.threads, deadline=args.deadline,
        budget=asked_budget(args), precision=args.precision, show_progress=not args.quiet)
    join_search(request, console, say=printer(console), warn=warn_for(args))
    return 0


def replay_request(args: argparse.Namespace) -> ReplayRequest:
    return ReplayRequest(spaces=ALL_SPACES if args.all else (get_space(args.space),), report=args.report,
                         dataset=args.dataset, data_dir=args.data_dir or default_data_dir(),
                         storage=args.storage, out=args.out, val_fraction=args.val_fraction, seed=args.seed,
                         device=args.device, max_epochs=args.max_epochs, accuracy_tolerance=args.tolerance,
                         artifact_dir=args.artifact_dir)


def cmd_replay(args: argparse.Namespace, console: Console) -> int:
    if args.learning_curve:
        return cmd_replay_curve(args, console)
    summary, paths = replay_documented(replay_request(args), say=printer(console))
    table = Table(title="documented vs reproduced")
    for column in TABLE_COLUMNS:
        table.add_column(column, overflow="fold")
    for row in summary:
        table.add_row(*table_cells(row))
    console.print(table)
    for path in paths:
        console.print(f"wrote {path}", highlight=False)
    return 0


def cmd_replay_curve(args: argparse.Namespace, console: Console) -> int:
    from search.learning_curve.report import audit_and_write, table_cells
    from search.learning_curve.runs import CurveSettings

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    settings = CurveSettings(args.sizes, args.curve_seeds, args.max_epochs, args.seed, args.level,
                             args.bootstrap)
    rows, validations, paths = audit_and_write(replay_request(args), settings, args.validate_up_to,
                                               say=printer(console))
    for validation in validations:
        console.print(validation.describe(), highlight=False)
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
        console.print(Text(space.name, style="bold") + f" ({space.family}): {space.description}")
        console.print(f"  default budget: {space.epochs} epochs per trial, median pruner after "
                      f"{space.pruner_warmup_epochs} epochs", highlight=False)
        for p in space.params:
            console.print(f"  {p.name:<16} {p.describe()}", highlight=False)
        for e in space.experiments:
            claims = ", ".join(f"{c.metric} {c.value:g}" for c in e.claims)
            widths = e.config.get("hidden_layers")
            arch = f" {format_widths(widths)}" if widths else ""
            console.print(f"  replays {e.key}{arch}: {claims}", highlight=False)
        for r in space.recipes:
            console.print(f"  then recipe {r.name}: {r.source}", highlight=False)
    return 0


def cmd_proxy(args: argparse.Namespace, console: Console) -> int:
    from storage.proxy import serve_proxy

    if proxy_address(args.storage) is not None:
        raise StorageError("a proxy serves a database: give --storage postgresql://USER:PASSWORD@HOST/DB")
    rdb = open_storage(args.storage, must_exist=True)
    if not is_loopback(args.host):
        print(f"kmnist-search proxy: warning: --host {args.host} serves beyond this machine, and the "
              "gRPC storage proxy has no login or encryption: anyone who reaches the port can read, "
              "change and delete every study; keep it on a private network", file=sys.stderr)
    console.print(f"serving {args.storage_shown} on grpc://{args.host}:{args.port} (workers: --storage "
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
        console.print(f"no studies in {args.storage_shown}: run `kmnist-search start --space NAME` first")
        return 0
    for name in names:
        study = require_study(storage, name, args.storage_shown)
        console.print(leaderboard_table(study))
        pick = stored_pick(study)
        if pick is not None:
            console.print(describe_pick(pick), highlight=False)
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
    console.print(f"optuna-dashboard on http://{args.host}:{args.port}/ for {args.storage_shown} "
                  f"(artifacts: {folder}); Ctrl-C stops it", highlight=False)
    try:
        serve_dashboard(storage, args.host, args.port, open_artifact_store(folder))
    except OSError as error:
        raise StorageError(f"cannot serve on {args.host}:{args.port} ({error.strerror}): choose another "
                           "--port or stop what uses it") from None
    return 0


def check_output_path(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise ConfigError(f"{path} exists: pass --force to overwrite it or choose another -o path")
    if not path.parent.is_dir():
        raise ConfigError(f"folder {path.parent} does not exist: create it or choose another -o path")


def cmd_export(args: argparse.Namespace, console: Console) -> int:
    from search.export import export_paths, trials_to_export
    from storage.configs import write_config

    fmt = args.format or ("yaml" if args.output and args.output.suffix in (".yaml", ".yml") else "json")
    study = require_study(open_storage(args.storage, must_exist=True), args.study, args.storage_shown,
                          ExportError)
    trials, how = trials_to_export(study, args.trial, args.top, args.within_points, COSTS[args.cost])
    if how:
        console.print(how, highlight=False)
    paths = export_paths(args.output or Path(f"best.{fmt}"), len(trials))
    for path in paths:  # check every target before writing any
        check_output_path(path, args.force)
    for trial, path in zip(trials, paths, strict=True):
        write_config(export_config(study, trial, args.storage_shown), path, fmt, force=args.force)
        console.print(f"wrote {path}: trial {trial.number}, validation accuracy {trial.value:.4f}",
                      highlight=False)
    console.print(f"next: kmnist-search retrain {paths[0]} --seeds 3", highlight=False)
    return 0


def cmd_reevaluate(args: argparse.Namespace, console: Console) -> int:
    from search.reevaluate import reevaluate_study

    study = require_study(open_storage(args.storage, must_exist=True), args.study, args.storage_shown)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    def report(result) -> None:
        console.print(f"trial {result.trial}: {100 * result.mean:.2f}% ± {100 * result.std:.2f} over folds "
                      f"(validation split {100 * result.validation_accuracy:.2f}%, {result.seconds:.0f} s)",
                      highlight=False)

    results = reevaluate_study(study, args.data_dir or default_data_dir(), args.device, args.top, args.folds,
                               say=printer(console), report=report)
    table = Table(title=f"study {study.study_name}: top {len(results)} trials by mean over folds")
    for column in ("trial", "mean over folds", "std", "validation split", "epochs", "seconds"):
        table.add_column(column)
    for r in results:
        table.add_row(str(r.trial), f"{r.mean:.4f}", f"{r.std:.4f}", f"{r.validation_accuracy:.4f}",
                      str(r.epochs), f"{r.seconds:.0f}")
    console.print(table)
    console.print(describe_pick(stored_pick(study)), highlight=False)
    console.print(f"next: kmnist-search export --study {args.study} --storage {args.storage_shown} "
                  "-o best.json (exports the pick)", highlight=False)
    return 0


def cmd_front(args: argparse.Namespace, console: Console) -> int:
    from search.front import draw_front
    from search.study import trial_source
    from spaces.base import format_params

    if args.output is not None:
        check_output_path(args.output, args.force)
    study = require_study(open_storage(args.storage, must_exist=True), args.study, args.storage_shown,
                          FrontError)
    cost = COSTS[args.cost]
    drawn = draw_front(study, cost, open_artifact_store(artifact_dir(args.storage, args.artifact_dir)),
                       args.within_points, args.output)
    table = Table(title=f"study {study.study_name}: {len(drawn.front)} of {len(drawn.trials)} completed "
                        f"trials on the front of validation accuracy against {cost.unit}")
    for column in ("trial", "val accuracy", "parameters", "MFLOPs", "ms/image", "ms/256 images", "source",
                   "params"):
        table.add_column(column, overflow="fold")
    for t in drawn.front:
        attrs = t.user_attrs
        table.add_row(str(t.number), f"{t.value:.4f}", f"{attrs['param_count']:,}",
                      f"{attrs['forward_mflops']:.3g}", str(attrs.get("latency_ms", "-")),
                      str(attrs.get("latency_ms_batch256", "-")), trial_source(t), format_params(t.params))
    console.print(table)
    console.print(f"attached {drawn.figure_name} to study {study.study_name!r} (the dashboard lists it under "
                  f"the study's artifacts){f'; wrote {args.output}' if args.output else ''}", highlight=False)
    pick = drawn.pick
    if pick is not None:
        best = max(t.value for t in drawn.trials)
        console.print(f"cheapest within {args.within_points:g} points of the best ({best:.4f}): trial "
                      f"{pick.number}, validation accuracy {pick.value:.4f}, "
                      f"{format_cost(pick.user_attrs[cost.attr])} {cost.unit}; export it with "
                      f"`kmnist-search export --study {study.study_name} --storage {args.storage_shown} "
                      f"--trial {pick.number}`", highlight=False)
    return 0


def cmd_retrain(args: argparse.Namespace, console: Console) -> int:
    from search.run_folder import legacy_models, prepare_run

    config, params, out = prepare_run(args.config, args.out, args.seeds, args.force)
    from search.retrain import link_to_study, retrain  # torch and the data only after the checks

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    seeds = [config["seed"] + i for i in range(args.seeds)]
    console.print(f"retraining {config['space']} on {config['dataset']} for {config['epochs']} epochs, "
                  f"seeds {seeds}", highlight=False)
    metrics = retrain(config, params, out, seeds, args.data_dir or default_data_dir(), args.device)
    acc = metrics["test_accuracy"]
    console.print(f"test accuracy {100 * acc['mean']:.2f}% ± {100 * acc['std']:.2f} over {len(seeds)} "
                  f"seeds; wrote {out}/model.safetensors, metrics.json, report.md, confusion_matrix.png, "
                  "learning_curve.png", highlight=False)
    for legacy in legacy_models(out):
        console.print(f"note: {legacy} is a torch.save file an older version wrote; it is never loaded, "
                      "but delete it before sharing the folder", highlight=False)
    console.print(link_to_study(config, params, out, metrics, args.storage, args.artifact_dir),
                  highlight=False)
    return 0


def cmd_evaluate(args: argparse.Namespace, console: Console) -> int:
    from search.run_folder import checked_run

    checked_run(args.run)  # a wrong folder is refused before torch is imported
    from search.retrain import evaluate_run

    # the data come from the user (--data-dir or the default), never from the run folder
    result = evaluate_run(args.run, args.data_dir or default_data_dir(), args.device)
    console.print(f"test accuracy {100 * result.accuracy:.2f}%, loss {result.loss:.4f} "
                  f"({result.images:,} images); retrain recorded {100 * result.recorded:.2f}% for seed "
                  f"{result.seed}: {'matches' if result.matches else 'DIFFERS'}", highlight=False)
    table = Table(title="per class")
    for column in ("label", "class", "precision", "recall", "f1-score", "support"):
        table.add_column(column)
    details = result.details
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
    if getattr(args, "storage", None) == DEFAULT_STORAGE and os.environ.get(STORAGE_ENV):
        args.storage = os.environ[STORAGE_ENV]  # keeps a URL with a password out of argv and `ps`
    args.storage_shown = redact_url(args.storage) if getattr(args, "storage", None) else None
    # names and values come from storages others can write: printed as they are, never as markup
    console = Console(markup=False)
    if not console.is_terminal:  # logs and pipes: wide lines instead of folded tables
        console = Console(width=200, markup=False)
    # our progress lines report failed trials (with their reason) without Optuna's tracebacks
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    commands = {
        "start": cmd_start, "worker": cmd_worker, "replay": cmd_replay, "export": cmd_export,
        "retrain": cmd_retrain, "evaluate": cmd_evaluate, "dashboard": cmd_dashboard,
        "status": cmd_status, "build-root": cmd_build_root, "front": cmd_front, "proxy": cmd_proxy,
        "spaces": lambda _, console: cmd_spaces(console), "reevaluate": cmd_reevaluate,
    }
    try:
        if getattr(args, "device", "auto").startswith("cuda"):  # before anything is created
            from objectives.training import resolve_device

            resolve_device(args.device)
        return commands[args.command](args, console)
    except USER_ERRORS as error:
        print(f"kmnist-search {args.command}: error: {shown(str(error), args)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.command in ("dashboard", "proxy"):
            return 0
        resume = "; run the same command again to resume" if args.command in ("start", "worker") else ""
        print(f"kmnist-search {args.command}: interrupted{resume}", file=sys.stderr)
        return 130
    except Exception as error:  # a bug or an input no check foresaw: one line, not a traceback
        if os.environ.get(DEBUG_ENV):
            raise
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        print(f"kmnist-search {args.command}: unexpected error: {type(error).__name__}"
              f"{': ' + shown(first, args) if first else ''} (set {DEBUG_ENV}=1 for the traceback)",
              file=sys.stderr)
        return 1


def shown(text: str, args: argparse.Namespace) -> str:
    """`text` with the storage URL's password masked, as every message shows it."""
    return redact_text(text, args.storage) if getattr(args, "storage", None) else text


if __name__ == "__main__":
    sys.exit(main())
