"""Searching within a deployment budget, on real KMNIST: budgeted and free searches, their fronts,
and the smallest CNN within a point of the best one, retrained and tested on the official test set.

Everything runs through the product's own CLI (subprocesses), one torch thread per process,
two processes at a time:

1. `start --timeout` for cnn_beyond with `--max-params` and without (side by side), then the
   same for mlp_beyond (its smallest model has 50,890 parameters, so its budget is looser).
   The CNN searches skip the replays and train 5 epochs (the space's default is 15): on a
   shared, loaded 2-core machine, the seed-004 CNN alone takes 20 s per epoch there;
2. mlp_beyond under `--max-params 20000`, which no MLP of the space meets: the search must stop
   after a few trials with one line naming the smallest configuration;
3. `front --cost params` (and `--cost latency` for the CNNs) on each study, PNGs kept;
4. of all completed CNN trials, the best and the cheapest within `--within-points` of it
   (validation accuracy), exported and retrained (`retrain`) on the whole training set and
   tested on the official 10,000 test images; their latencies re-measured here, side by side.

    .venv/bin/python benchmarks/deployment_budget.py [--cnn-minutes 12] [--mlp-minutes 6] [--quick]
        [--out DIR] [--reuse]
    .venv/bin/python benchmarks/deployment_budget.py --replot   # the front figures from the results file

Writes results/deployment_budget.json and results/deployment_budget-*.png (or .quick.tmp).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
from common import KMNIST_7K, RESULTS, copy_root, machine, parser, write_results
from optuna.trial import TrialState

from objectives.cost import measure_latency
from objectives.models import build_model, model_config
from search.export import checked_params
from search.front import COSTS, pareto_front, smallest_within
from search.study import trial_source
from storage.configs import read_config

REPO = Path(__file__).resolve().parent.parent
SOURCE = KMNIST_7K
CNN_BUDGET = 20_000  # parameters
MLP_BUDGET = 110_000  # the smallest mlp_beyond model has 50,890 parameters; 128 wide has 101,770
UNMEETABLE_MLP_BUDGET = 20_000
LATENCY_REPEATS = 5
CNN_OPTIONS = ("--no-replay", "--epochs", "5")
SEARCHES = (  # (study, space, --max-params or None, more options), run in pairs
    ("cnn-budget", "cnn_beyond", CNN_BUDGET, CNN_OPTIONS), ("cnn-free", "cnn_beyond", None, CNN_OPTIONS),
    ("mlp-budget", "mlp_beyond", MLP_BUDGET, ()), ("mlp-free", "mlp_beyond", None, ()),
)


def kmnist_search(*args: str) -> list[str]:
    return [sys.executable, "-m", "search.cli", *args]


def cli(*args: str, log: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run one kmnist-search command, appending its output to `log`."""
    done = subprocess.run(kmnist_search(*args), cwd=REPO, capture_output=True, text=True)
    with log.open("a") as out:
        out.write(f"$ kmnist-search {' '.join(args)}\n{done.stdout}{done.stderr}")
    if check and done.returncode != 0:
        raise SystemExit(f"`kmnist-search {' '.join(args)}` failed ({done.returncode}): see {log}")
    return done


def search_command(study: str, space: str, budget: int | None, options: tuple[str, ...], storage: str,
                   root: Path, minutes: float, threads: int, quick: bool) -> list[str]:
    command = kmnist_search("start", "--space", space, "--study", study, "--trials", "10000", "--timeout",
                            f"{minutes:g}m", "--threads", str(threads), "--data-dir", str(root),
                            "--storage", storage, *options)
    if budget is not None:
        command += ["--max-params", str(budget)]
    if quick:
        command += ["--epochs", "1"]
    return command


def searched(storage: str, study: str) -> bool:
    """Whether `study` already holds finished trials (for --reuse)."""
    try:
        trials = optuna.load_study(study_name=study, storage=storage).get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    except KeyError:
        return False
    return bool(trials)


def run_pair(commands: list[list[str]], logs: list[Path]) -> dict[str, float]:
    """Run the commands side by side; returns each one's CPU seconds, by log name (on a loaded
    machine far below its wall time)."""
    processes = []
    for command, log in zip(commands, logs, strict=True):
        with log.open("w") as out:
            processes.append(subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT))
    cpu_seconds = {}
    for process, log in zip(processes, logs, strict=True):
        _, status, usage = os.wait4(process.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"a run failed: see {log}")
        cpu_seconds[log.stem] = round(usage.ru_utime + usage.ru_stime, 1)
    return cpu_seconds


def trial_summary(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    attrs = trial.user_attrs
    return {"trial": trial.number, "validation_accuracy": round(trial.value, 4),
            "param_count": attrs["param_count"], "forward_mflops": attrs["forward_mflops"],
            "latency_ms": attrs["latency_ms"], "latency_ms_batch256": attrs["latency_ms_batch256"],
            "source": trial_source(trial)}


def over_budget(trial: optuna.trial.FrozenTrial) -> bool:
    return any(v > 0 for v in trial.constraints.values())


def study_summary(study: optuna.Study, budget: int | None) -> dict[str, Any]:
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    complete = [t for t in finished if t.state == TrialState.COMPLETE]
    sampled = [t for t in finished if trial_source(t) == "sampled"]  # not replays, not recipes
    startup = 10  # TPE's random start-up trials; after them it samples from its model
    over = [t for t in finished if over_budget(t)]
    summary: dict[str, Any] = {
        "budget_max_params": budget,
        "search_wall_minutes": round((max(t.datetime_complete for t in finished)
                                      - min(t.datetime_start for t in finished)).total_seconds() / 60, 1),
        "finished_trials": len(finished), "complete": len(complete),
        "pruned_by_learning_curve": sum(bool(t.intermediate_values) for t in finished
                                        if t.state == TrialState.PRUNED),
        "pruned_over_budget": len(over),
        "pruned_over_space_flop_cap": sum("cap of" in t.user_attrs.get("pruned_reason", "")
                                          for t in finished),
        "epochs_trained": sum(len(t.intermediate_values) for t in finished),
        "best": trial_summary(study.best_trial),
        "front_params": [trial_summary(t) for t in pareto_front(complete, COSTS["params"])],
        # every completed trial's costs, so the front figures can be drawn again (--replot)
        "completed_trials": [{"trial": t.number, "validation_accuracy": t.value,
                              **{c: t.user_attrs[c] for c in ("param_count", "latency_ms")
                                 if c in t.user_attrs}} for t in complete],
    }
    if budget is not None:
        # how often TPE proposed an over-budget model before and after its start-up trials
        for label, trials in (("first_10", sampled[:startup]), ("after", sampled[startup:])):
            summary[f"sampled_{label}"] = len(trials)
            share = sum(map(over_budget, trials)) / len(trials) if trials else None
            summary[f"over_budget_share_sampled_{label}"] = share and round(share, 2)
    return summary


def unmeetable_run(storage: str, root: Path, threads: int, log: Path) -> dict[str, Any]:
    if searched(storage, "mlp-unmeetable"):
        optuna.delete_study(study_name="mlp-unmeetable", storage=storage)
    started = time.perf_counter()
    done = cli("start", "--space", "mlp_beyond", "--study", "mlp-unmeetable", "--trials", "100", "--threads",
               str(threads), "--data-dir", str(root), "--storage", storage, "--max-params",
               str(UNMEETABLE_MLP_BUDGET), log=log, check=False)
    study = optuna.load_study(study_name="mlp-unmeetable", storage=storage)
    return {"budget_max_params": UNMEETABLE_MLP_BUDGET, "exit_code": done.returncode,
            "stderr": done.stderr.strip(),
            "trials_spent": len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))),
            "seconds": round(time.perf_counter() - started, 1)}


def median_latency(config: dict[str, Any]) -> dict[str, float]:
    space, params = checked_params(config)
    model = build_model(model_config(space.family, params, 10))
    runs = [measure_latency(model) for _ in range(LATENCY_REPEATS)]
    return {key: statistics.median(r[key] for r in runs) for key in ("latency_ms", "latency_ms_batch256")}


def retrain_pair(storage: str, picks: dict[str, tuple[str, int]], root: Path, folder: Path, threads: int,
                 seeds: dict[str, int], log: Path) -> dict[str, Any]:
    configs, commands, logs = {}, [], []
    if picks["best"] == picks["smallest_within"]:  # nothing cheaper lies within the points: train it once
        picks, seeds = {"best": picks["best"]}, {"best": max(seeds.values())}
    for name, (study, trial) in picks.items():
        configs[name] = folder / f"{name}.json"
        cli("export", "--study", study, "--storage", storage, "--trial", str(trial), "-o", str(configs[name]),
            "--force", log=log)
        commands.append(kmnist_search("retrain", str(configs[name]), "--seeds", str(seeds[name]), "-o",
                                      str(folder / f"run-{name}"), "--data-dir", str(root), "--force",
                                      "--threads", str(threads)))
        logs.append(folder / f"retrain-{name}.log")
    started = time.perf_counter()
    cpu_seconds = run_pair(commands, logs)
    results: dict[str, Any] = {"retrain_wall_minutes": round((time.perf_counter() - started) / 60, 1),
                               "retrain_cpu_seconds": cpu_seconds}
    for name, config_path in configs.items():
        config = read_config(config_path)
        metrics = json.loads((folder / f"run-{name}" / "metrics.json").read_text())
        results[name] = {"study": picks[name][0], "trial": picks[name][1], "epochs": config["epochs"],
                         "test_images": metrics["test_images"],
                         "test_accuracy_mean": metrics["test_accuracy"]["mean"],
                         "test_accuracy_std": metrics["test_accuracy"]["std"],
                         "test_accuracy_per_seed": metrics["test_accuracy"]["per_seed"],
                         "latency_remeasured": median_latency(config)}
    best = results["best"]
    small = results.setdefault("smallest_within", {**best, "same_trial_as_best": True})
    gap = best["test_accuracy_mean"] - small["test_accuracy_mean"]
    results["test_accuracy_gap_points"] = round(100 * gap, 2)
    results["latency_ratio_small_to_best"] = round(small["latency_remeasured"]["latency_ms"]
                                                   / best["latency_remeasured"]["latency_ms"], 3)
    return results


def replot(results: dict[str, Any], folder: Path, within_points: float) -> list[Path]:
    """The front figures again from a results file that lists every completed trial."""
    from objectives.budget import Budget
    from search.front import plot_front

    paths = []
    for study_name, summary in results["studies"].items():
        trials = []
        for row in summary["completed_trials"]:
            trial = optuna.trial.create_trial(value=row["validation_accuracy"], user_attrs=row)
            trial.number = row["trial"]
            trials.append(trial)
        budget = Budget(max_params=summary["budget_max_params"])
        for cost in ("params", "latency") if study_name.startswith("cnn") else ("params",):
            costed = [t for t in trials if COSTS[cost].attr in t.user_attrs]
            path = folder / f"deployment_budget-{study_name}-{cost}.png"
            paths.append(plot_front(costed, pareto_front(costed, COSTS[cost]), COSTS[cost], budget,
                                    f"{study_name}: validation accuracy against {COSTS[cost].unit}", path,
                                    smallest_within(costed, COSTS[cost], within_points)))
    return paths


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--cnn-minutes", type=float, default=12.0, help="--timeout of each CNN search")
    p.add_argument("--mlp-minutes", type=float, default=6.0, help="--timeout of each MLP search")
    p.add_argument("--reuse", action="store_true", help="skip the searches whose studies hold trials")
    p.add_argument("--within-points", type=float, default=1.0)
    p.add_argument("--seeds-best", type=int, default=1, help="retrain seeds of the best CNN (default 1)")
    p.add_argument("--seeds-small", type=int, default=2, help="retrain seeds of the small CNN (default 2)")
    p.add_argument("--source", type=Path, default=SOURCE,
                   help="KMNIST root with training and official test files")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "deployment-budget", help="studies and runs")
    p.add_argument("--replot", action="store_true",
                   help="only redraw the front figures from results/deployment_budget.json")
    args = p.parse_args()
    if args.replot:
        results = json.loads((RESULTS / "deployment_budget.json").read_text())
        if any("completed_trials" not in summary for summary in results["studies"].values()):
            raise SystemExit("deployment_budget: results/deployment_budget.json predates the list of "
                             "completed trials the figures need: run the benchmark again")
        print("wrote " + ", ".join(map(str, replot(results, RESULTS, args.within_points))))
        return
    minutes = {"cnn_beyond": 0.6, "mlp_beyond": 0.6} if args.quick else {"cnn_beyond": args.cnn_minutes,
                                                                          "mlp_beyond": args.mlp_minutes}
    if not (args.source / "KMNIST" / "raw" / "train-images-idx3-ubyte.gz").exists():
        print(f"skipped: no KMNIST root in {args.source} (pass --source DIR)")
        return
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    root, log = args.out / "root", args.out / "log.txt"
    if not root.exists():  # a copy: nothing is ever written next to the shared files
        copy_root(args.source, root)
    storage = f"sqlite:///{args.out / 'budget.db'}"
    before, started = machine(), time.perf_counter()
    cpu_seconds: dict[str, float] = {}
    for pair in (SEARCHES[:2], SEARCHES[2:]):
        pair = [search for search in pair if not (args.reuse and searched(storage, search[0]))]
        commands = [search_command(*search, storage, root, minutes[search[1]], args.threads, args.quick)
                    for search in pair]
        cpu_seconds |= run_pair(commands, [args.out / f"search-{search[0]}.log" for search in pair])
    results: dict[str, Any] = {
        "benchmark": "deployment_budget", "quick": args.quick, "machine": before,
        "data": f"{args.source.name}: 7,011 real KMNIST training images (the search validates on 1/6), "
                "the official 10,000 test images held out for retrain",
        "search_timeout_minutes": minutes, "threads_per_process": args.threads, "studies": {},
        "search_cpu_seconds": cpu_seconds,  # searches reused with --reuse are missing
        "unmeetable": unmeetable_run(storage, root, args.threads, log),
    }
    figures = RESULTS if not args.quick else args.out
    for study_name, _, budget, _ in SEARCHES:
        study = optuna.load_study(study_name=study_name, storage=storage)
        results["studies"][study_name] = study_summary(study, budget)
        for cost in ("params", "latency") if study_name.startswith("cnn") else ("params",):
            png = figures / f"deployment_budget-{study_name}-{cost}.png"
            cli("front", "--study", study_name, "--storage", storage, "--cost", cost, "--within-points",
                str(args.within_points), "-o", str(png), "--force", log=log)
    complete = {name: optuna.load_study(study_name=name, storage=storage).get_trials(
        states=(TrialState.COMPLETE,)) for name in ("cnn-budget", "cnn-free")}
    study_of = {id(t): name for name, trials in complete.items() for t in trials}
    cnn = [t for trials in complete.values() for t in trials]
    best = max(cnn, key=lambda t: t.value)
    small = smallest_within(cnn, COSTS["params"], args.within_points)
    picks = {name: (study_of[id(t)], t.number) for name, t in (("best", best), ("smallest_within", small))}
    results["cnn_picks"] = {"within_points": args.within_points, "best": trial_summary(best),
                            "smallest_within": trial_summary(small)}
    seeds = {"best": args.seeds_best, "smallest_within": args.seeds_small}
    results["cnn_retrained"] = retrain_pair(storage, picks, root, args.out, args.threads, seeds, log)
    results["total_minutes"] = round((time.perf_counter() - started) / 60, 1)
    results["machine_after"] = {"load_average_1m": machine()["load_average_1m"]}
    print(json.dumps({k: results[k] for k in ("unmeetable", "cnn_picks", "cnn_retrained")}, indent=2))
    print(f"wrote {write_results('deployment_budget', results, quick=args.quick)}")


if __name__ == "__main__":
    main()
