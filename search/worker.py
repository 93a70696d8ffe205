"""One search worker: the loop every process of a study runs, locally or on another machine.

`start --jobs N` runs one worker in its own process and N-1 more as `kmnist-search worker`
subprocesses; `worker` alone joins a study from anywhere that reaches its storage.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from rich.console import Console

from objectives.budget import Budget, UnmeetableBudgetCheck
from objectives.data import SearchData
from objectives.objective import Objective
from search.evidence import TrialEvidence
from search.progress import SearchProgress
from search.study import CheckpointPaths, run_until
from spaces.base import SearchSpace
from storage.artifacts import open_artifact_store
from storage.urls import STORAGE_ENV


@dataclass(frozen=True)
class WorkerSettings:
    target: int
    epochs: int
    seed: int
    artifact_dir: Path
    threads: int
    deadline: float | None = None  # time.time() after which no new trial starts
    budget: Budget = Budget()
    precision: str = "fp32"  # the study's --precision: auto, fp32 or bf16


def default_threads(jobs: int) -> int:
    """Split the cores between worker processes; each torch process otherwise takes them all."""
    return max(1, (os.cpu_count() or 1) // jobs)


def run_worker(study: optuna.Study, space: SearchSpace, data: SearchData, settings: WorkerSettings,
               console: Console, show_progress: bool = True) -> bool:
    """Run trials of `study` until it holds `settings.target` finished trials."""
    torch.set_num_threads(settings.threads)
    store = open_artifact_store(settings.artifact_dir)
    checkpoints = CheckpointPaths(settings.artifact_dir / "checkpoints", study)
    progress = SearchProgress(console, study, settings.target) if show_progress else None
    objective = Objective(space, data, settings.epochs, settings.seed,
                          on_epoch=progress.on_epoch if progress else None,
                          on_trial_end=TrialEvidence(store), checkpoint_for=checkpoints,
                          budget=settings.budget, precision=settings.precision)
    budget = settings.budget
    callbacks = [UnmeetableBudgetCheck(space, budget, data.num_classes)] if budget.limits() else []
    if progress is None:
        return run_until(study, objective, settings.target, deadline=settings.deadline,
                         callbacks=[checkpoints.discard_finished, *callbacks])
    with progress:
        return run_until(study, objective, settings.target, deadline=settings.deadline,
                         callbacks=[checkpoints.discard_finished, progress.on_trial, *callbacks])


def spawn_workers(count: int, study_name: str, storage_url: str, target: int, threads: int,
                  data_dir: Path, device: str, artifact_dir: Path, heartbeat_interval: int,
                  grace_period: int, deadline: float | None = None,
                  retry_for: float | None = None) -> list[subprocess.Popen]:
    """Extra worker processes on this machine (processes, not threads: training holds the GIL).

    The storage URL travels in the environment, not argv, where `ps` would show its password;
    `python -I` keeps a `search/` folder in the working directory from replacing ours."""
    command = [sys.executable, "-I", "-m", "search.cli", "worker", "--study", study_name,
               "--trials", str(target), "--threads", str(threads), "--data-dir",
               str(data_dir), "--device", device, "--artifact-dir", str(artifact_dir), "--quiet",
               "--heartbeat-interval", str(heartbeat_interval), "--grace-period", str(grace_period)]
    if deadline is not None:
        command += ["--deadline", str(deadline)]
    if retry_for is not None:
        command += ["--retry-for", str(retry_for)]
    env = {**os.environ, STORAGE_ENV: storage_url}
    return [subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
            for _ in range(count)]


def wait_for_workers(workers: list[subprocess.Popen]) -> list[str]:
    """Wait for spawned workers; returns the last stderr line of each that failed."""
    problems = []
    for worker in workers:
        _, stderr = worker.communicate()
        if worker.returncode != 0:
            lines = stderr.strip().splitlines()
            problems.append(lines[-1] if lines else f"worker exited with {worker.returncode}")
    return problems
