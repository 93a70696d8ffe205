"""The command line's vocabulary: argument types, the help formatter, and the options several
commands share, each defined once with one name, meaning and unit.

Old spellings kept for one release (`--out`, `--tolerance`, a bare `--timeout` number in
minutes) still work and print a one-line note naming the new spelling.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from objectives.budget import COST_LIMITS
from objectives.datasets import DATASET_NAMES
from search.study import GRACE_PERIOD_S, HEARTBEAT_INTERVAL_S, PRUNERS
from storage.resilient import DEFAULT_RETRY_FOR_S
from storage.urls import DEFAULT_STORAGE

NOTES = "deprecation_notes"  # namespace attribute: notes wait until the whole line has parsed


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default as a user would type it. A default of None has no such
    spelling, so those options say their default in their own help; a flag is off unless given."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (action.default is None or action.default is argparse.SUPPRESS or action.nargs == 0
                or action.required or not action.option_strings):
            return text
        return f"{text} (default: {shown(action.default)})"

    def add_argument(self, action: argparse.Action) -> None:
        super().add_argument(action)
        if isinstance(action, argparse._SubParsersAction):  # argparse forgets the commands' indent
            longest = max(map(len, action.choices), default=0)
            self._action_max_length = max(self._action_max_length,
                                          longest + self._current_indent + self._indent_increment)


def shown(value: object) -> str:
    """A default as help prints it (escaped for argparse's %-formatting)."""
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return text.replace("%", "%%")


class OneLineParser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # argparse prints usage + message; we print one line
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")

    def parse_args(self, args=None, namespace=None) -> argparse.Namespace:  # type: ignore[override]
        parsed = super().parse_args(args, namespace)
        for note in vars(parsed).pop(NOTES, ()):
            print(note, file=sys.stderr)
        return parsed


def add_note(namespace: argparse.Namespace, line: str) -> None:
    setattr(namespace, NOTES, [*getattr(namespace, NOTES, ()), line])


class DeprecatedSpelling(argparse.Action):
    """An old spelling, hidden from help: stores like the new one and notes the new spelling.

    `instead` turns the parsed value into the new spelling, e.g. "--tolerance-points 2".
    """

    def __init__(self, option_strings, dest, instead, **kwargs) -> None:
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)
        self.instead = instead

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        add_note(namespace, f"{parser.prog}: note: {option_string} is deprecated and will be removed in a "
                            f"later release; write {self.instead(values)}")
        setattr(namespace, self.dest, values)


# argparse types ---------------------------------------------------------------------------

def whole_number(low: int, high: int | None = None):
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


positive_int = whole_number(1)
port = whole_number(1, 65535)


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def fraction(text: str) -> float:
    value = number(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must lie between 0 and 1, got {value}")
    return value


def positive_float(text: str) -> float:
    value = number(text)
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def points(text: str) -> float:
    """Percentage points of accuracy, 0 to 100."""
    value = number(text)
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must lie between 0 and 100 percentage points, got {text}")
    return value


def points_as_fraction(text: str) -> float:
    return points(text) / 100


def device(text: str) -> str:
    if text not in ("auto", "cpu") and not text.startswith("cuda"):
        raise argparse.ArgumentTypeError(f"{text!r} is not auto, cpu or cuda[:N]")
    return text


UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}
DURATION_FORM = "a number with an optional unit s, m or h (90s, 30m, 1.5h)"


def split_duration(text: str, bare_unit: str = "s") -> tuple[float, bool]:
    """'90s', '30m', '1.5h' or a bare number (in `bare_unit`) -> (seconds, whether a unit was written)."""
    stripped = text.strip()
    unit = stripped[-1:].lower()
    written = unit in UNIT_SECONDS
    try:
        value = float(stripped[:-1] if written else stripped)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {DURATION_FORM}") from None
    return value * UNIT_SECONDS[unit if written else bare_unit], written


def positive_seconds(seconds: float, text: str) -> float:
    if not 0 < seconds < math.inf:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a positive number with an optional unit s, m or h, "
                                         f"got {text}")
    return seconds


def duration(text: str) -> float:
    """An argparse type: seconds from '90s', '30m', '1.5h' or a bare number of seconds."""
    return positive_seconds(split_duration(text)[0], text)


def whole_seconds(text: str) -> int:
    """An argparse type: `duration`, for settings kept as whole seconds (heartbeats)."""
    seconds, _ = split_duration(text)
    if not (1 <= seconds < math.inf and seconds == int(seconds)):
        raise argparse.ArgumentTypeError(f"must be a whole number of seconds, at least 1, got {text}")
    return int(seconds)


def seconds_text(seconds: float) -> str:
    """A duration as the options take it back: 90 -> '90s'."""
    return f"{seconds:g}s"


class TimeoutAction(argparse.Action):
    """`start --timeout`: stored in seconds. A bare number still means minutes for one release."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        try:
            seconds, written = split_duration(values, bare_unit="m")
            positive_seconds(seconds, values)
        except argparse.ArgumentTypeError as error:
            raise argparse.ArgumentError(self, str(error)) from None
        if not written:
            add_note(namespace, f"{parser.prog}: note: {option_string} {values} is read as {values} minutes; "
                                f"write {values}m (bare numbers will mean seconds in a later release)")
        setattr(namespace, self.dest, seconds)


# shared options ---------------------------------------------------------------------------

def add_storage_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", default=DEFAULT_STORAGE, metavar="URL",
                        help="Optuna storage URL: sqlite:///FILE, postgresql://USER@HOST/DB (password "
                        "from PGPASSWORD or ~/.pgpass) or grpc://HOST:PORT of a `kmnist-search proxy`; "
                        "$KMNIST_SEARCH_STORAGE, when set, is used instead")


def add_study_option(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    """--study, required unless `default` says in words what it defaults to."""
    parser.add_argument("--study", required=default is None, metavar="NAME",
                        help="study name" + (f" (default: {default})" if default else ""))


def add_artifact_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--artifact-dir", type=Path, default=None, metavar="DIR",
                        help="the study's artifact store: plots, CSVs and per-trial evidence (default: "
                        "<storage file>-artifacts beside a SQLite file, else ./kmnist-search-artifacts)")


def add_data_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                        help="dataset root in torchvision's layout (default: $KMNIST_SEARCH_DATA, "
                        "else ~/.cache/kmnist-search)")


def add_dataset_option(parser: argparse.ArgumentParser, choices: tuple[str, ...] = DATASET_NAMES,
                       default_words: str | None = None) -> None:
    """--dataset; defaults to kmnist unless `default_words` describes another default."""
    parser.add_argument("--dataset", choices=choices, default=None if default_words else "kmnist",
                        help="the dataset to train and test on"
                        + (f" (default: {default_words})" if default_words else ""))


def add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", type=device, default="auto",
                        help="cpu, cuda or cuda:N; auto is cuda where a GPU is available, else cpu")


def add_seed_option(parser: argparse.ArgumentParser, seeds: str) -> None:
    parser.add_argument("--seed", type=int, default=0, metavar="N", help=f"random seed of {seeds}")


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N",
                        help="torch CPU threads per training process (default: the machine's cores, "
                        "divided among start's --jobs)")


def add_pruner_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pruner", choices=PRUNERS, default="median",
                        help="how a trial is stopped early: median (below the median of earlier trials "
                        "at the same epoch, after the space's warm-up), hyperband, or none")


def add_val_fraction_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--val-fraction", type=fraction, default=1 / 6, metavar="F",
                        help="share of the training set held out for validation")


def add_data_options(parser: argparse.ArgumentParser, seeds: str, dataset_default: str | None = None) -> None:
    """The data a command trains on: which dataset, where it lives, its split, the seed, the device."""
    add_dataset_option(parser, default_words=dataset_default)
    add_data_dir_option(parser)
    add_val_fraction_option(parser)
    add_seed_option(parser, seeds)
    add_device_option(parser)


def add_output_option(parser: argparse.ArgumentParser, dest: str, what: str, default: str | None = None,
                      default_words: str | None = None, required: bool = False,
                      metavar: str = "PATH") -> None:
    """-o/--output, defaulting to the path `default` or to what `default_words` describe; the
    old --out stays as a deprecated spelling."""
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("-o", "--output", dest=dest, type=Path, default=default, metavar=metavar,
                       help=what + (f" (default: {default_words})" if default_words else ""))
    group.add_argument("--out", dest=dest, type=Path, action=DeprecatedSpelling,
                       instead=lambda path: f"-o {path}")


def add_listen_options(parser: argparse.ArgumentParser, default_port: int, serves: str) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help=f"address to listen on; 0.0.0.0 serves other machines too ({serves} has no "
                        "login: keep it on a private network)")
    parser.add_argument("--port", type=port, default=default_port, help="port to listen on")


def add_grace_period_option(parser: argparse.ArgumentParser, more: str = "") -> None:
    parser.add_argument("--grace-period", type=whole_seconds, default=seconds_text(GRACE_PERIOD_S),
                        metavar="DURATION",
                        help="how long a running trial may go without a heartbeat before it counts as dead "
                        f"and is retried{more}")


def add_worker_options(parser: argparse.ArgumentParser) -> None:
    """What every process that runs trials needs: threads, heartbeats, patience with the storage."""
    add_threads_option(parser)
    parser.add_argument("--heartbeat-interval", type=whole_seconds,
                        default=seconds_text(HEARTBEAT_INTERVAL_S), metavar="DURATION",
                        help="how often a running trial tells the storage it is alive")
    add_grace_period_option(parser)
    parser.add_argument("--retry-for", type=duration, default=seconds_text(DEFAULT_RETRY_FOR_S),
                        metavar="DURATION",
                        help="how long to keep retrying an unreachable storage before giving up")


def add_precision_option(parser: argparse.ArgumentParser, default_words: str) -> None:
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default=None,
                        help="training arithmetic: bf16 autocast or float32; auto is bf16 on CUDA and on "
                        f"CPUs with native bf16 (default: {default_words})")


def add_budget_options(parser: argparse.ArgumentParser) -> None:
    budget = parser.add_argument_group(
        "deployment budget", "a model over it is pruned before training; stored on the study "
        "(a later start or worker without these options searches under the stored one)")
    budget.add_argument("--max-params", type=positive_int, default=None, metavar="N",
                        help="most parameters a model may have (default: no limit)")
    budget.add_argument("--max-mflops", type=positive_float, default=None, metavar="M",
                        help="most MFLOPs per image of a forward pass (default: no limit)")
    budget.add_argument("--max-latency-ms", type=positive_float, default=None, metavar="L",
                        help="most milliseconds per image at batch 1 on one CPU thread, measured "
                        "(default: no limit)")


def add_pick_options(parser: argparse.ArgumentParser) -> None:
    """--cost and --within-points: the cheapest trial within a few points of the best."""
    parser.add_argument("--cost", choices=tuple(c.name for c in COST_LIMITS), default="params",
                        help="what a model costs: params, mflops, or latency (ms per image at batch 1, "
                        "one CPU thread)")
    parser.add_argument("--within-points", type=points, default=None, metavar="X",
                        help="pick the cheapest trial within X percentage points of the best validation "
                        "accuracy (default: off)")
