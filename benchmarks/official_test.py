"""What a user gets: official KMNIST test accuracy of the model the product hands over.

For each search space, a time-boxed search on kmnist-7k (the first 7,011 official training
images) through the real command line: `kmnist-search start` -> `export` -> `retrain` on all
7,011 images -> accuracy on the official 10,000 test images. Beside it, on the same data:
- `documented`: the space's best documented configuration (the highest claimed test accuracy
  among its sound, 10-class experiments, kmnist first), replayed at its documented epochs
  (`kmnist-search replay`), exported and retrained the same way;
- `optuna_example`: Optuna's PyTorch example (pytorch_simple.py, as in search_arms.py) given
  the same budget, its best trial retrained on all 7,011 images for its 10 epochs;
- `knn`: 4-nearest neighbours on raw pixels (scikit-learn, distance-weighted);
- `pick` (the spaces in PICK_SPACES): the search arm, and then `kmnist-search reevaluate` on
  the same study; both the single best trial and the re-evaluated pick are retrained and
  tested, so each search seed gives a paired comparison;
- the published full-60k numbers of the KMNIST authors, as reference lines.

    .venv/bin/python benchmarks/official_test.py                   # every missing run, then analysis
    .venv/bin/python benchmarks/official_test.py --arms knn        # one arm
    .venv/bin/python benchmarks/official_test.py --space mlp_regularisation --seeds 0 --arms documented
    .venv/bin/python benchmarks/official_test.py --only-analyse    # rebuild the results from the runs
    .venv/bin/python benchmarks/official_test.py --minutes 1 --epochs 1     # smoke (temp folder)
    .venv/bin/python benchmarks/official_test.py --trials 2 --epochs 1      # smoke, 2 trials per search

The budget is `start --timeout`, counted from the command's start as a user's is: a budget
shorter than start-up (imports, data; tens of seconds on a loaded machine) runs no trial, and
that run fails. A smoke run with `--trials N` gives each search N finished trials instead of
`--timeout`, so it does not depend on how busy the machine is. A run that fails is reported
and left out; the others go on, and the command exits with status 1 at the end.

Resumable: each run writes results/official_test/runs/NAME.json (SPACE-ARM-seed-S.json;
optuna_example-15min-seed-S.json; knn-seed-0.json) and an existing file is not run again.
Every search and retrain is one process with one torch thread; two run side by side.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from functools import cache
from pathlib import Path
from typing import Any

from common import KMNIST_7K, RESULTS, copy_root, distinct, machine
from search_arms import run_all

SOURCE = KMNIST_7K
OUT = RESULTS / "official_test"
CLI = Path(sys.executable).parent / "kmnist-search"
DATASET = "kmnist"
# the search budget of one run, by model family: CNN trials take minutes, MLP trials seconds
BUDGET_MINUTES = {"mlp": 15.0, "cnn": 45.0}
SPACES = ("mlp_regularisation", "mlp_architecture", "cnn_regularisation", "mlp_beyond", "cnn_beyond")
ARMS = ("search", "documented", "optuna_example", "knn", "pick")
SEEDS = {"search": (0, 1, 2), "documented": (0, 1, 2), "optuna_example": (0, 1), "knn": (0,),
         "pick": (0, 1, 2, 3, 4)}
# the pick comparison runs where a search gives many close trials and re-evaluation is cheap
PICK_SPACES = ("mlp_regularisation",)
PICK_TOP, PICK_FOLDS = 5, 3
PARALLEL = 2
KNN_NEIGHBOURS = 4
# the KMNIST authors' table (Clanuwat et al. 2018, github.com/rois-codh/kmnist), all 60,000 images
PUBLISHED_60K = {"4-NN": 0.9156, "Keras simple CNN": 0.9512, "PreActResNet-18": 0.9782}
# estimates for the time line of `make bench-outcome`: minutes per retrain, by family
RETRAIN_MINUTES = {"mlp": 2.0, "cnn": 8.0}
DOCUMENTED_MINUTES = {"mlp": 10.0, "cnn": 5.0}


# --- which runs ---------------------------------------------------------------------------------

def family(space: str) -> str:
    from spaces import get_space

    return get_space(space).family


def run_name(space: str | None, arm: str, seed: int, minutes: float | None) -> str:
    if arm == "knn":
        return f"knn-seed-{seed}"
    if arm == "optuna_example":
        return f"optuna_example-{minutes:g}min-seed-{seed}"
    return f"{space}-{arm}-seed-{seed}"


def planned(spaces: list[str], arms: list[str], seeds: list[int] | None,
            minutes: float | None) -> list[dict[str, Any]]:
    """Every run the choice asks for, once each (the example and 4-NN do not depend on the space)."""
    jobs: dict[str, dict[str, Any]] = {}
    for arm in arms:
        for space in spaces:
            if arm == "pick" and space not in PICK_SPACES:
                continue
            budget = minutes if minutes is not None else BUDGET_MINUTES[family(space)]
            for seed in seeds if seeds is not None and arm != "knn" else SEEDS[arm]:
                name = run_name(space, arm, seed, budget)
                jobs.setdefault(name, {"name": name, "space": None if arm in ("knn", "optuna_example")
                                       else space, "arm": arm, "seed": seed, "minutes": budget})
    return list(jobs.values())


def estimate_minutes(parallel: int = PARALLEL) -> float:
    """Wall minutes of the full default run: searches and replays side by side, plus retrains."""
    work = 0.0
    for space in SPACES:
        f = family(space)
        work += len(SEEDS["search"]) * (BUDGET_MINUTES[f] + RETRAIN_MINUTES[f])
        work += len(SEEDS["documented"]) * (DOCUMENTED_MINUTES[f] + RETRAIN_MINUTES[f])
    for minutes in set(BUDGET_MINUTES.values()):
        work += len(SEEDS["optuna_example"]) * (minutes + RETRAIN_MINUTES["mlp"])
    for space in PICK_SPACES:  # mlp_regularisation's 15 re-evaluation runs took about 30 s in all
        f = family(space)
        work += len(SEEDS["pick"]) * (BUDGET_MINUTES[f] + 3 * RETRAIN_MINUTES[f])
    return work / parallel


# --- the command line, as a user runs it ------------------------------------------------------------

@cache
def _help(command: str) -> str:
    return subprocess.run([str(CLI), command, "--help"], capture_output=True, text=True, check=True).stdout


def output_flag(command: str) -> str:
    """-o where the command has it, else the older --out."""
    return "-o" if "--output" in _help(command) else "--out"


def timeout_value(minutes: float) -> str:
    """--timeout in minutes where the command still reads minutes, else as a duration."""
    return f"{minutes:g}" if "MINUTES" in _help("start") else f"{round(minutes * 60)}s"


def cli(*args: str, log: Path) -> float:
    """Run `kmnist-search ARGS` with one torch thread; seconds taken. A failure raises with the
    tail of its output."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    started = time.perf_counter()
    with log.open("a") as out:
        out.write(f"$ kmnist-search {' '.join(args)}\n")
        out.flush()
        code = subprocess.run([str(CLI), *args], stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    if code:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise RuntimeError(f"kmnist-search {args[0]} failed ({code}):\n{tail}")
    return round(time.perf_counter() - started, 1)


def retrain(config_file: Path, data_dir: Path, out: Path, log: Path) -> tuple[dict[str, Any], float]:
    """`kmnist-search retrain` on all training images of data_dir into `out`; its metrics and seconds."""
    seconds = cli("retrain", str(config_file), "--seeds", "1", "--data-dir", str(data_dir), "--device", "cpu",
                  "--threads", "1", output_flag("retrain"), str(out), log=log)
    return json.loads((out / "metrics.json").read_text()), seconds


def chosen_trial(config: dict[str, Any]) -> dict[str, Any]:
    provenance = config["provenance"]
    return {"trial": provenance["trial"], "source": provenance["source"],
            "validation_accuracy": provenance["validation_accuracy"], "epochs": config["epochs"],
            "params": config["params"]}


def trial_counts(storage: str, study: str) -> dict[str, int]:
    import optuna

    trials = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    return counts


def describe_budget(minutes: float, trials: int | None) -> str:
    return f"{trials} trials" if trials else f"{minutes:g} min"


def search_run(space: str, seed: int, minutes: float, epochs: int | None, data_dir: Path,
               work: Path, trials: int | None = None) -> dict[str, Any]:
    """`start` with the time budget (for a smoke run: `trials` finished trials) -> export -> retrain."""
    log, storage = work / "log.txt", f"sqlite:///{work}/study.db"
    epoch_option = ["--epochs", str(epochs)] if epochs else []
    budget = (["--trials", str(trials)] if trials
              else ["--trials", "100000", "--timeout", timeout_value(minutes)])
    seconds = {"search": cli("start", "--space", space, "--study", space, "--storage", storage, *budget,
                             "--threads", "1", "--data-dir", str(data_dir), "--seed", str(seed),
                             "--device", "cpu", *epoch_option, log=log)}
    config_file = work / "best.json"
    seconds["export"] = cli("export", "--study", space, "--storage", storage, "-o", str(config_file), log=log)
    config = json.loads(config_file.read_text())
    metrics, seconds["retrain"] = retrain(config_file, data_dir, work / "retrained", log)
    return {"label": f"kmnist-search start ({describe_budget(minutes, trials)}) -> export -> retrain",
            "budget_minutes": minutes, "trials": trial_counts(storage, space),
            "chosen": chosen_trial(config), "seconds": seconds, **test_result(metrics)}


def documented_choice(space_name: str) -> Any:
    """The space's documented experiment with the best claimed test accuracy: sound claims on
    10-class data first, kmnist before other datasets."""
    from objectives.datasets import DATASET_CHOICES
    from spaces import get_space

    claimed = [e for e in get_space(space_name).experiments
               if e.claim("test_accuracy") is not None and not e.doubtful]
    return max(claimed, key=lambda e: (DATASET_CHOICES[e.dataset].num_classes == 10,
                                       e.dataset == DATASET, e.claim("test_accuracy")))


def documented_run(space: str, seed: int, epochs: int | None, data_dir: Path, work: Path) -> dict[str, Any]:
    import optuna

    experiment = documented_choice(space)
    log, storage = work / "log.txt", f"sqlite:///{work}/replay.db"
    study = f"replay-{space}-{DATASET}"
    cap = ["--max-epochs", str(epochs)] if epochs else []
    # replay runs the report's experiments of this space; the chosen one is exported
    seconds = {"replay": cli("replay", "--space", space, "--report", experiment.key.split("/")[0],
                             "--dataset", DATASET, "--data-dir", str(data_dir), "--storage", storage,
                             "--seed", str(seed), "--device", "cpu", output_flag("replay"),
                             str(work / "replay"), *cap, log=log)}
    trial = next(t for t in optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
                 if t.user_attrs.get("documented_experiment") == experiment.key)
    config_file = work / "best.json"
    seconds["export"] = cli("export", "--study", study, "--storage", storage, "--trial", str(trial.number),
                            "-o", str(config_file), log=log)
    config = json.loads(config_file.read_text())
    config["seed"] = seed  # replay records no search seed; the retrain takes the run's
    config_file.write_text(json.dumps(config, indent=2) + "\n")
    metrics, seconds["retrain"] = retrain(config_file, data_dir, work / "retrained", log)
    return {"label": f"documented {experiment.key}, replayed -> export -> retrain",
            "experiment": experiment.key, "documented_dataset": experiment.dataset,
            "claimed_test_accuracy": experiment.claim("test_accuracy"),
            "documented_epochs": experiment.epochs, "replayed_epochs": len(trial.intermediate_values),
            "chosen": chosen_trial(config), "seconds": seconds, **test_result(metrics)}


def pick_run(space: str, seed: int, minutes: float, epochs: int | None, data_dir: Path,
             work: Path, trials: int | None = None) -> dict[str, Any]:
    """The search arm, then `reevaluate` on its study: the single best trial and the
    re-evaluated pick, each retrained and tested (once, when they are the same trial)."""
    import optuna

    from search.reevaluate import stored_result
    from search.study import leaderboard, stored_pick

    single = search_run(space, seed, minutes, epochs, data_dir, work, trials)
    log, storage = work / "log.txt", f"sqlite:///{work}/study.db"
    seconds = {"reevaluate": cli("reevaluate", "--study", space, "--storage", storage, "--top", str(PICK_TOP),
                                 "--folds", str(PICK_FOLDS), "--data-dir", str(data_dir), "--device", "cpu",
                                 "--threads", "1", log=log)}
    study = optuna.load_study(study_name=space, storage=storage)
    pick = stored_pick(study)
    if pick is None:
        raise RuntimeError("reevaluate recorded no pick")
    reevaluated = sorted(filter(None, (stored_result(study, t.number) for t in leaderboard(study, PICK_TOP))),
                         key=lambda r: r.trial)
    if pick["trial"] == single["chosen"]["trial"]:
        picked = {"chosen": single["chosen"], "official_test_accuracy": single["official_test_accuracy"]}
    else:
        config_file = work / "pick.json"
        seconds["export"] = cli("export", "--study", space, "--storage", storage, "-o", str(config_file),
                                log=log)
        config = json.loads(config_file.read_text())
        exported = config["provenance"]["trial"]
        if exported != pick["trial"]:
            raise RuntimeError(f"export gave trial {exported}, not the pick {pick['trial']}")
        metrics, seconds["retrain"] = retrain(config_file, data_dir, work / "retrained-pick", log)
        picked = {"chosen": chosen_trial(config), **test_result(metrics)}
    return {"label": f"kmnist-search start ({describe_budget(minutes, trials)}) -> reevaluate --top "
                     f"{PICK_TOP} --folds {PICK_FOLDS} -> export -> retrain, against the single best trial",
            "budget_minutes": minutes, "trials": single["trials"], "top": PICK_TOP, "folds": PICK_FOLDS,
            "same_trial": pick["trial"] == single["chosen"]["trial"],
            "single_best": {k: single[k] for k in ("chosen", "official_test_accuracy", "seconds")},
            "reevaluated": {**picked, "fold_mean": pick["mean"], "fold_std": pick["std"]},
            "reevaluations": [{"trial": r.trial, "validation_accuracy": r.validation_accuracy, "mean": r.mean,
                               "std": r.std, "epochs": r.epochs, "seconds": r.seconds} for r in reevaluated],
            "reevaluation_training_seconds": pick["seconds"], "seconds": seconds,
            # the pick is what this arm hands over
            "official_test_accuracy": picked["official_test_accuracy"], "test_images": single["test_images"]}


def test_result(metrics: dict[str, Any]) -> dict[str, Any]:
    return {"official_test_accuracy": metrics["test_accuracy"]["mean"], "test_images": metrics["test_images"]}


def example_run(seed: int, minutes: float, data_dir: Path, work: Path,
                trials: int | None = None) -> dict[str, Any]:
    """search_arms.py's Optuna-example arm for the budget, then its own best trial (the example's
    own pick: study.best_trial) retrained on every training image and tested."""
    import optuna
    from search_arms import run_example_arm

    started = time.perf_counter()
    searched = run_example_arm(seed, minutes * 60, data_dir, work, n_trials=trials)
    search_seconds = round(time.perf_counter() - started, 1)
    study = optuna.load_study(study_name="optuna_example", storage=f"sqlite:///{work}/study.db")
    best = study.best_trial
    started = time.perf_counter()
    accuracy, images = retrain_example(best.params, seed, data_dir)
    states = [t["state"] for t in searched["trials"]]
    return {"label": f"Optuna's PyTorch example ({describe_budget(minutes, trials)}) -> retrain",
            "budget_minutes": minutes, "trials": {s: states.count(s) for s in sorted(set(states))},
            "chosen": {"trial": best.number, "own_value": best.value, "params": best.params,
                       "validation_accuracy": best.user_attrs.get("yardstick_accuracy")},
            "seconds": {"search": search_seconds, "retrain": round(time.perf_counter() - started, 1)},
            "official_test_accuracy": accuracy, "test_images": images}


def retrain_example(params: dict[str, Any], seed: int, data_dir: Path) -> tuple[float, int]:
    """The example's model, optimiser and 10 epochs of batch 128, over all training images
    each epoch (the example stops at 30 batches), in its input format: [0, 1], flattened."""
    import optuna
    import torch
    import torch.nn.functional as F
    from search_efficiency import EXAMPLE_BATCHSIZE, EXAMPLE_EPOCHS, define_model

    from objectives.data import load_raw

    torch.manual_seed(seed)
    images, labels = load_raw(DATASET, data_dir, train=True)
    test_images, test_labels = load_raw(DATASET, data_dir, train=False)
    x, test_x = (i.float().div(255).view(len(i), -1) for i in (images, test_images))
    model = define_model(optuna.trial.FixedTrial(params))
    optimizer = getattr(torch.optim, params["optimizer"])(model.parameters(), lr=params["lr"])
    for _ in range(EXAMPLE_EPOCHS):
        model.train()
        for batch in torch.randperm(len(x)).split(EXAMPLE_BATCHSIZE):
            optimizer.zero_grad()
            F.nll_loss(model(x[batch]), labels[batch]).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        correct = (model(test_x).argmax(dim=1) == test_labels).sum().item()
    return correct / len(test_labels), len(test_labels)


def knn_run(data_dir: Path) -> dict[str, Any]:
    """4-NN on the product loader's raw pixels, fitted on every training image."""
    import numpy as np
    from sklearn.neighbors import KNeighborsClassifier

    from objectives.data import load_raw

    images, labels = load_raw(DATASET, data_dir, train=True)
    test_images, test_labels = load_raw(DATASET, data_dir, train=False)
    started = time.perf_counter()
    knn = KNeighborsClassifier(n_neighbors=KNN_NEIGHBOURS, weights="distance")
    knn.fit(images.reshape(len(images), -1).numpy().astype(np.float32), labels.numpy())
    predicted = knn.predict(test_images.reshape(len(test_images), -1).numpy().astype(np.float32))
    seconds = round(time.perf_counter() - started, 1)
    return {"label": f"{KNN_NEIGHBOURS}-NN on raw pixels (scikit-learn, distance-weighted)",
            "train_images": len(labels), "seconds": {"fit_and_predict": seconds},
            "official_test_accuracy": float((predicted == test_labels.numpy()).mean()),
            "test_images": len(test_labels)}


def run_job(job: dict[str, Any], epochs: int | None, trials: int | None, data_dir: Path, out: Path) -> None:
    """One run, in its own process: its result file, written only when it succeeded."""
    import optuna
    import sklearn
    import torch

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    record = machine()  # before the run: the load it started under
    with tempfile.TemporaryDirectory(prefix=f"official-test-{job['name']}-") as tmp:
        work = Path(tmp)
        if job["arm"] == "search":
            result = search_run(job["space"], job["seed"], job["minutes"], epochs, data_dir, work, trials)
        elif job["arm"] == "documented":
            result = documented_run(job["space"], job["seed"], epochs, data_dir, work)
        elif job["arm"] == "optuna_example":
            result = example_run(job["seed"], job["minutes"], data_dir, work, trials)
        elif job["arm"] == "pick":
            result = pick_run(job["space"], job["seed"], job["minutes"], epochs, data_dir, work, trials)
        else:
            result = knn_run(data_dir)
    payload = {"space": job["space"], "arm": job["arm"], "seed": job["seed"], "epochs_cap": epochs,
               "trials_cap": trials,
               **result, "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
               "machine": record, "versions": {"torch": torch.__version__, "optuna": optuna.__version__,
                                               "scikit-learn": sklearn.__version__}}
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{job['name']}.json"
    path.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    print(f"  {job['name']}: official test accuracy {payload['official_test_accuracy']:.4f}", flush=True)


# --- analysis: from the run files alone ------------------------------------------------------------

def load_runs(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def summarise(runs: list[dict[str, Any]], expected: tuple[int, ...]) -> dict[str, Any]:
    """Per-seed accuracies, median, min and max; the expected seeds with no run are named."""
    per_seed = {str(r["seed"]): r["official_test_accuracy"] for r in sorted(runs, key=lambda r: r["seed"])}
    values = list(per_seed.values())
    return {"per_seed": per_seed, "median": statistics.median(values) if values else None,
            "min": min(values, default=None), "max": max(values, default=None),
            "seeds": len(values), "missing_seeds": [s for s in expected if str(s) not in per_seed]}


def analyse(runs: list[dict[str, Any]], minutes: float | None = None,
            spaces: tuple[str, ...] = SPACES) -> dict[str, Any]:
    """Per space, its arms at the space's budget (or `minutes`); runs on other budgets are
    left out and named."""
    def matching(arm: str, **fields: Any) -> list[dict[str, Any]]:
        return [r for r in runs if r["arm"] == arm and all(r.get(k) == v for k, v in fields.items())]

    results: dict[str, Any] = {"spaces": {}}
    for space in spaces:
        budget = minutes if minutes is not None else BUDGET_MINUTES[family(space)]
        search = matching("search", space=space, budget_minutes=budget)
        documented = matching("documented", space=space)
        example = matching("optuna_example", budget_minutes=budget)
        entry = {"family": family(space), "budget_minutes": budget,
                 "search": {"label": f"kmnist-search start ({budget:g} min) -> export -> retrain",
                            **summarise(search, SEEDS["search"])},
                 "documented": {"label": "the best documented configuration, replayed -> export -> retrain",
                                "experiment": documented[0]["experiment"] if documented
                                else documented_choice(space).key,
                                "epochs": sorted({r["chosen"]["epochs"] for r in documented}),
                                **summarise(documented, SEEDS["documented"])},
                 "optuna_example": {"label": f"Optuna's PyTorch example ({budget:g} min) -> retrain",
                                    **summarise(example, SEEDS["optuna_example"])}}
        if space in PICK_SPACES:
            picks = matching("pick", space=space, budget_minutes=budget)
            entry["pick"] = {"label": f"kmnist-search start ({budget:g} min) -> reevaluate (top {PICK_TOP}, "
                                      f"{PICK_FOLDS} folds) -> export -> retrain",
                             **summarise(picks, SEEDS["pick"]), "paired": paired_picks(picks)}
        results["spaces"][space] = entry
    knn = matching("knn")
    results["knn"] = {"label": f"{KNN_NEIGHBOURS}-NN on raw pixels (scikit-learn, distance-weighted)",
                      "seconds": [r["seconds"]["fit_and_predict"] for r in knn],
                      **summarise(knn, SEEDS["knn"])}
    results["published_60k"] = PUBLISHED_60K
    budgets = {space: row["budget_minutes"] for space, row in results["spaces"].items()}
    results["left_out_other_budgets"] = sorted(
        run_name(r["space"], r["arm"], r["seed"], r["budget_minutes"]) for r in runs
        if (r["arm"] in ("search", "pick") and r["budget_minutes"] != budgets.get(r["space"]))
        or (r["arm"] == "optuna_example" and r["budget_minutes"] not in budgets.values()))
    missing = {run_name(space, arm, s, row["budget_minutes"]) for space, row in results["spaces"].items()
               for arm in ("search", "documented", "optuna_example", "pick") if arm in row
               for s in row[arm]["missing_seeds"]}
    results["missing"] = sorted(missing) + [f"knn-seed-{s}" for s in results["knn"]["missing_seeds"]]
    results["machines"] = distinct([{k: r["machine"].get(k) for k in (
        "cpu_model", "cpu_family_model_stepping", "cpu_flags_of_interest", "logical_cores")} for r in runs])
    results["versions"] = distinct([r["versions"] for r in runs])
    return results


def paired_picks(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The re-evaluated pick against the single best trial of the same search, seed by seed:
    the difference in official test accuracy (pick - best) with a 95 % paired t interval over
    seeds, and the spread of each across seeds."""
    from scipy import stats

    seeds = [{"seed": r["seed"], "same_trial": r["same_trial"],
              "single_best": {"trial": r["single_best"]["chosen"]["trial"],
                              "validation_accuracy": r["single_best"]["chosen"]["validation_accuracy"],
                              "official_test_accuracy": r["single_best"]["official_test_accuracy"]},
              "reevaluated": {"trial": r["reevaluated"]["chosen"]["trial"],
                              "fold_mean": r["reevaluated"]["fold_mean"],
                              "official_test_accuracy": r["reevaluated"]["official_test_accuracy"]},
              "difference": (r["reevaluated"]["official_test_accuracy"]
                             - r["single_best"]["official_test_accuracy"]),
              "reevaluation_seconds": r["reevaluation_training_seconds"]}
             for r in sorted(runs, key=lambda r: r["seed"])]
    differences = [s["difference"] for s in seeds]
    result: dict[str, Any] = {"seeds": seeds, "same_trial": sum(s["same_trial"] for s in seeds)}
    if len(seeds) < 2:
        return result
    mean, sd = statistics.fmean(differences), statistics.stdev(differences)
    half = float(stats.t.ppf(0.975, len(seeds) - 1)) * sd / len(seeds) ** 0.5
    result.update(
        difference={"mean": mean, "min": min(differences), "max": max(differences),
                    "ci95": [mean - half, mean + half]},
        detectably_worse=mean + half < 0,
        spread={arm: statistics.stdev(s[arm]["official_test_accuracy"] for s in seeds)
                for arm in ("single_best", "reevaluated")},
        reevaluation_minutes_median=statistics.median(s["reevaluation_seconds"] for s in seeds) / 60)
    return result


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _cell(row: dict[str, Any]) -> str:
    if row["median"] is None:
        return "not run"
    if row["seeds"] == 1:
        return _pct(row["median"])
    return f"{_pct(row['median'])} [{_pct(row['min'])}-{_pct(row['max'])}]"


def _seeds(row: dict[str, Any]) -> str:
    return f"{row['seeds']}/{row['seeds'] + len(row['missing_seeds'])}"


def table_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(what, official test accuracy, seeds, budget) per arm, spaces first, references last."""
    rows = []
    for space, entry in results["spaces"].items():
        budget = f"{entry['budget_minutes']:g} min search + retrain"
        epochs = ", ".join(str(e) for e in entry["documented"]["epochs"]) or "-"
        rows += [(f"`{space}`: kmnist-search start -> export -> retrain", _cell(entry["search"]),
                  _seeds(entry["search"]), budget),
                 (f"`{space}`: documented {entry['documented']['experiment']} -> retrain",
                  _cell(entry["documented"]), _seeds(entry["documented"]),
                  f"replay + retrain ({epochs} epochs)"),
                 (f"`{space}`: Optuna's PyTorch example -> retrain", _cell(entry["optuna_example"]),
                  _seeds(entry["optuna_example"]), budget)]
        if "pick" in entry:
            rows.append((f"`{space}`: kmnist-search start -> reevaluate -> export -> retrain",
                         _cell(entry["pick"]), _seeds(entry["pick"]),
                         f"{budget}, top {PICK_TOP} re-evaluated on {PICK_FOLDS} folds"))
    knn = results["knn"]
    seconds = f"fit + predict {knn['seconds'][0]:g} s" if knn["seconds"] else "-"
    rows.append((f"{KNN_NEIGHBOURS}-NN on raw pixels, 7,011 images", _cell(knn), _seeds(knn), seconds))
    for name, value in results["published_60k"].items():
        rows.append((f"published, all 60,000 training images: {name}", _pct(value), "-", "-"))
    return rows


def markdown(results: dict[str, Any]) -> str:
    lines = ["Official KMNIST test accuracy (%, 10,000 images) of the model each arm hands over, "
             "trained on kmnist-7k (7,011 real training images): median [min-max] over seeds; "
             "seeds: run/planned. One torch thread per run.", "",
             "| what | official test accuracy | seeds | budget |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in table_rows(results)]
    for space, entry in results["spaces"].items():
        if "pick" in entry and entry["pick"]["paired"]["seeds"]:
            lines += ["", *pick_table(space, entry["budget_minutes"], entry["pick"]["paired"])]
    if results["missing"]:
        lines += ["", f"Not run yet ({len(results['missing'])}): " + ", ".join(results["missing"]) + "."]
    machines = "; ".join(f"{m['cpu_model']} (family {m['cpu_family_model_stepping'][0]}, model "
                         f"{m['cpu_family_model_stepping'][1]}; "
                         + ", ".join(f"{flag} {'yes' if flag in m['cpu_flags_of_interest'] else 'no'}"
                                     for flag in ("avx512_bf16", "amx_bf16")) + ")"
                         for m in results["machines"])
    if machines:
        lines += ["", f"Machine: {machines}."]
    return "\n".join(lines) + "\n"


def pick_table(space: str, budget: float, paired: dict[str, Any]) -> list[str]:
    """The paired comparison of the re-evaluated pick with the single best trial, seed by seed."""
    lines = [f"The re-evaluated pick against the single best trial of the same `{space}` search "
             f"({budget:g} min; the top {PICK_TOP} trials by validation accuracy, each trained on "
             f"{PICK_FOLDS} stratified folds of the training images, picked by the mean): official test "
             "accuracy (%).", "",
             "| seed | single best: trial (validation) | test | pick: trial (mean over folds) | test | "
             "pick - best (points) |", "|---|---|---|---|---|---|"]
    for s in paired["seeds"]:
        best, pick = s["single_best"], s["reevaluated"]
        lines.append(f"| {s['seed']} | {best['trial']} ({_pct(best['validation_accuracy'])}) | "
                     f"{_pct(best['official_test_accuracy'])} | "
                     f"{pick['trial']} ({_pct(pick['fold_mean'])}) | "
                     f"{_pct(pick['official_test_accuracy'])} | {100 * s['difference']:+.2f} |")
    if "difference" in paired:
        d = paired["difference"]
        lines += ["", f"Pick - best over {len(paired['seeds'])} seeds: mean {100 * d['mean']:+.2f} points, "
                      f"95 % paired t interval [{100 * d['ci95'][0]:+.2f}, {100 * d['ci95'][1]:+.2f}] "
                      f"({'detectably worse' if paired['detectably_worse'] else 'not detectably worse'}); "
                      "standard deviation across seeds: single best "
                      f"{100 * paired['spread']['single_best']:.2f}, "
                      f"pick {100 * paired['spread']['reevaluated']:.2f} "
                      f"points; the same trial in {paired['same_trial']} of {len(paired['seeds'])}; "
                      f"re-evaluation cost: median {paired['reevaluation_minutes_median']:.1f} min "
                      "of training."]
    return lines


def plot(results: dict[str, Any], path: Path) -> None:
    """One panel: a dot per seed and a bar at the median per arm; 4-NN and the published 60k
    numbers as vertical lines, labelled in a band above the rows."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"search": "tab:blue", "pick": "tab:purple", "documented": "tab:orange",
               "optuna_example": "tab:green", "knn": "0.3"}
    names = {"search": "search", "pick": "search, re-evaluated pick", "documented": "documented",
             "optuna_example": "Optuna example"}
    rows, rules = [], []
    for space, entry in results["spaces"].items():
        rows += [(f"{space} · {names[arm]}", arm, entry[arm]) for arm in names if arm in entry]
        rules.append(len(rows) - 0.5)
    rows.append((f"{KNN_NEIGHBOURS}-NN, raw pixels", "knn", results["knn"]))
    references = {f"{KNN_NEIGHBOURS}-NN\n7k: {_pct(results['knn']['median'])}": results["knn"]["median"]}
    references.update({f"{name}\n60k: {_pct(v)}": v for name, v in results["published_60k"].items()})
    values = [v * 100 for _, _, row in rows for v in row["per_seed"].values()]
    values += [v * 100 for v in references.values() if v is not None]
    low, high = min(values) - 1.5, max(values) + 2.4
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(rows) + 2.2), dpi=100)
    for y, (_, arm, row) in enumerate(rows):
        if row["median"] is None:
            ax.text(low + 0.2, y, "not run", va="center", fontsize=8, color="0.5")
            continue
        seeds = [v * 100 for v in row["per_seed"].values()]
        ax.plot([row["median"] * 100] * 2, [y - 0.35, y + 0.35], color=colours[arm], linewidth=2.5)
        ax.scatter(seeds, [y] * len(seeds), color=colours[arm], s=24, zorder=3, alpha=0.75)
    for y in rules:  # a rule between spaces
        ax.axhline(y, color="0.85", linewidth=0.8)
    styles = (":", "--", "--", "--")  # dotted: measured here; dashed: published
    for i, ((label, value), style) in enumerate(zip(references.items(), styles, strict=True)):
        if value is not None:  # labels alternate between two heights so neighbours do not collide
            ax.axvline(value * 100, color="0.4", linestyle=style, linewidth=1)
            ax.text(value * 100, -2.1 if i % 2 == 0 else -1.15, label, ha="center", va="center", fontsize=7.5,
                    color="0.2", bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})
    ax.set_yticks(range(len(rows)), [label for label, _, _ in rows], fontsize=8.5)
    ax.set_ylim(len(rows) - 0.4, -2.7)
    ax.set_xlim(low, high)
    ax.set_xlabel("official KMNIST test accuracy (%), 10,000 images\ndot: a seed; bar: the median")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("The model handed over after training on 7,011 KMNIST images", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_analysis(out: Path, minutes: float | None = None) -> Path:
    """official_test.json, .md and .png beside the results folder, from its run files."""
    runs = load_runs(out / "runs")
    results = {"benchmark": "official_test",
               "data": "kmnist-7k: the first 7,011 official KMNIST training images; the official "
                       "10,000 test images, seen only after training",
               "budget_minutes": BUDGET_MINUTES, "planned_seeds": SEEDS, **analyse(runs, minutes)}
    path = out.parent / f"{out.name}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    path.with_suffix(".md").write_text(markdown(results))
    plot(results, path.with_suffix(".png"))
    return path


# --- the command ------------------------------------------------------------------------------

def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default=",".join(SPACES), help="comma-separated spaces (default: all)")
    p.add_argument("--arms", default=",".join(ARMS), help="comma-separated arms (default: all of "
                   + ", ".join(ARMS) + ")")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: per arm, "
                   + "; ".join(f"{a} {','.join(map(str, s))}" for a, s in SEEDS.items()) + ")")
    p.add_argument("--minutes", type=float, default=None,
                   help="search budget per run for every space (default: 15 for MLP spaces, 45 for CNN); "
                        "with it, --epochs or --trials and no --out-dir, a smoke run into a temporary folder")
    p.add_argument("--epochs", type=int, default=None,
                   help="cap the epochs of every trial and replay, for smoke runs (default: the space's)")
    p.add_argument("--trials", type=int, default=None,
                   help="smoke runs: every search stops after this many finished trials, with no time "
                        "limit on `start` (the Optuna example keeps --minutes as its limit)")
    p.add_argument("--parallel", type=int, default=PARALLEL, help=f"runs side by side (default {PARALLEL})")
    p.add_argument("--only-analyse", "--analyse", action="store_true",
                   help="only rebuild official_test.json/.md/.png from the run files")
    p.add_argument("--source", type=Path, default=SOURCE,
                   help=f"KMNIST root to copy the data from (default {SOURCE})")
    p.add_argument("--out-dir", type=Path, default=None, help=f"results folder (default {OUT})")
    p.add_argument("--job", help=argparse.SUPPRESS)
    p.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    smoke = args.minutes is not None or args.epochs is not None or args.trials is not None
    out = args.out_dir or (Path(tempfile.mkdtemp(prefix="official-test-smoke-")) / "official_test"
                           if smoke and not args.only_analyse else OUT)
    if args.job:
        run_job(json.loads(args.job), args.epochs, args.trials, args.data_dir, out / "runs")
        return
    failed = 0
    if not args.only_analyse:
        spaces, arms = args.space.split(","), args.arms.split(",")
        for name, given, known in (("space", spaces, SPACES), ("arm", arms, ARMS)):
            unknown = sorted(set(given) - set(known))
            if unknown:
                p.error(f"unknown {name} {', '.join(unknown)}: use {', '.join(known)}")
        if not (args.source / "KMNIST" / "raw").is_dir():
            p.error(f"no KMNIST root at {args.source}: give --source a folder holding KMNIST/raw")
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
        todo = [job for job in planned(spaces, arms, seeds, args.minutes)
                if not (out / "runs" / f"{job['name']}.json").exists()]
        print(f"{len(todo)} runs to do, {args.parallel} side by side, into {out}/runs "
              f"(the full default run: about {estimate_minutes(args.parallel) / 60:.1f} h)", flush=True)
        with tempfile.TemporaryDirectory(prefix="official-test-data-") as tmp:
            data_dir = copy_root(args.source, Path(tmp) / "kmnist")
            caps = ["--epochs", str(args.epochs)] if args.epochs else []
            caps += ["--trials", str(args.trials)] if args.trials else []
            failed = run_all([["benchmarks/official_test.py", "--job", json.dumps(job), "--data-dir",
                               str(data_dir), "--out-dir", str(out), *caps] for job in todo], args.parallel)
    path = write_analysis(out, args.minutes)
    print(path.with_suffix(".md").read_text())
    print(f"wrote {path}, {path.with_suffix('.md').name} and {path.with_suffix('.png').name}")
    if failed:
        sys.exit(f"{failed} run(s) failed (their errors are above): run the same command to retry them")


if __name__ == "__main__":
    main()
