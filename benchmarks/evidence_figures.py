"""Per-trial evidence figures, before and after: what a trial pays when it ends to draw its
learning curve (every trial, pruned ones included) and its confusion matrix (completed trials).

Before: matplotlib's `savefig`, which draws a constrained-layout figure twice (once only to lay
it out), with the confusion matrix's cell counts taking part in the layout. After:
`search.figure_style.save_figure`, one draw that lays out and renders, with the counts left out
of the layout (they sit inside the axes either way). Both ways must write byte-identical PNG
files; every repetition checks that. The two ways alternate, medians of --repetitions (>= 3).

Then the share of a real search: a `--search-minutes` `mlp_regularisation` search on kmnist-7k
(one worker, one thread, seed 0) for each way, timing the trial-end evidence (figures, CSV,
uploads, notes) against the search's wall time.

    .venv/bin/python benchmarks/evidence_figures.py [--quick] [--repetitions N] [--search-minutes M]
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import matplotlib.pyplot as plt
import numpy as np
import optuna
from common import KMNIST_7K, begin, copy_root, median, parser, ratios, write_results
from matplotlib.figure import Figure
from rich.console import Console

import search.evidence
import search.worker
from objectives.training import EpochResult
from search.evidence import TrialEvidence, cjk_font, confusion_figure, learning_curve_figure
from search.figure_style import DPI, save_figure
from search.launch import Connection, StartRequest, start_search


def history(epochs: int) -> list[EpochResult]:
    rng = np.random.default_rng(epochs)
    return [EpochResult(epoch=e, train_loss=1.5 / e + rng.uniform(0, 0.05), val_loss=1.6 / e,
                        val_accuracy=0.6 + 0.3 * (1 - 1 / e), seconds=1.0) for e in range(1, epochs + 1)]


def confusion_counts(classes: int = 10, per_class: int = 140) -> np.ndarray:
    """A validation confusion matrix the size of kmnist-7k's validation split."""
    rng = np.random.default_rng(0)
    matrix = rng.integers(0, 8, (classes, classes))
    np.fill_diagonal(matrix, per_class - matrix.sum(axis=1) + np.diag(matrix))
    return matrix


def save_as_before(fig: Figure, path: Path) -> Path:
    for text in (t for ax in fig.axes for t in ax.texts):
        text.set_in_layout(True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


CASES: dict[str, Callable[[], Figure]] = {
    "learning curve, pruned trial (3 epochs)": lambda: learning_curve_figure(history(3), "trial 412"),
    "learning curve, completed trial (20 epochs)": lambda: learning_curve_figure(history(20), "trial 412"),
    "confusion matrix, 10 KMNIST classes": lambda: confusion_figure(
        confusion_counts(), "trial 412: validation confusion matrix", "kmnist"),
}


def per_figure(draw: Callable[[], Figure], save: Callable[[Figure, Path], Path], path: Path,
               calls: int) -> tuple[float, float]:
    """Wall and CPU milliseconds per figure, drawn and written."""
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(calls):
        save(draw(), path)
    return ((time.perf_counter() - wall) / calls * 1e3, (time.process_time() - cpu) / calls * 1e3)


def compare(draw: Callable[[], Figure], folder: Path, calls: int, reps: int) -> dict[str, Any]:
    before_path, after_path = folder / "before.png", folder / "after.png"
    save_as_before(draw(), before_path)  # warm-up: fonts, glyph caches
    save_figure(draw(), after_path)
    runs: dict[str, list[tuple[float, float]]] = {"before": [], "after": []}
    for rep in range(reps):
        order = ("before", "after") if rep % 2 == 0 else ("after", "before")
        for way in order:
            save, path = (save_as_before, before_path) if way == "before" else (save_figure, after_path)
            runs[way].append(per_figure(draw, save, path, calls))
        if before_path.read_bytes() != after_path.read_bytes():
            raise SystemExit("the two ways wrote different PNG files: the change is not only faster")
    wall = {way: [w for w, _ in r] for way, r in runs.items()}
    cpu = {way: [c for _, c in r] for way, r in runs.items()}
    return {"before_ms": round(median(wall["before"]), 1), "after_ms": round(median(wall["after"]), 1),
            "before_cpu_ms": round(median(cpu["before"]), 1), "after_cpu_ms": round(median(cpu["after"]), 1),
            "speedup": round(median(ratios(wall["before"], wall["after"])), 3),
            "identical_png": True,
            "before_runs_ms": [round(x, 1) for x in wall["before"]],
            "after_runs_ms": [round(x, 1) for x in wall["after"]]}


class TimedEvidence(TrialEvidence):
    """The product's trial-end evidence, adding up the seconds it takes."""

    seconds = 0.0
    calls = 0

    def __call__(self, trial: optuna.Trial, outcome: Any) -> None:
        started = time.perf_counter()
        super().__call__(trial, outcome)
        TimedEvidence.seconds += time.perf_counter() - started
        TimedEvidence.calls += 1


def search_share(way: str, data_dir: Path, folder: Path, minutes: float) -> dict[str, Any]:
    """A timed mlp_regularisation search with `way`'s figure saving: evidence seconds and share."""
    TimedEvidence.seconds, TimedEvidence.calls = 0.0, 0
    save = save_as_before if way == "before" else save_figure
    folder.mkdir()
    request = StartRequest(space="mlp_regularisation", connection=Connection(f"sqlite:///{folder / 's.db'}"),
                           trials=100_000, timeout_s=60 * minutes, threads=1, data_dir=data_dir,
                           artifact_dir=folder / "artifacts", device="cpu")
    started = time.perf_counter()
    with mock.patch.object(search.worker, "TrialEvidence", TimedEvidence), \
            mock.patch.object(search.evidence, "save_figure", save):
        outcome = start_search(request, Console(quiet=True), say=lambda _: None, warn=print)
    wall = time.perf_counter() - started
    states = [t.state for t in outcome.study.trials]
    return {"search_seconds": round(wall, 1), "evidence_seconds": round(TimedEvidence.seconds, 1),
            "evidence_share": round(TimedEvidence.seconds / wall, 4), "trials_ended": TimedEvidence.calls,
            "completed": states.count(optuna.trial.TrialState.COMPLETE),
            "pruned": states.count(optuna.trial.TrialState.PRUNED),
            "best_value": round(outcome.study.best_value, 4),
            "evidence_ms_per_trial": round(1e3 * TimedEvidence.seconds / max(TimedEvidence.calls, 1), 1)}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--search-minutes", type=float, default=3.0,
                   help="minutes of each timed search (0: figures only; default 3)")
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    record = begin(args)
    calls = 2 if args.quick else 20
    minutes = min(args.search_minutes, 0.25) if args.quick else args.search_minutes
    results: dict[str, Any] = {"machine": record, "calls_per_repetition": calls,
                               "repetitions": args.repetitions, "cjk_font": cjk_font(), "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, draw in CASES.items():
            row = compare(draw, Path(tmp), calls, args.repetitions)
            results["cases"][name] = row
            print(f"{name}: {row['before_ms']} -> {row['after_ms']} ms per figure "
                  f"(x{row['speedup']}), same PNG bytes", flush=True)
        if minutes > 0 and not KMNIST_7K.is_dir():
            print(f"skipping the searches: {KMNIST_7K} is missing")
        elif minutes > 0:
            data_dir = copy_root(KMNIST_7K, Path(tmp) / "kmnist")
            results["search"] = {"space": "mlp_regularisation", "minutes": minutes, "seed": 0, "threads": 1}
            for way in ("before", "after"):
                row = search_share(way, data_dir, Path(tmp) / way, minutes)
                results["search"][way] = row
                print(f"{minutes:g}-minute search, {way}: evidence {row['evidence_seconds']} of "
                      f"{row['search_seconds']} s ({100 * row['evidence_share']:.1f} %), "
                      f"{row['trials_ended']} trials ended ({row['pruned']} pruned)", flush=True)
    results["machine_after"] = {"load_average_1m": round(os.getloadavg()[0], 2)}
    print(f"wrote {write_results('evidence_figures', results, quick=args.quick)}")


if __name__ == "__main__":
    main()
