"""Shared fixtures: tiny synthetic dataset roots, the real-data root, the CLI runner."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from search.launch import Connection, JoinRequest, SearchOutcome, StartRequest, join_search, start_search
from tests.pg_server import PostgresUnavailable, postgres_server
from tests.pg_server import free_port as _free_port  # noqa: F401 (test modules import it from here)

# torch (and objectives.data, which loads it) is imported inside the functions that use it: the
# xdist controller loads this file too, and importing torch there would delay every worker's start.

REPO = Path(__file__).resolve().parents[1]
SHARED_KMNIST_7K = REPO.parent / "shared" / "data" / "kmnist-7k"
CLI = Path(sys.executable).parent / "kmnist-search"


def synthetic_images(n: int, num_classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Learnable 28x28 images: each class is a fixed random stroke pattern plus noise.

    The patterns are the same for every seed, so train and test sets share their classes.
    """
    templates = (np.random.default_rng(1234).random((num_classes, 28, 28)) > 0.7) * 200.0
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % num_classes
    rng.shuffle(labels)
    noise = rng.normal(0, 40, (n, 28, 28))
    images = np.clip(templates[labels] + noise, 0, 255).astype(np.uint8)
    return images, labels.astype(np.uint8)


def make_synthetic_root(data_dir: Path, dataset: str = "kmnist", n_train: int = 600,
                        n_test: int = 200) -> Path:
    from objectives.data import write_root

    write_root(data_dir, dataset, synthetic_images(n_train, seed=1), synthetic_images(n_test, seed=2))
    return data_dir


def pytest_configure(config: pytest.Config) -> None:
    # pytest-xdist workers share the cores: one torch thread each (and in the CLIs they start
    # that do not set --threads) instead of OpenMP threads stalling on a busy core
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)
        os.environ["OMP_NUM_THREADS"] = "1"


# Seconds the long modules' tests take in `make test` on a 2-core machine (from a timeline of
# the suite); every other module takes a few seconds in all.
MODULE_SECONDS = {"test_workers.py": 166, "test_official_test.py": 74, "test_replay.py": 56,
                  "test_learning_curve.py": 47, "test_dashboard.py": 38, "test_fleet.py": 38,
                  "test_budget.py": 37, "test_export_retrain.py": 34, "test_beyond_spaces.py": 33,
                  "test_readme.py": 33, "test_cli_start.py": 27, "test_bad_input.py": 26,
                  "test_safe_files.py": 23, "test_reevaluate.py": 15}


def xdist_shares(count: int, workers: int) -> list[int]:
    """How many tests pytest-xdist's worksteal first hands each worker: even contiguous shares."""
    shares = []
    for remaining in range(workers, 0, -1):
        shares.append((count - sum(shares)) // remaining)
    return shares


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Deal the long modules out across the xdist workers so they finish together. worksteal
    gives each worker a contiguous share of the collection and later moves tests from the back
    of a busy worker's queue to an idle one; so each share starts with its long modules (each
    to the share with the fewest seconds so far, longest first) and ends with short tests to
    move. A module's tests stay together and in order, so module fixtures are built once. The
    order changes only when the suite ends."""
    modules: dict[str, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(str(item.path), []).append(item)
    long_modules = sorted((m for m in modules if Path(m).name in MODULE_SECONDS),
                          key=lambda m: -MODULE_SECONDS[Path(m).name])
    short = [item for m, tests in modules.items() if m not in long_modules for item in tests]
    sizes = xdist_shares(len(items), max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))
    shares: list[list[pytest.Item]] = [[] for _ in sizes]
    seconds = [0] * len(sizes)
    for module in long_modules:
        least = seconds.index(min(seconds))
        shares[least] += modules[module]
        seconds[least] += MODULE_SECONDS[Path(module).name]
    for share, size in zip(shares, sizes, strict=True):
        take = max(0, size - len(share))
        share += short[:take]
        short = short[take:]
    shares[-1] += short
    items[:] = [item for share in shares for item in share]


@pytest.fixture(autouse=True)
def close_figures():
    """Figures a test leaves open are closed after it: pyplot keeps every open figure, and a
    worker running hundreds of tests would warn about, and hold, the ones earlier tests left."""
    yield
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_root(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="session")
def real_kmnist_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temporary copy of kmnist-7k: 7,011 real training images and the official test set."""
    if not (SHARED_KMNIST_7K / "KMNIST" / "raw" / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real KMNIST root not found in {SHARED_KMNIST_7K} (see ../shared/data/README.md)")
    root = tmp_path_factory.mktemp("real-kmnist") / "kmnist-7k"
    shutil.copytree(SHARED_KMNIST_7K, root)  # the product extracts the archives beside them
    return root


def offline_env() -> dict[str, str]:
    # any download torchvision attempts fails at once instead of reaching the network
    env = dict(os.environ)
    env.update(http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9",
               HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9")
    env["no_grpc_proxy"] = "127.0.0.1,localhost"  # gRPC would send even loopback calls to http_proxy
    env.pop("KMNIST_SEARCH_DATA", None)
    return env


def default_sigint() -> None:
    """Run in a child before exec: Ctrl-C tests need SIGINT delivered, but a suite started
    in the background (`make test &`) makes every child inherit it as ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def unfolded(output: str) -> str:
    """CLI output with rich's folds undone: in pipes it folds lines at 200 columns, and where
    depends on the length of the temporary paths printed (pytest-xdist's are longer)."""
    return " ".join(output.split())


def run_cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLI), *args], cwd=cwd, env=offline_env(), capture_output=True,
                          text=True, timeout=timeout)


def run_main(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The command's own `main` in this process, as run_cli sees it (exit status, stdout,
    stderr), for cases whose subject is not the process: its startup is the cost of run_cli."""
    import torch

    from search.cli import main

    out, err, env = io.StringIO(), io.StringIO(), env or offline_env()
    before, threads, where = dict(os.environ), torch.get_num_threads(), Path.cwd()
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exit_:  # argparse's errors and --help
                code = exit_.code if isinstance(exit_.code, int) else 2 if exit_.code else 0
    finally:
        os.chdir(where)
        os.environ.clear()
        os.environ.update(before)
        torch.set_num_threads(threads)
    return subprocess.CompletedProcess(["kmnist-search", *args], code, out.getvalue(), err.getvalue())


def in_process(launch, request) -> tuple[SearchOutcome, str]:
    import torch

    said: list[str] = []
    threads = torch.get_num_threads()
    try:
        console = Console(file=io.StringIO(), markup=False)  # the live progress, not checked here
        outcome = launch(request, console, say=said.append, warn=said.append)
    finally:
        torch.set_num_threads(threads)  # the worker sets its own; the next test gets the suite's
    return outcome, "\n".join(said)


def start_in_process(storage: str, root: Path, trials: int, epochs: int, space: str = "mlp_regularisation",
                     **request) -> tuple[SearchOutcome, str]:
    """`start` through the library call the command makes (one torch thread), for tests whose
    subject is the search rather than the command line: its outcome and the lines it said."""
    return in_process(start_search, StartRequest(space=space, connection=Connection(storage), trials=trials,
                                                 epochs=epochs, threads=1, data_dir=root, **request))


def join_in_process(storage: str, study: str, root: Path, **request) -> tuple[SearchOutcome, str]:
    """`worker` through its library call, as start_in_process."""
    return in_process(join_search, JoinRequest(study=study, connection=Connection(storage), threads=1,
                                               data_dir=root, **request))


def searched_folder(folder: Path, root: Path, trials: int, epochs: int) -> Path:
    """A folder whose k.db holds a finished tiny mlp_regularisation search."""
    outcome, _ = start_in_process(f"sqlite:///{folder / 'k.db'}", root, trials, epochs)
    assert outcome.finished == trials
    return folder


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL server on a loopback port (Debian's postgresql package)."""
    try:
        with postgres_server() as server:
            yield server
    except PostgresUnavailable as reason:
        pytest.skip(str(reason))


@pytest.fixture(scope="session")
def postgres_url(postgres):
    return postgres.url


@pytest.fixture
def spawned():
    """Processes a test starts (a proxy, say), killed at its end even when it fails."""
    processes: list[subprocess.Popen] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()
