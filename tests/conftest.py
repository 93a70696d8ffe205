"""Shared fixtures: tiny synthetic dataset roots, the real-data root, the CLI runner."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from objectives.data import write_root
from tests.pg_server import PostgresUnavailable, postgres_server
from tests.pg_server import free_port as _free_port  # noqa: F401 (test modules import it from here)

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
    write_root(data_dir, dataset, synthetic_images(n_train, seed=1), synthetic_images(n_test, seed=2))
    return data_dir


def pytest_configure(config: pytest.Config) -> None:
    # pytest-xdist workers share the cores: one torch thread each (and in the CLIs they start
    # that do not set --threads) instead of OpenMP threads stalling on a busy core
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
        os.environ["OMP_NUM_THREADS"] = "1"


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


def searched_folder(folder: Path, root: Path, trials: int, epochs: int) -> Path:
    """A folder whose k.db holds a finished tiny mlp_regularisation search."""
    result = run_cli("start", "--space", "mlp_regularisation", "--trials", str(trials), "--epochs",
                     str(epochs), "--storage", f"sqlite:///{folder / 'k.db'}", "--data-dir", str(root),
                     cwd=folder)
    assert result.returncode == 0, result.stderr
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
