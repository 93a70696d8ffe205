"""`kmnist-search`: the command line.

Every option is checked before any work starts; users see one line naming the problem
and the fix, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import optuna
from rich.console import Console
from rich.table import Table

from objectives.datasets import DATASET_NAMES, SOURCES, DataUnavailableError, default_data_dir
from search.progress import SearchProgress, leaderboard_table
from search.replay import TABLE_COLUMNS, table_cells
from search.study import (
    PRUNERS,
    StudyMismatchError,
    check_matches,
    enqueue_documented,
    find_study,
    finished_count,
    make_pruner,
    make_sampler,
    open_study,
    run_until,
)
from spaces import ALL_SPACES, get_space
from spaces.base import UnknownSpaceError, format_widths
from storage.artifacts import artifact_dir, open_artifact_store
from storage.urls import DEFAULT_STORAGE, StorageError, open_storage

USER_ERRORS = (UnknownSpaceError, DataUnavailableError, StorageError, StudyMismatchError)


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse prints usage + message; we print one line
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must lie between 0 and 1, got {value}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must lie between 1 and 65535, got {value}")
    return value


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


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="kmnist-search", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    start = commands.add_parser("start", help="create or resume a study and search")
    start.add_argument("--space", required=True, help="see `kmnist-search spaces`")
    start.add_argument("--study", help="study name (default: the space name)")
    start.add_argument("--trials", type=_positive_int, default=100,
                       help="TOTAL finished trials the study should hold (default 100)")
    start.add_argument("--storage", default=DEFAULT_STORAGE)
    start.add_argument("--epochs", type=_positive_int, default=10,
                       help="epoch budget per trial; longer documented runs are capped")
    start.add_argument("--pruner", choices=PRUNERS, default="median")
    start.add_argument("--artifact-dir", type=Path, default=None,
                       help="artifact store for plots and CSVs (default: <storage file>-artifacts)")
    start.add_argument("--no-replay", action="store_true",
                       help="do not enqueue the space's documented experiments")
    _add_data_options(start)

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

    commands.add_parser("spaces", help="list the search spaces and their documented experiments")

    dashboard = commands.add_parser("dashboard", help="serve optuna-dashboard on the study storage")
    dashboard.add_argument("--storage", default=DEFAULT_STORAGE)
    dashboard.add_argument("--host", default="127.0.0.1")
    dashboard.add_argument("--port", type=_port, default=8080)
    dashboard.add_argument("--artifact-dir", type=Path, default=None,
                           help="artifact store (default: <storage file>-artifacts, as `start` writes)")

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
    """What export needs to rebuild the data split of this study."""
    settings = {"val_fraction": args.val_fraction, "seed": args.seed, "split_hash": split_hash,
                "epochs": args.epochs}
    if study.user_attrs.get("search_settings") != settings:
        study.set_user_attr("search_settings", settings)


def cmd_start(args: argparse.Namespace, console: Console) -> int:
    space = get_space(args.space)
    study_name = args.study or space.name
    storage = open_storage(args.storage)
    existing = find_study(storage, study_name)
    if existing is not None:
        check_matches(existing, space, args.dataset)
        if finished_count(existing) >= args.trials:
            console.print(f"study {study_name!r} already holds {finished_count(existing)} finished "
                          f"trials (target {args.trials}): nothing to do")
            console.print(leaderboard_table(existing))
            return 0
    # torch loads only now, so option and storage errors answer at once
    from objectives.data import load_search_data
    from objectives.objective import Objective
    from objectives.training import resolve_device
    from search.evidence import TrialEvidence

    device = resolve_device(args.device)
    data_dir = args.data_dir or default_data_dir()
    data = load_search_data(args.dataset, data_dir, args.val_fraction, args.seed, device)
    study = open_study(storage, study_name, space, args.dataset, make_sampler(args.seed),
                       make_pruner(args.pruner, args.epochs))
    record_search_settings(study, args, data.split_hash)
    evidence = TrialEvidence(open_artifact_store(artifact_dir(args.storage, args.artifact_dir)))
    added = 0 if args.no_replay else enqueue_documented(study, space)
    console.print(
        f"study {study_name!r} on {args.storage}: {finished_count(study)} of {args.trials} trials "
        f"finished, {added} documented experiments enqueued; {len(data.train)} train / "
        f"{len(data.val)} validation images of {args.dataset} on {device}"
    )
    with SearchProgress(console, study, args.trials, args.epochs) as progress:
        objective = Objective(space, data, args.epochs, args.seed, on_epoch=progress.on_epoch,
                              on_trial_end=evidence)
        run_until(study, objective, args.trials, callbacks=[progress.on_trial])
    console.print(leaderboard_table(study))
    console.print(
        "next:\n"
        f"  kmnist-search dashboard --storage {args.storage}\n"
        f"  kmnist-search export --study {study_name} --storage {args.storage} -o best.json\n"
        f"  kmnist-search status --study {study_name} --storage {args.storage}",
        highlight=False,
    )
    return 0


def cmd_replay(args: argparse.Namespace, console: Console) -> int:
    from objectives.data import load_search_data, load_test_split
    from objectives.objective import Objective
    from objectives.training import resolve_device
    from search.evidence import TrialEvidence
    from search.replay import audit_rows, headline, replay_experiment, select_experiments, write_audit

    spaces = ALL_SPACES if args.all else (get_space(args.space),)
    storage = open_storage(args.storage)
    evidence = TrialEvidence(open_artifact_store(artifact_dir(args.storage, args.artifact_dir)))
    device = resolve_device(args.device)
    data_dir = args.data_dir or default_data_dir()
    chosen = select_experiments(spaces)
    loaded: dict[str, tuple | str] = {}  # dataset -> (search data, test split) or why not
    claims, summary = [], []
    for space, experiment in chosen:
        dataset = args.dataset or experiment.dataset
        if dataset not in loaded:
            try:
                data = load_search_data(dataset, data_dir, args.val_fraction, args.seed, device)
                loaded[dataset] = (data, load_test_split(dataset, data_dir, data.mean, data.std, device))
            except DataUnavailableError as error:
                loaded[dataset] = f"not run: {error}"
        if isinstance(loaded[dataset], str):
            rows = audit_rows(space, experiment, dataset, None, 0, not_run=loaded[dataset],
                              accuracy_tolerance=args.tolerance)
        else:
            data, test = loaded[dataset]
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


def cmd_spaces(console: Console) -> int:
    for space in ALL_SPACES:
        console.print(f"[bold]{space.name}[/bold] ({space.family}): {space.description}")
        for p in space.params:
            console.print(f"  {p.name:<16} {p.describe()}", highlight=False)
        for e in space.experiments:
            claims = ", ".join(f"{c.metric} {c.value:g}" for c in e.claims)
            widths = e.config.get("hidden_layers")
            arch = f" {format_widths(widths)}" if widths else ""
            console.print(f"  replays {e.key}{arch}: {claims}", highlight=False)
    return 0


def cmd_status(args: argparse.Namespace, console: Console) -> int:
    storage = open_storage(args.storage)
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
    return 0


def cmd_dashboard(args: argparse.Namespace, console: Console) -> int:
    from optuna_dashboard import run_server

    storage = open_storage(args.storage)
    folder = artifact_dir(args.storage, args.artifact_dir)
    console.print(f"optuna-dashboard on http://{args.host}:{args.port}/ for {args.storage} "
                  f"(artifacts: {folder}); Ctrl-C stops it", highlight=False)
    run_server(storage, host=args.host, port=args.port, artifact_store=open_artifact_store(folder))
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
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    try:
        if args.command == "start":
            return cmd_start(args, console)
        if args.command == "replay":
            return cmd_replay(args, console)
        if args.command == "dashboard":
            return cmd_dashboard(args, console)
        if args.command == "spaces":
            return cmd_spaces(console)
        if args.command == "status":
            return cmd_status(args, console)
        return cmd_build_root(args, console)
    except USER_ERRORS as error:
        print(f"kmnist-search {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.command == "dashboard":
            return 0
        print("kmnist-search: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
