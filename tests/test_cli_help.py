"""The command line's vocabulary: every option documented with its default, one definition
per shared option, durations with units, and the old spellings still working with a note."""

import argparse
import re

import pytest

from search.cli import build_parser
from search.cli_options import duration, shown, whole_seconds
from tests.conftest import run_cli

PARSER = build_parser()
SUBCOMMANDS = next(a for a in PARSER._actions if isinstance(a, argparse._SubParsersAction))
COMMANDS = SUBCOMMANDS.choices
SHARED = ("--storage", "--study", "--data-dir", "--dataset", "--device", "--seed", "--artifact-dir",
          "--threads", "--val-fraction", "--heartbeat-interval", "--grace-period", "--retry-for",
          "--precision", "--cost", "--within-points", "--host", "--port", "-o")


def documented_options(command):
    """(action, help as printed) for each option of a command a user is meant to see."""
    sub = COMMANDS[command]
    formatter = sub._get_formatter()
    return [(a, formatter._expand_help(a)) for a in sub._actions
            if a.help is not argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)]


def in_a_required_group(parser, action):
    return any(g.required and action in g._group_actions for g in parser._mutually_exclusive_groups)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_option_has_help_and_shows_its_default(command):
    sub = COMMANDS[command]
    for action, printed in documented_options(command):
        name = "/".join(action.option_strings) or action.dest
        assert action.help and action.help.strip(), f"{command} {name} has no help"
        assert printed.count("default") <= 1, f"{command} {name} states its default twice: {printed}"
        if (not action.option_strings or action.nargs == 0 or action.required
                or in_a_required_group(sub, action)):
            continue  # positionals, flags (off unless given) and required options have no default
        assert "(default: " in printed, f"{command} {name} does not show its default: {printed}"
        if action.default is not None:  # the formatter shows it; a hand-written copy would drift
            assert "default" not in action.help, f"{command} {name} writes its default by hand"
            assert f"(default: {shown(action.default)})" in printed
    text = sub.format_help()
    assert "(default: None)" not in text and "(default: False)" not in text


@pytest.mark.parametrize("option", SHARED)
def test_a_shared_option_is_one_definition(option):
    found = {}
    for command in COMMANDS:
        for action, _ in documented_options(command):
            if option in action.option_strings:
                found[command] = action
    assert len(found) >= 2, f"{option} is not shared"
    if option == "--storage":  # the proxy's is the database it serves
        found.pop("proxy")
    for attribute in ("option_strings", "type", "metavar", "choices"):
        values = {command: getattr(action, attribute) for command, action in found.items()}
        if attribute == "choices" and option == "--dataset":  # build-root makes roots of sources only
            values.pop("build-root")
        if attribute == "metavar" and option == "-o":  # a FILE or a DIR
            continue
        assert len({repr(v) for v in values.values()}) == 1, f"{option} {attribute} differs: {values}"
    if option == "-o":  # what each command writes is its own
        return
    # the help says the same thing everywhere, up to the default, what is seeded, or a last remark
    stems = {re.split(r" \(default: | of |; ", action.help)[0] for action in found.values()}
    assert len(stems) == 1, f"{option} is described {len(stems)} ways: {stems}"


def test_top_level_help_says_what_the_tool_is_and_lists_each_command_on_one_line(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    text = build_parser().format_help()
    assert "`kmnist-search`: the command line" not in text
    assert "Optuna" in text and "KMNIST" in text
    for command in COMMANDS:
        summary = next(a.help for a in SUBCOMMANDS._choices_actions if a.dest == command)
        assert summary and "\n" not in summary
        line = rf"^    {re.escape(command)} +{re.escape(summary)}$"
        assert re.search(line, text, re.MULTILINE), (command, text)


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("30m", 1800), ("2h", 7200), ("1.5h", 5400), ("2H", 7200), ("45", 45), ("0.5", 0.5),
    ("1e3s", 1000), (" 10 s ", 10)])
def test_a_duration_takes_a_unit_and_a_bare_number_is_seconds(text, seconds):
    assert duration(text) == seconds


@pytest.mark.parametrize("text", ["0", "0s", "-5", "-1m", "inf", "infh", "nan", "1e400", "1e305h", "soon",
                                  "5 minutes", "", "m", "10d"])
def test_a_duration_refuses_zero_negative_infinite_and_garbage(text):
    with pytest.raises(argparse.ArgumentTypeError):
        duration(text)


def test_whole_second_durations_stay_whole_numbers():
    assert whole_seconds("1m") == 60 and isinstance(whole_seconds("1m"), int)
    assert whole_seconds("7") == 7 and isinstance(whole_seconds("7"), int)
    for text in ("1.5s", "0.5", "0", "-1"):
        with pytest.raises(argparse.ArgumentTypeError, match="whole number of seconds, at least 1"):
            whole_seconds(text)


START = ["start", "--space", "mlp_regularisation"]
TIMEOUT_NOTE = ("kmnist-search start: note: --timeout 45 is read as 45 minutes; write 45m (bare numbers will "
                "mean seconds in a later release)")


def parse(capsys, *argv):
    args = build_parser().parse_args(list(argv))
    return args, capsys.readouterr().err


@pytest.mark.parametrize(("option", "dest", "typed", "expected"), [
    ("--heartbeat-interval", "heartbeat_interval", "5", 5),
    ("--heartbeat-interval", "heartbeat_interval", "1m", 60),
    ("--grace-period", "grace_period", "90", 90), ("--grace-period", "grace_period", "1.5m", 90),
    ("--retry-for", "retry_for", "2.5", 2.5), ("--retry-for", "retry_for", "10m", 600.0)])
def test_worker_time_options_take_units_and_bare_seconds(capsys, option, dest, typed, expected):
    for command in (START, ["worker", "--study", "s"]):
        args, err = parse(capsys, *command, option, typed)
        assert getattr(args, dest) == expected and type(getattr(args, dest)) is type(expected)
        assert err == ""
    args, _ = parse(capsys, "proxy", "--storage", "postgresql://u@h/db", "--check-every", typed)
    assert args.check_every == float(expected)


def test_defaults_of_time_options_are_seconds_as_before(capsys):
    from search.study import GRACE_PERIOD_S, HEARTBEAT_INTERVAL_S
    from storage.resilient import DEFAULT_RETRY_FOR_S

    args, _ = parse(capsys, *START)
    assert (args.heartbeat_interval, args.grace_period, args.retry_for, args.timeout) == (
        HEARTBEAT_INTERVAL_S, GRACE_PERIOD_S, DEFAULT_RETRY_FOR_S, None)
    assert isinstance(args.heartbeat_interval, int) and isinstance(args.grace_period, int)


def test_timeout_with_a_unit_and_the_old_bare_minutes_give_the_same_seconds(capsys):
    bare, bare_err = parse(capsys, *START, "--timeout", "45")
    unit, unit_err = parse(capsys, *START, "--timeout", "45m")
    assert bare.timeout == unit.timeout == 2700
    assert parse(capsys, *START, "--timeout", "2700s")[0].timeout == 2700
    assert parse(capsys, *START, "--timeout", "1.5h")[0].timeout == 5400
    assert unit_err == ""
    assert bare_err.splitlines() == [TIMEOUT_NOTE]


@pytest.mark.parametrize(("argv", "fragment"), [
    ([*START, "--timeout", "0"], "positive number"), ([*START, "--timeout", "-1"], "positive number"),
    ([*START, "--timeout", "inf"], "positive number"), ([*START, "--timeout", "0m"], "positive number"),
    ([*START, "--timeout", "soon"], "not a number"), ([*START, "--grace-period", "0.5"], "at least 1"),
    ([*START, "--retry-for", "nan"], "positive number"),
    (["proxy", "--storage", "postgresql://u@h/db", "--check-every", "never"], "not a number"),
    # a note waits for the whole line: an error after it leaves the error alone
    ([*START, "--timeout", "45", "--trials", "0"], "--trials"),
    (["replay", "--all", "--out", "x", "--tolerance", "2"], "--tolerance"),
])
def test_bad_values_get_one_line(capsys, argv, fragment):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and fragment in lines[0] and "error" in lines[0], lines


@pytest.mark.parametrize(("argv", "dest"), [
    (["retrain", "best.json"], "out"), (["replay", "--all"], "out"),
    (["build-root", "--source", "t10k"], "out"),
    (["export", "--study", "s"], "output"), (["front", "--study", "s"], "output")])
def test_out_is_an_old_spelling_of_output(capsys, argv, dest):
    short, short_err = parse(capsys, *argv, "-o", "somewhere")
    long, long_err = parse(capsys, *argv, "--output", "somewhere")
    old, old_err = parse(capsys, *argv, "--out", "somewhere")
    assert str(getattr(short, dest)) == str(getattr(long, dest)) == str(getattr(old, dest)) == "somewhere"
    assert short_err == long_err == ""
    command = argv[0]
    assert old_err.splitlines() == [f"kmnist-search {command}: note: --out is deprecated and will be removed "
                                    "in a later release; write -o somewhere"]


def test_tolerance_points_is_the_old_fraction_in_points(capsys):
    default, _ = parse(capsys, "replay", "--all")
    points, points_err = parse(capsys, "replay", "--all", "--tolerance-points", "2")
    old, old_err = parse(capsys, "replay", "--all", "--tolerance", "0.02")
    assert default.tolerance == 0.01
    assert points.tolerance == old.tolerance == 0.02
    assert parse(capsys, "replay", "--all", "--tolerance-points", "1.5")[0].tolerance == 0.015
    assert points_err == ""
    assert old_err.splitlines() == ["kmnist-search replay: note: --tolerance is deprecated and will be "
                                    "removed in a later release; write --tolerance-points 2"]


def test_old_bare_timeout_still_runs_the_command_and_notes_the_new_spelling(tmp_path):
    result = run_cli("start", "--space", "nope", "--timeout", "45", "--storage",
                     f"sqlite:///{tmp_path / 'k.db'}", cwd=tmp_path)
    assert result.returncode == 2
    note, error = result.stderr.strip().splitlines()
    assert note == TIMEOUT_NOTE
    assert error.startswith("kmnist-search start: error: unknown space 'nope'")  # parsed, then ran
