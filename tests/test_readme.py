"""The README's commands work: every `kmnist-search` line of its shell blocks runs, in the
README's order and in one working folder, on tiny synthetic data: the first in its own process
as a user starts it, the others through the same `main` in the test's process.

What is cut down to keep it small is listed in SMALLER and EXTRA below, so a reader can see
exactly what ran. Commands that serve until stopped (dashboard, proxy) or need a PostgreSQL
server or a proxy are only parsed here; test_dashboard.py, test_workers.py and
test_fleet.py run them for real. `make` lines must name a target of the Makefile.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from search.cli import build_parser
from tests.conftest import CLI, REPO, make_synthetic_root, offline_env, run_main

pytestmark = pytest.mark.slow

README = REPO / "README.md"

# (README text, what runs instead): smaller budgets, the same commands
SMALLER = [
    (r"--trials \d+", "--trials 2"),
    (r"--seeds \d+", "--seeds 1"),
    (r"--max-epochs \d+", "--max-epochs 1"),
    (r"--curve-seeds \d+", "--curve-seeds 2"),
]
# options added per subcommand (after the README's own)
EXTRA = {
    "start": ["--epochs", "1"],
    # one report's experiments (three MLPs) instead of all 25
    "replay": ["--report", "000"],
}
# a learning curve on the 333 synthetic training images (400 less the validation split)
LEARNING_CURVE_EXTRA = ["--sizes", "50,100,200,all", "--validate-up-to", "200", "--bootstrap", "20"]
# documented exit status where it is not 0 (none so far)
EXPECTED_STATUS: dict[str, int] = {}


def shell_blocks(text: str) -> list[str]:
    """Bodies of fenced blocks marked ```sh or left bare."""
    return re.findall(r"^```(?:sh)?\n(.*?)^```", text, flags=re.S | re.M)


def readme_commands(text: str) -> list[str]:
    """Every `kmnist-search ...` or `make ...` command of the shell blocks, in order."""
    commands = []
    for block in shell_blocks(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            for part in (p.strip() for p in line.split("&&")):
                if part.startswith(("kmnist-search ", "make ")) or part in ("kmnist-search", "make"):
                    commands.append(part)
    return commands


def parse_only(argv: list[str]) -> bool:
    storage = argv[argv.index("--storage") + 1] if "--storage" in argv else ""
    return argv[0] in ("dashboard", "proxy") or storage.startswith(("postgresql://", "grpc://"))


def small_argv(command: str, data_root: Path) -> list[str]:
    for pattern, replacement in SMALLER:
        command = re.sub(pattern, replacement, command)
    command = re.sub(r"\bDIR\b", str(data_root), command)
    argv = shlex.split(command)[1:]
    argv += EXTRA.get(argv[0], [])
    if argv[0] == "start" and "--trials" not in argv:
        argv += ["--trials", "2"]
    if "--learning-curve" in argv:
        argv += LEARNING_CURVE_EXTRA
    return argv


COMMANDS = readme_commands(README.read_text(encoding="utf-8"))


def test_the_readme_has_commands_to_run():
    assert sum(c.startswith("kmnist-search ") for c in COMMANDS) >= 10
    assert "make search" in COMMANDS and "make test" in COMMANDS


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One working folder for every command (they build on each other) and a data root."""
    root = make_synthetic_root(tmp_path_factory.mktemp("data"), n_train=400, n_test=200)
    return tmp_path_factory.mktemp("readme"), root


def test_readme_commands_run_in_order(workspace: tuple[Path, Path]):
    # one test, not one per command: the commands build on each other (status needs start's
    # study), and test workers must not split them
    folder, root = workspace
    env = offline_env()
    env["KMNIST_SEARCH_DATA"] = str(root)  # as the README's `export KMNIST_SEARCH_DATA=...`
    first = next(c for c in COMMANDS if c.startswith("kmnist-search "))
    for command in COMMANDS:
        if command.startswith("make"):
            target = shlex.split(command)[1]
            assert re.search(rf"^{re.escape(target)}:", (REPO / "Makefile").read_text(), re.M), command
            continue
        argv = small_argv(command, root)
        if parse_only(argv):
            build_parser().parse_args(argv)  # exits 2 on an unknown option or a bad value
            continue
        if command == first:  # the installed command, in its own process
            result = subprocess.run([str(CLI), *argv], cwd=folder, env=env, capture_output=True, text=True,
                                    timeout=600)
        else:  # the rest through the same `main` in this process: a process costs seconds of imports
            result = run_main(*argv, cwd=folder, env=env)
        ran = f"{command}\nran as: kmnist-search {shlex.join(argv)}"
        assert result.returncode == EXPECTED_STATUS.get(command, 0), (
            f"{ran}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
