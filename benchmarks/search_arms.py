"""Samplers and pruners compared over seeds on real handwriting (BENCHMARKS 7).

Every arm searches `mlp_regularisation` on the same split of the 7,011 real KMNIST training
images of ../shared/data/kmnist-7k (5,842 train / 1,169 validation, split seed 0), with the
same epoch budget per trial (the space's 10) and the same wall-clock budget per run. Each
run is one process with one torch thread and its own SQLite study; two run at a time.
The product arms drive the product's own worker loop (`search.worker.run_worker`: the
shared Objective, per-trial evidence, the study's precision `auto`); only the sampler, the
pruner and whether the documented experiments are replayed differ. The yardstick of every
arm: the best validation accuracy of a completed trial (the value `export` picks by).

    .venv/bin/python benchmarks/search_arms.py             # missing runs, retrains, analysis
    .venv/bin/python benchmarks/search_arms.py --analyse   # analysis of the runs on disk only
    .venv/bin/python benchmarks/search_arms.py --replot    # the figures again, from the results file
    .venv/bin/python benchmarks/search_arms.py --quick     # a smoke run (seconds, not kept)

Resumable: each run writes results/search_arms/runs/ARM-seed-S.json and each retrain
results/search_arms/retrain/ARM-seed-S.json; existing files are not run again.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from common import KMNIST_7K, RESULTS, copy_root, first_reaching, machine, write_results
from optuna.trial import FrozenTrial, TrialState

REPO = Path(__file__).resolve().parents[1]
SOURCE = KMNIST_7K
OUT = RESULTS / "search_arms"
DATASET = "kmnist"
SPLIT_SEED = 0  # one validation split for every run; the run's seed drives sampler and training
VAL_FRACTION = 1 / 6
BUDGET_S = 120.0
EPOCHS = 10
SEEDS = (0, 1, 2, 3, 4, 5, 6)
PARALLEL = 2
LEVELS = (0.85, 0.88, 0.90, 0.91, 0.92, 0.925)  # fixed before the full run
FRACTIONS = (0.25, 0.5, 1.0)
BOOTSTRAP = 10_000
RETRAIN_ARMS = 3


# --- the arms ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Arm:
    name: str
    label: str
    replay: bool
    sampler: Callable[[int], optuna.samplers.BaseSampler] | None  # None: Optuna's example
    pruner: Callable[[int], optuna.pruners.BasePruner] | None


def _arms() -> dict[str, Arm]:
    from search.study import make_pruner, make_sampler
    from spaces.mlp_regularisation import MLP_REGULARISATION as space

    warmup = space.pruner_warmup(EPOCHS)

    def median() -> optuna.pruners.BasePruner:
        return make_pruner("median", EPOCHS, warmup)

    arms = [
        Arm("default", "replay + TPE + median pruner (today's default)", True,
            make_sampler, lambda _: median()),
        Arm("no_replay", "TPE + median pruner, no replay", False, make_sampler, lambda _: median()),
        Arm("tpe_asha", "replay + TPE + successive halving (ASHA)", True, make_sampler,
            lambda _: optuna.pruners.SuccessiveHalvingPruner(min_resource=warmup, reduction_factor=3)),
        Arm("tpe_hyperband", "replay + TPE + hyperband", True, make_sampler,
            lambda _: make_pruner("hyperband", EPOCHS, warmup)),
        Arm("gp_median", "replay + GP sampler + median pruner", True,
            lambda seed: optuna.samplers.GPSampler(seed=seed), lambda _: median()),
        Arm("tpe_multivariate", "replay + TPE(multivariate, group) + median pruner", True,
            lambda seed: optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True),
            lambda _: median()),
        Arm("tpe_patient", "replay + TPE + patient(median, 2 epochs)", True, make_sampler,
            lambda _: optuna.pruners.PatientPruner(median(), patience=2)),
        # the default's pruner warm-up, one epoch sooner and three later
        Arm("median_warmup1", "replay + TPE + median pruner, warm-up 1 epoch", True, make_sampler,
            lambda _: make_pruner("median", EPOCHS, 1)),
        Arm("median_warmup5", "replay + TPE + median pruner, warm-up 5 epochs", True, make_sampler,
            lambda _: make_pruner("median", EPOCHS, 5)),
        Arm("random", "random search, no pruning, no replay", False,
            lambda seed: optuna.samplers.RandomSampler(seed=seed),
            lambda _: optuna.pruners.NopPruner()),
        Arm("optuna_example", "Optuna's example (pytorch_simple.py)", False, None, None),
    ]
    return {arm.name: arm for arm in arms}


# --- one run (a subprocess) -------------------------------------------------------------------

def run_product_arm(arm: Arm, seed: int, budget: float, data_dir: Path, work: Path) -> dict[str, Any]:
    import torch
    from rich.console import Console

    from objectives.data import load_search_data
    from objectives.training import resolve_precision
    from search.export import export_config
    from search.study import SearchSettings, enqueue_documented, open_study
    from search.worker import WorkerSettings, run_worker
    from spaces.mlp_regularisation import MLP_REGULARISATION as space
    from storage.urls import open_storage

    url = f"sqlite:///{work}/study.db"
    data = load_search_data(DATASET, data_dir, VAL_FRACTION, SPLIT_SEED, torch.device("cpu"))
    study = open_study(open_storage(url), arm.name, space, DATASET, arm.sampler(seed), arm.pruner(seed))
    # what `start` records, so `export` gives the config retrain needs
    SearchSettings(VAL_FRACTION, SPLIT_SEED, data.split_hash, EPOCHS, arm.name, 10**6, "auto").save(study)
    if arm.replay:
        enqueue_documented(study, space)
    started = time.time()
    settings = WorkerSettings(10**6, EPOCHS, seed, work / "artifacts", 1, started + budget, precision="auto")
    run_worker(study, space, data, settings, Console(quiet=True), show_progress=False)
    trials = timeline(study, started, budget, lambda t: t.value)
    best = best_within(study, trials, budget)
    return {"precision": resolve_precision("auto", torch.device("cpu")),
            "train_images": len(data.train), "val_images": len(data.val),
            "images_per_epoch": len(data.train), "trials": trials,
            "best_config": best and export_config(study, best, url)}


def run_example_arm(seed: int, budget: float, data_dir: Path, work: Path,
                    n_trials: int | None = None) -> dict[str, Any]:
    from search_efficiency import EXAMPLE_TRAIN_EXAMPLES, ExampleObjective, example_root

    from storage.urls import open_storage

    root, val_images, val_labels = example_root(data_dir, work / "example-root")
    study = optuna.create_study(study_name="optuna_example", storage=open_storage(f"sqlite:///{work}/study.db"),
                                sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.MedianPruner(), direction="maximize")
    objective = ExampleObjective(root, val_images, val_labels, seed=seed)
    started = time.time()
    study.optimize(objective, n_trials=n_trials, timeout=budget)
    trials = timeline(study, started, budget, lambda t: t.user_attrs.get("yardstick_accuracy"))
    return {"precision": "fp32", "val_images": len(val_labels),
            "images_per_epoch": EXAMPLE_TRAIN_EXAMPLES, "trials": trials, "best_config": None}


def timeline(study: optuna.Study, started: float, budget: float,
             yardstick: Callable[[FrozenTrial], float | None]) -> list[dict[str, Any]]:
    """Every finished trial in the order it finished: seconds since the run started, epochs
    trained so far, and the best yardstick so far among trials that finished in the budget."""
    finished = [t for t in study.get_trials(deepcopy=False) if t.datetime_complete is not None]
    finished.sort(key=lambda t: t.datetime_complete)
    rows, epochs, best = [], 0, 0.0
    for t in finished:
        elapsed = t.datetime_complete.timestamp() - started
        epochs += len(t.intermediate_values)
        score = yardstick(t) if t.state == TrialState.COMPLETE else None
        if score is not None and elapsed <= budget:
            best = max(best, score)
        rows.append({"trial": t.number, "source": t.user_attrs.get("documented_experiment", "sampled"),
                     "state": t.state.name.lower(), "epochs": len(t.intermediate_values),
                     "value": None if score is None else round(score, 4), "elapsed_s": round(elapsed, 2),
                     "cumulative_epochs": epochs, "best_so_far": round(best, 4)})
    return rows


def best_within(study: optuna.Study, trials: list[dict[str, Any]], budget: float) -> FrozenTrial | None:
    scored = [t for t in trials if t["value"] is not None and t["elapsed_s"] <= budget]
    if not scored:
        return None
    number = max(scored, key=lambda t: (t["value"], -t["elapsed_s"]))["trial"]
    return study.get_trials(deepcopy=False)[number]


def run_one(arm_name: str, seed: int, budget: float, data_dir: Path, out: Path) -> None:
    import torch
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    arm = _arms()[arm_name]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix=f"arm-{arm_name}-{seed}-") as tmp:
        work = Path(tmp)
        if arm.sampler is None:
            result = run_example_arm(seed, budget, data_dir, work)
        else:
            result = run_product_arm(arm, seed, budget, data_dir, work)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    payload = {"arm": arm_name, "label": arm.label, "seed": seed, "budget_s": budget,
               "epochs_per_trial": EPOCHS, "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(),
               "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
               "load_average_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
               **result}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=1, default=str) + "\n")


def retrain_one(arm_name: str, seed: int, run_file: Path, data_dir: Path, out: Path) -> None:
    """The run's best trial, exported, retrained once on all 7,011 training images and tested on
    the official 10,000 test images (fp32, one thread, as `kmnist-search retrain` does it)."""
    config = json.loads(run_file.read_text())["best_config"]
    with tempfile.TemporaryDirectory(prefix="arm-retrain-") as tmp:
        path = Path(tmp) / "best.json"
        path.write_text(json.dumps(config))
        command = [sys.executable, "-m", "search.cli", "retrain", str(path), "--seeds", "1",
                   "--data-dir", str(data_dir), "--device", "cpu", "--threads", "1",
                   "-o", str(Path(tmp) / "run")]
        subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
        metrics = json.loads((Path(tmp) / "run" / "metrics.json").read_text())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "arm": arm_name, "seed": seed, "trial": config["provenance"]["trial"],
        "source": config["provenance"]["source"],
        "validation_accuracy": config["provenance"]["validation_accuracy"],
        "epochs": config["epochs"], "params": config["params"],
        "test_accuracy": metrics["test_accuracy"]["mean"], "metrics": metrics["test_accuracy"]},
        indent=1) + "\n")


# --- running them, two at a time -----------------------------------------------------------------

def run_all(jobs: list[list[str]], parallel: int) -> int:
    """Run each command line as a subprocess, `parallel` at a time, one torch thread each; how many
    failed (each is reported, and the others still run)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    pending, running, failed = list(jobs), [], 0
    while pending or running:
        while pending and len(running) < parallel:
            command = pending.pop(0)
            print(f"  start {' '.join(command[2:])}", flush=True)
            running.append((command, subprocess.Popen([sys.executable, *command], env=env, cwd=REPO)))
        time.sleep(1)
        for entry in list(running):
            command, process = entry
            if process.poll() is not None:
                running.remove(entry)
                if process.returncode:
                    failed += 1
                    print(f"  FAILED ({process.returncode}): {' '.join(command)}", flush=True)
    return failed


# --- analysis ---------------------------------------------------------------------------------

def best_at(run: dict[str, Any], seconds: float) -> float:
    best = 0.0
    for t in run["trials"]:
        if t["elapsed_s"] <= seconds and t["value"] is not None:
            best = max(best, t["value"])
    return best


def area_under_curve(run: dict[str, Any]) -> float:
    """Mean of the best-so-far accuracy over the budget (0 until a trial completes)."""
    budget, area, last_t, last_best = run["budget_s"], 0.0, 0.0, 0.0
    for t in run["trials"]:
        if t["elapsed_s"] > budget:
            break
        area += last_best * (t["elapsed_s"] - last_t)
        last_t, last_best = t["elapsed_s"], t["best_so_far"]
    return (area + last_best * (budget - last_t)) / budget


def spread(values: list[float]) -> dict[str, float]:
    return {"median": round(float(np.median(values)), 4), "min": round(min(values), 4),
            "max": round(max(values), 4), "q1": round(float(np.percentile(values, 25)), 4),
            "q3": round(float(np.percentile(values, 75)), 4)}


def censored_median(values: list[float | None]) -> float | None:
    """Median where None means 'not within the budget' (larger than any number): None when
    at least half the seeds never got there."""
    ordered = sorted(values, key=lambda v: (v is None, v or 0.0))
    middle = ordered[(len(ordered) - 1) // 2] if len(ordered) % 2 else None
    if len(ordered) % 2 == 0:
        low, high = ordered[len(ordered) // 2 - 1], ordered[len(ordered) // 2]
        middle = None if low is None or high is None else (low + high) / 2
    return middle


def paired(default: list[float], other: list[float], rng: np.random.Generator) -> dict[str, Any]:
    """other - default, paired by seed: mean, bootstrap 95 % interval, Wilcoxon signed-rank p.
    A difference counts only when both agree: the percentile bootstrap of a few seeds is too
    narrow on its own."""
    from scipy.stats import wilcoxon

    diff = np.array(other) - np.array(default)
    means = rng.choice(diff, size=(BOOTSTRAP, len(diff)), replace=True).mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    p = float(wilcoxon(diff).pvalue) if np.any(diff != 0) else 1.0
    if low > 0 and p < 0.05:
        verdict = "better than the default"
    elif high < 0 and p < 0.05:
        verdict = "worse than the default"
    else:
        verdict = "no detectable difference"
    return {"mean_difference": round(float(diff.mean()), 4), "per_seed": [round(float(d), 4) for d in diff],
            "bootstrap_95": [round(float(low), 4), round(float(high), 4)], "wilcoxon_p": round(p, 4),
            "verdict": verdict}


def analyse(runs: dict[str, dict[int, dict[str, Any]]], retrains: dict[str, dict[int, dict[str, Any]]],
            arms: dict[str, Arm]) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    summary: dict[str, Any] = {}
    for name, by_seed in runs.items():
        seeds = sorted(by_seed)
        rs = [by_seed[s] for s in seeds]
        budget = rs[0]["budget_s"]
        row: dict[str, Any] = {"label": arms[name].label, "seeds": seeds}
        for f in FRACTIONS:
            row[f"best_at_{int(f * 100)}pct"] = spread([best_at(r, f * budget) for r in rs])
        row["area_under_curve"] = spread([area_under_curve(r) for r in rs])
        row["trials"] = spread([float(sum(t["elapsed_s"] <= budget for t in r["trials"])) for r in rs])
        row["epochs_trained"] = spread([float(max([t["cumulative_epochs"] for t in r["trials"]
                                                   if t["elapsed_s"] <= budget], default=0)) for r in rs])
        row["levels"] = {}
        for level in LEVELS:
            hits = [first_reaching(r, level) for r in rs]
            seconds = [h and h["elapsed_s"] for h in hits]
            epochs = [h and h["cumulative_epochs"] for h in hits]
            row["levels"][f"{level:.3f}"] = {
                "seconds_per_seed": seconds, "epochs_per_seed": epochs,
                "median_seconds": censored_median(seconds), "median_epochs": censored_median(epochs),
                "reached": sum(h is not None for h in hits)}
        if name in retrains:
            tests = [retrains[name][s]["test_accuracy"] for s in sorted(retrains[name])]
            row["retrained_test_accuracy"] = {"per_seed": tests, **spread(tests)}
        summary[name] = row
    ranking = sorted(summary, key=lambda n: (summary[n]["best_at_100pct"]["median"],
                                             summary[n]["area_under_curve"]["median"]), reverse=True)
    comparisons = {}
    if "default" in runs:
        for name in runs:
            common = sorted(set(runs[name]) & set(runs["default"]))
            if name == "default" or len(common) < 2:
                continue
            comparisons[name] = {
                "seeds": common,
                "final_best": paired([best_at(runs["default"][s], BUDGET_S) for s in common],
                                     [best_at(runs[name][s], BUDGET_S) for s in common], rng),
                "area_under_curve": paired([area_under_curve(runs["default"][s]) for s in common],
                                           [area_under_curve(runs[name][s]) for s in common], rng)}
            tested = sorted(set(retrains.get(name, {})) & set(retrains.get("default", {})))
            if len(tested) >= 2:
                comparisons[name]["retrained_test_accuracy"] = paired(
                    [retrains["default"][s]["test_accuracy"] for s in tested],
                    [retrains[name][s]["test_accuracy"] for s in tested], rng)
    return {"arms": summary, "ranking_by_median_final_best": ranking, "paired_with_default": comparisons,
            "target": target_check(summary)}


def target_check(summary: dict[str, Any]) -> dict[str, Any]:
    """The default's median time to each level against a third of the example's."""
    if "default" not in summary or "optuna_example" not in summary:
        return {}
    rows = {}
    for level in LEVELS:
        key = f"{level:.3f}"
        mine = summary["default"]["levels"][key]["median_seconds"]
        theirs = summary["optuna_example"]["levels"][key]["median_seconds"]
        if mine is None and theirs is None:
            rows[key] = {"default_s": None, "example_s": None, "met": None}  # neither got there
        elif mine is None:
            rows[key] = {"default_s": None, "example_s": theirs, "met": False}
        elif theirs is None:  # the example's median is beyond the budget: a bound, not a ratio
            rows[key] = {"default_s": mine, "example_s": f"> {BUDGET_S:g}",
                         "ratio_at_most": round(mine / BUDGET_S, 3), "met": mine <= BUDGET_S / 3}
        else:
            rows[key] = {"default_s": mine, "example_s": theirs, "ratio": round(mine / theirs, 3),
                         "met": mine <= theirs / 3}
    return rows


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}"


def _range(row: dict[str, float]) -> str:
    return f"{_pct(row['median'])} ({_pct(row['min'])}-{_pct(row['max'])})"


def tables(results: dict[str, Any]) -> str:
    """The results as the markdown tables BENCHMARKS.md shows."""
    arms, order = results["arms"], results["ranking_by_median_final_best"]
    budget = results["budget_s_per_run"]
    lines = [f"Best validation accuracy (%) at 25/50/100 % of the {budget:g} s budget: median "
             "(min-max) over seeds; AUC: the best-so-far averaged over the budget; trials and epochs "
             "within the budget (medians); retrained: test accuracy (%) on the official 10,000 images "
             "of each seed's best trial retrained on all 7,011 training images, median (min-max).", "",
             "| rank | arm | seeds | at 25 % | at 50 % | at 100 % | AUC | trials | epochs | retrained test |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for rank, name in enumerate(order, 1):
        row = arms[name]
        test = row.get("retrained_test_accuracy")
        lines.append(f"| {rank} | `{name}`: {row['label']} | {len(row['seeds'])} | "
                     f"{_range(row['best_at_25pct'])} | {_range(row['best_at_50pct'])} | "
                     f"{_range(row['best_at_100pct'])} | "
                     f"{_pct(row['area_under_curve']['median'])} | {row['trials']['median']:.0f} | "
                     f"{row['epochs_trained']['median']:.0f} | {_range(test) if test else '-'} |")
    lines += ["", "Seconds (epochs) to first reach a level, median over seeds; 'never' where at least "
              "half the seeds did not reach it within the budget; n/N: seeds that reached it.", "",
              "| arm | " + " | ".join(f"{float(level) * 100:g} %" for level in results["levels"]) + " |",
              "|---|" + "---|" * len(results["levels"])]
    for name in order:
        cells = []
        for level in results["levels"]:
            hit = arms[name]["levels"][f"{level:.3f}"]
            seconds, epochs, n = hit["median_seconds"], hit["median_epochs"], hit["reached"]
            cells.append(f"never ({n}/{len(arms[name]['seeds'])})" if seconds is None
                         else f"{seconds:.1f} s ({epochs:g}) {n}/{len(arms[name]['seeds'])}")
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    lines += ["", "Paired with the default by seed (other minus default, points of accuracy): mean, "
              "bootstrap 95 % interval, Wilcoxon signed-rank p; a difference is named only when the "
              "interval excludes 0 and p < 0.05.", "",
              "| arm | final best: mean [95 %] | p | verdict | AUC: mean [95 %] | p | verdict |",
              "|---|---|---|---|---|---|---|"]
    for name, c in results["paired_with_default"].items():
        f, a = c["final_best"], c["area_under_curve"]
        lines.append(f"| `{name}` | {f['mean_difference'] * 100:+.2f} [{f['bootstrap_95'][0] * 100:+.2f}, "
                     f"{f['bootstrap_95'][1] * 100:+.2f}] | {f['wilcoxon_p']:.3f} | {f['verdict']} | "
                     f"{a['mean_difference'] * 100:+.2f} [{a['bootstrap_95'][0] * 100:+.2f}, "
                     f"{a['bootstrap_95'][1] * 100:+.2f}] | {a['wilcoxon_p']:.3f} | {a['verdict']} |")
    tested = {name: c["retrained_test_accuracy"] for name, c in results["paired_with_default"].items()
              if "retrained_test_accuracy" in c}
    if tested:
        lines += ["", "Retrained test accuracy, paired with the default's by seed (points):", "",
                  "| arm | mean [95 %] | p | verdict |", "|---|---|---|---|"]
        for name, t in tested.items():
            low, high = t["bootstrap_95"]
            lines.append(f"| `{name}` | {t['mean_difference'] * 100:+.2f} [{low * 100:+.2f}, "
                         f"{high * 100:+.2f}] | {t['wilcoxon_p']:.3f} | {t['verdict']} |")
    if results["target"]:
        lines += ["", "| level | default, median s | Optuna's example, median s | ratio | met (<= 1/3)? |",
                  "|---|---|---|---|---|"]
        for level, row in results["target"].items():
            ratio = row.get("ratio", f"<= {row['ratio_at_most']}" if "ratio_at_most" in row else "-")
            lines.append(f"| {float(level) * 100:g} % | {row['default_s']} | {row['example_s']} | {ratio} | "
                         f"{ {True: 'yes', False: 'no', None: 'neither reached it'}[row['met']]} |")
    return "\n".join(lines) + "\n"


CURVE_POINTS = 61  # best-so-far sampled every 2 s of a 120 s run: enough to redraw the curves


def curve_table(runs: dict[str, dict[int, dict[str, Any]]]) -> dict[str, Any]:
    """Every run's best-so-far validation accuracy on one grid of seconds, by arm and seed: what
    the curve figure needs, small enough for the results file (the per-run files are not kept)."""
    table: dict[str, Any] = {}
    for name, by_seed in runs.items():
        budget = next(iter(by_seed.values()))["budget_s"]
        grid = np.linspace(0, budget, CURVE_POINTS)
        table[name] = {"seconds": [round(float(s), 2) for s in grid],
                       "best_so_far": {str(seed): [round(best_at(run, s), 4) for s in grid]
                                       for seed, run in sorted(by_seed.items())}}
    return table


def _ranked(names: list[str], ranking: list[str]) -> list[str]:
    return [n for n in ranking if n in names] + [n for n in names if n not in ranking]


def plot_curves(curves: dict[str, Any], ranking: list[str], path: Path) -> Path:
    """Small multiples, one panel per arm in ranking order: its seeds' median best-so-far with
    their min-max band, over the default's median for reference."""
    import matplotlib.pyplot as plt

    from search.figure_style import COLOURS, WIDTH, figure_style, percent_axis, save_figure

    names = _ranked(list(curves), ranking)
    columns = 4
    rows = -(-len(names) // columns)

    def spread_of(name: str) -> tuple[np.ndarray, np.ndarray]:
        table = np.array(list(curves[name]["best_so_far"].values())) * 100
        table = np.where(table > 0, table, np.nan)  # before a seed's first completed trial
        return np.array(curves[name]["seconds"]), table

    with figure_style():
        fig, axes = plt.subplots(rows, columns, figsize=(WIDTH, 0.8 + 1.9 * rows), sharex=True, sharey=True,
                                 squeeze=False, layout="constrained")
        reference = spread_of("default") if "default" in curves else None
        for ax, name in zip(axes.flat, names, strict=False):
            seconds, table = spread_of(name)
            seen = ~np.isnan(table).all(axis=0)
            low, mid, high = (np.nanmin(table[:, seen], axis=0), np.nanmedian(table[:, seen], axis=0),
                              np.nanmax(table[:, seen], axis=0))
            ax.fill_between(seconds[seen], low, high, color=COLOURS["measured"], alpha=0.2, linewidth=0,
                            label="min-max over seeds")
            ax.plot(seconds[seen], mid, color=COLOURS["measured"], label="median over seeds")
            if reference is not None and name != "default":
                ref_s, ref = reference
                ok = ~np.isnan(ref).all(axis=0)
                ax.plot(ref_s[ok], np.nanmedian(ref[:, ok], axis=0), color=COLOURS["reference"],
                        linestyle="--", linewidth=1.1, label="default's median")
            ax.set_title(f"{name} (n={len(table)})", fontsize=9)
        for ax in list(axes.flat)[len(names):]:
            ax.axis("off")
        percent_axis(axes[0, 0])
        axes[0, 0].set_ylim(88, 93)
        for ax in axes[:, 0]:
            ax.set_ylabel("best val. accuracy")
        for column in range(columns):
            drawn = [r for r in range(rows) if r * columns + column < len(names)]
            if drawn:
                axes[drawn[-1], column].set_xlabel("seconds (one thread)")
                axes[drawn[-1], column].xaxis.set_tick_params(labelbottom=True)
        handles, labels = max((ax.get_legend_handles_labels() for ax in axes.flat), key=lambda h: len(h[0]))
        fig.legend(handles, labels, loc="outside lower center", ncols=3)
        fig.suptitle("Best validation accuracy so far, per arm (n: seeds; below 88% not shown)")
        return save_figure(fig, path)


def plot_summary(results: dict[str, Any], path: Path) -> Path:
    """What the results file alone supports: each arm's best validation accuracy at the end of
    the budget (every seed's spread) and halfway, and the seconds each seed took to reach the
    two highest levels (a cross past the budget: never)."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from search.figure_style import WIDTH, figure_style, percent_axis, save_figure

    arms, budget = results["arms"], results["budget_s_per_run"]
    names = _ranked(list(arms), results["ranking_by_median_final_best"])
    y = np.arange(len(names))[::-1]
    levels = [f"{level:.3f}" for level in results["levels"]][-2:]
    never = budget * 1.17
    with figure_style():
        fig, (best_ax, time_ax) = plt.subplots(1, 2, figsize=(WIDTH, 0.9 + 0.36 * len(names)), sharey=True,
                                               width_ratios=(1.1, 1), layout="constrained")
        for row, name in zip(y, names, strict=True):
            end, half = arms[name]["best_at_100pct"], arms[name]["best_at_50pct"]
            best_ax.plot([100 * end["min"], 100 * end["max"]], [row, row], color="tab:blue", linewidth=1)
            best_ax.plot([100 * end["q1"], 100 * end["q3"]], [row, row], color="tab:blue", linewidth=4.5,
                         solid_capstyle="butt")
            best_ax.plot(100 * end["median"], row, "o", color="white", markeredgecolor="tab:blue",
                         markersize=5)
            best_ax.plot(100 * half["median"], row + 0.28, "v", color="tab:orange", markersize=5)
            for level, colour, shift in zip(levels, ("tab:green", "tab:purple"), (0.15, -0.15), strict=True):
                seconds = arms[name]["levels"][level]["seconds_per_seed"]
                reached = [s for s in seconds if s is not None]
                time_ax.plot(reached, [row + shift] * len(reached), "o", color=colour, markersize=4,
                             alpha=0.8)
                missed = len(seconds) - len(reached)
                if missed:
                    time_ax.plot([never], [row + shift], "x", color=colour, markersize=6)
                    time_ax.annotate(f"{missed}", (never, row + shift), textcoords="offset points",
                                     xytext=(6, 0), va="center", fontsize=7, color=colour)
        best_ax.set_yticks(y, names)
        best_ax.set_xlabel("best validation accuracy")
        percent_axis(best_ax, "x")
        best_ax.set_title(f"best of each seed's {budget:g} s run", fontsize=9)
        time_ax.axvline(budget, color="0.5", linewidth=0.8)
        time_ax.set_xlim(0, budget * 1.27)
        time_ax.set_xticks([0, 30, 60, 90, budget, never], ["0", "30", "60", "90", f"{budget:g}", "never"])
        time_ax.set_xlabel("seconds to first reach it (one thread)")
        time_ax.set_title("time to a level: a dot per seed, x: never", fontsize=9)
        colours = ("tab:green", "tab:purple")
        fig.legend(handles=[
            Line2D([], [], color="tab:blue", linewidth=1, marker="o", markerfacecolor="white",
                   label="end of budget: median, quartiles, min-max"),
            Line2D([], [], color="tab:orange", marker="v", linestyle="", label="halfway: median"),
            *(Line2D([], [], color=c, marker="o", linestyle="", label=f"reached {100 * float(lv):g}%")
              for lv, c in zip(levels, colours, strict=True))],
            loc="outside lower center", ncols=4, fontsize=8)
        fig.suptitle(f"{results['space']} on 5,842 real KMNIST training images: {len(names)} arms, "
                     f"{max(len(a['seeds']) for a in arms.values())} seeds each")
        return save_figure(fig, path)


def figures(results: dict[str, Any], png: Path) -> list[Path]:
    """PNG: the summary every results file supports; PNG-curves.png: the curves, where the
    results hold them (files written before they did, do not)."""
    paths = [plot_summary(results, png)]
    if results.get("curves"):
        paths.append(plot_curves(results["curves"], results["ranking_by_median_final_best"],
                                 png.with_name(f"{png.stem}-curves.png")))
    return paths


def load_all(folder: Path) -> dict[str, dict[int, dict[str, Any]]]:
    found: dict[str, dict[int, dict[str, Any]]] = {}
    for path in sorted(folder.glob("*-seed-*.json")):
        run = json.loads(path.read_text())
        found.setdefault(run["arm"], {})[run["seed"]] = run
    return found


# --- the command ------------------------------------------------------------------------------

def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 2 arms x 1 seed x 20 s, not kept")
    p.add_argument("--analyse", action="store_true", help="only analyse the runs already on disk")
    p.add_argument("--arms", default=None, help="comma-separated arm names (default: all)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default 0-6)")
    p.add_argument("--budget", type=float, default=None, help=f"seconds per run (default {BUDGET_S:g})")
    p.add_argument("--parallel", type=int, default=PARALLEL)
    p.add_argument("--source", type=Path, default=SOURCE)
    p.add_argument("--run", nargs=2, metavar=("ARM", "SEED"), help=argparse.SUPPRESS)
    p.add_argument("--retrain", nargs=2, metavar=("ARM", "SEED"), help=argparse.SUPPRESS)
    p.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out-dir", type=Path, default=OUT, help=argparse.SUPPRESS)
    p.add_argument("--replot", action="store_true",
                   help="only redraw the figures from results/search_arms.json (no runs needed)")
    args = p.parse_args()
    if args.replot:
        path = RESULTS / "search_arms.json"
        print("wrote " + ", ".join(map(str, figures(json.loads(path.read_text()), path.with_suffix(".png")))))
        return
    out = Path(tempfile.mkdtemp(prefix="search-arms-quick-")) if args.quick else args.out_dir
    if args.run:
        run_one(args.run[0], int(args.run[1]), args.budget or BUDGET_S, args.data_dir,
                out / "runs" / f"{args.run[0]}-seed-{args.run[1]}.json")
        return
    if args.retrain:
        arm, seed = args.retrain
        retrain_one(arm, int(seed), out / "runs" / f"{arm}-seed-{seed}.json", args.data_dir,
                    out / "retrain" / f"{arm}-seed-{seed}.json")
        return
    if not (args.source / "KMNIST" / "raw").is_dir():
        print(f"skipped: no KMNIST root at {args.source} (see ../shared/data/README)")
        return
    arms = _arms()
    quick_arms = ["default", "optuna_example"]
    chosen = args.arms.split(",") if args.arms else (quick_arms if args.quick else list(arms))
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else ([0] if args.quick else list(SEEDS))
    budget = args.budget or (20.0 if args.quick else BUDGET_S)
    machine_before, failed = machine(), 0
    with tempfile.TemporaryDirectory(prefix="search-arms-data-") as tmp:
        data_dir = Path(tmp) / "kmnist-7k"
        copy_root(args.source, data_dir)  # nothing may write into ../shared
        if not args.analyse:
            # seed-major, so a part-run leaves whole seeds behind
            jobs = [["benchmarks/search_arms.py", "--run", arm, str(seed), "--budget", str(budget),
                     "--data-dir", str(data_dir), "--out-dir", str(out)]
                    for seed in seeds for arm in chosen
                    if not (out / "runs" / f"{arm}-seed-{seed}.json").exists()]
            print(f"{len(jobs)} runs of {budget:g} s, {args.parallel} at a time "
                  f"(about {len(jobs) * (budget + 15) / args.parallel / 60:.0f} min)", flush=True)
            failed += run_all(jobs, args.parallel)
        runs = {name: by_seed for name, by_seed in load_all(out / "runs").items() if name in chosen}
        first = analyse(runs, {}, arms)
        top = [name for name in first["ranking_by_median_final_best"] if name != "optuna_example"]
        top = top[:RETRAIN_ARMS]
        if "default" in runs and "default" not in top:  # the default is always checked on the test set
            top.append("default")
        if not args.analyse:
            jobs = [["benchmarks/search_arms.py", "--retrain", arm, str(seed), "--data-dir", str(data_dir),
                     "--out-dir", str(out)]
                    for arm in top for seed in sorted(runs[arm])
                    if not (out / "retrain" / f"{arm}-seed-{seed}.json").exists()
                    and runs[arm][seed]["best_config"] is not None]
            print(f"{len(jobs)} retrains of the best arms' best trials: {', '.join(top)}", flush=True)
            failed += run_all(jobs, args.parallel)
    retrains = {name: by_seed for name, by_seed in load_all(out / "retrain").items() if name in runs}
    results = {"benchmark": "search_arms", "quick": args.quick, "machine": machine_before,
               "machine_after": {"load_average_1m": machine()["load_average_1m"]},
               "data": "kmnist-7k: the first 7,011 official KMNIST training images (split seed 0: "
                       "5,842 train / 1,169 validation) and the official 10,000 test images (retrains only)",
               "space": "mlp_regularisation", "epochs_per_trial": EPOCHS, "budget_s_per_run": budget,
               "levels": LEVELS, "bootstrap_resamples": BOOTSTRAP, "retrained_arms": sorted(retrains),
               **analyse(runs, retrains, arms), "curves": curve_table(runs)}
    path = write_results("search_arms", results, quick=args.quick)
    png = path.with_suffix(".png") if not args.quick else out / "search_arms.png"
    figures(results, png)
    (png.with_suffix(".md")).write_text(tables(results))
    for name in results["ranking_by_median_final_best"]:
        row = results["arms"][name]
        print(f"{name:17s} best {row['best_at_100pct']['median']:.4f} "
              f"[{row['best_at_100pct']['min']:.4f}-{row['best_at_100pct']['max']:.4f}] "
              f"AUC {row['area_under_curve']['median']:.4f} trials {row['trials']['median']:.0f} "
              f"test {row.get('retrained_test_accuracy', {}).get('median', '-')}")
    for name, comparison in results["paired_with_default"].items():
        print(f"{name:17s} vs default: final {comparison['final_best']['mean_difference']:+.4f} "
              f"{comparison['final_best']['bootstrap_95']} p={comparison['final_best']['wilcoxon_p']} "
              f"{comparison['final_best']['verdict']}")
    print(f"wrote {path} and {png}")
    if failed:
        sys.exit(f"{failed} run(s) failed (their errors are above): run the same command to retry them")


if __name__ == "__main__":
    main()
