"""Trials per hour with 1 vs 2 worker processes and their thread split (BENCHMARKS 3).

Each arm runs the real CLI (`kmnist-search start --jobs J --threads T`) on the same fresh
task: a fixed number of sampled trials on synthetic 28x28 images, no pruning, so every arm
does the same work. Speeds are ratios against the 1-worker x 2-thread arm of the same
repetition; arms rotate order between repetitions; medians are reported.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from common import CLI, RESULTS, machine, parser, synthetic_root

ARMS = ((1, 2), (1, 1), (2, 1))  # (jobs, threads per job); the first is the baseline


def run_arm(jobs: int, threads: int, root: Path, trials: int, epochs: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        result = subprocess.run(
            [str(CLI), "start", "--space", "mlp_regularisation", "--no-replay", "--pruner", "none",
             "--trials", str(trials), "--epochs", str(epochs), "--jobs", str(jobs), "--threads",
             str(threads), "--storage", f"sqlite:///{tmp}/b.db", "--data-dir", str(root)],
            cwd=tmp, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(result.stderr)
        return time.perf_counter() - started


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    trials, epochs, images = (4, 1, 3000) if args.quick else (8, 3, 12000)
    with tempfile.TemporaryDirectory() as tmp:
        root = synthetic_root(Path(tmp), images)
        reps = []
        for rep in range(args.repetitions):
            order = ARMS[rep % len(ARMS):] + ARMS[:rep % len(ARMS)]
            seconds = {f"{j}x{t}": run_arm(j, t, root, trials, epochs) for j, t in order}
            reps.append(seconds)
            print(f"repetition {rep + 1}: " + ", ".join(f"{k} {v:.1f}s" for k, v in seconds.items()))
    baseline = "1x2"
    arms = {}
    for jobs, threads in ARMS:
        key = f"{jobs}x{threads}"
        arms[key] = {
            "jobs": jobs, "threads_per_job": threads,
            "median_seconds": statistics.median(r[key] for r in reps),
            "median_trials_per_hour": statistics.median(trials / r[key] * 3600 for r in reps),
            "median_speed_vs_1x2": statistics.median(r[baseline] / r[key] for r in reps),
        }
    best = max(arms, key=lambda k: arms[k]["median_speed_vs_1x2"])
    out = {"machine": machine(), "trials_per_arm": trials, "epochs": epochs, "train_images": images,
           "repetitions": reps, "arms": arms, "fastest": best}
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / ("parallel_workers.quick.tmp" if args.quick else "parallel_workers.json")
    path.write_text(json.dumps(out, indent=2) + "\n")
    for key, arm in arms.items():
        speed = arm['median_speed_vs_1x2']
        print(f"{key}: {arm['median_trials_per_hour']:.0f} trials/h, {speed:.2f}x of 1x2")
    print(f"fastest: {best}; wrote {path}")


if __name__ == "__main__":
    main()
