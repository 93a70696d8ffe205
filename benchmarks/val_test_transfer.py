"""Does the validation accuracy the search maximises rank configurations as the official test set does?

Random configurations of a space (Optuna's RandomSampler, seeded), each trained once with the
product's training loop on the search's split of kmnist-7k (5,842 training, 1,169 validation
images; the split `start` makes with its defaults) for a fixed number of epochs, in fp32, one
thread. Per configuration: the best-epoch validation accuracy (what a trial reports as its
value), the last-epoch validation accuracy, and the official 10,000-image test accuracy of the
final model. The analysis reports Spearman rank correlations between them, and how far the
configuration the validation set picks falls below the best of all of them on the test set.

    .venv/bin/python benchmarks/val_test_transfer.py       # 30 cnn_regularisation configurations
    .venv/bin/python benchmarks/val_test_transfer.py --space cnn_beyond --configs 30 --epochs 5
    .venv/bin/python benchmarks/val_test_transfer.py --only-analyse
    .venv/bin/python benchmarks/val_test_transfer.py --configs 3 --epochs 1 --source ROOT --out-dir DIR

Resumable: each configuration appends one line to results/val_test_transfer/SPACE-Eepochs.jsonl
and a configuration already there is not trained again. The analysis writes
results/val_test_transfer.json, .md and .png from those files alone.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from common import KMNIST_7K, RESULTS, copy_root, distinct, machine

OUT = RESULTS / "val_test_transfer"
DATASET = "kmnist"
VAL_FRACTION, SPLIT_SEED = 1 / 6, 0  # `start`'s defaults: the split every search validates on
DEFAULT_SPACE, DEFAULT_CONFIGS, DEFAULT_EPOCHS = "cnn_regularisation", 30, 10
TOP = 5  # how many of the validation's best are compared with the test set's best
LEARNED = 0.2  # validation accuracy above which a configuration learned something (chance: 0.1)


def sampled_configs(space_name: str, count: int, seed: int) -> list[dict[str, Any]]:
    """`count` configurations from the space's distributions, the same list for the same seed."""
    import optuna

    from spaces import get_space

    space = get_space(space_name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    configs = []
    for _ in range(count):
        trial = study.ask()
        configs.append(space.suggest(trial))
        study.tell(trial, 0.0)
    return configs


def train_one(space_name: str, params: dict[str, Any], epochs: int, seed: int, data: Any,
              test: Any) -> dict[str, Any]:
    """One configuration through the product's loop: validation per epoch, then the test set."""
    from objectives.models import InvalidModelError, build_model, count_parameters, model_config
    from objectives.training import evaluate, seed_everything, train, train_settings
    from spaces import get_space

    space = get_space(space_name)
    seed_everything(seed)
    try:
        model = build_model(model_config(space.family, params, data.num_classes))
    except InvalidModelError as error:
        return {"skipped": str(error)}
    started = time.perf_counter()
    history = train(model, data.train, data.val, train_settings(params, epochs, seed))
    val = [r.val_accuracy for r in history]
    return {"param_count": count_parameters(model), "val_best": max(val), "val_last": val[-1],
            "best_epoch": val.index(max(val)) + 1, "val_per_epoch": val,
            "test": evaluate(model, test).accuracy, "seconds": round(time.perf_counter() - started, 1)}


def runs_file(out: Path, space: str, epochs: int) -> Path:
    return out / f"{space}-{epochs}epochs.jsonl"


def load_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run(space: str, count: int, epochs: int, sample_seed: int, data_dir: Path, out: Path) -> Path:
    import optuna
    import torch

    from objectives.data import load_search_data, load_test_split

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = runs_file(out, space, epochs)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = {row["index"] for row in load_rows(path)}
    device = torch.device("cpu")
    data = load_search_data(DATASET, data_dir, VAL_FRACTION, SPLIT_SEED, device)
    test = load_test_split(DATASET, data_dir, data.mean, data.std, device)
    for index, params in enumerate(sampled_configs(space, count, sample_seed)):
        if index in done:
            continue
        record = machine()
        result = train_one(space, params, epochs, sample_seed + index, data, test)
        row = {"index": index, "space": space, "epochs": epochs, "sample_seed": sample_seed,
               "params": params, **result, "train_images": len(data.train), "val_images": len(data.val),
               "test_images": len(test), "precision": "fp32",
               "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
               "machine": record, "versions": {"torch": torch.__version__}}
        with path.open("a") as file:
            file.write(json.dumps(row, default=str) + "\n")
        if "skipped" not in row:
            print(f"  {index}: validation {row['val_best']:.4f} (last {row['val_last']:.4f}), "
                  f"test {row['test']:.4f}, {row['seconds']:.0f} s", flush=True)
    return path


# --- analysis: from the run files alone ------------------------------------------------------------

def rank_correlation(a: list[float], b: list[float]) -> float | None:
    """Spearman's rho; None where it is undefined (a constant column)."""
    from scipy.stats import spearmanr

    if len(set(a)) < 2 or len(set(b)) < 2:
        return None
    return float(spearmanr(a, b).statistic)


def analyse_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Rank correlations of validation with test accuracy, and the cost of picking by validation."""
    trained = [r for r in rows if "skipped" not in r]
    result: dict[str, Any] = {"configurations": len(trained), "skipped": len(rows) - len(trained)}
    if len(trained) < 3:
        return result
    test = [r["test"] for r in trained]
    by_val = max(trained, key=lambda r: r["val_best"])
    top_val = sorted(trained, key=lambda r: r["val_best"], reverse=True)[:TOP]
    top_test = sorted(trained, key=lambda r: r["test"], reverse=True)[:TOP]
    gaps = [r["val_best"] - r["test"] for r in trained]
    learned = [r for r in trained if r["val_best"] >= LEARNED]
    result.update(
        spearman_best_epoch=rank_correlation([r["val_best"] for r in trained], test),
        spearman_last_epoch=rank_correlation([r["val_last"] for r in trained], test),
        # configurations stuck at chance tie at the bottom of both rankings and lift rho
        learned=len(learned),
        spearman_best_epoch_learned=rank_correlation([r["val_best"] for r in learned],
                                                     [r["test"] for r in learned]),
        picked_by_validation={k: by_val[k] for k in ("index", "val_best", "test")},
        best_on_test=max(test),
        pick_below_best_points=100 * (max(test) - by_val["test"]),
        top_by_validation_on_test=[r["test"] for r in top_val],
        top_overlap=len({r["index"] for r in top_val} & {r["index"] for r in top_test}),
        val_minus_test_points={"median": 100 * statistics.median(gaps), "min": 100 * min(gaps),
                               "max": 100 * max(gaps)},
        test_range=[min(test), max(test)], seconds_median=statistics.median(r["seconds"] for r in trained))
    return result


def _rho(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def markdown(results: dict[str, Any]) -> str:
    lines = ["Validation accuracy (the search's split of kmnist-7k, 1,169 images) against official test "
             "accuracy (10,000 images) of random configurations, each trained once, fp32. "
             f"'Those that learned': validation accuracy of at least {100 * LEARNED:.0f} % (chance is 10 %), "
             "their number in brackets.", "",
             f"| space, epochs | configurations | Spearman, best epoch | Spearman, last epoch | "
             f"Spearman, best epoch, those that learned | validation's pick on test | best of all on test | "
             f"pick below best | top {TOP} shared | validation - test (points), median [range] |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results["runs"].items():
        if "spearman_best_epoch" not in r:
            lines.append(f"| {name} | {r['configurations']} | - | - | - | - | - | - | - | - |")
            continue
        gap = r["val_minus_test_points"]
        lines.append(f"| {name} | {r['configurations']} | {_rho(r['spearman_best_epoch'])} | "
                     f"{_rho(r['spearman_last_epoch'])} | "
                     f"{_rho(r['spearman_best_epoch_learned'])} ({r['learned']}) | "
                     f"{100 * r['picked_by_validation']['test']:.2f} % | "
                     f"{100 * r['best_on_test']:.2f} % | {r['pick_below_best_points']:.2f} points | "
                     f"{r['top_overlap']} of {TOP} | "
                     f"{gap['median']:.1f} [{gap['min']:.1f}, {gap['max']:.1f}] |")
    machines = "; ".join(f"{m['cpu_model']} (family {m['cpu_family_model_stepping'][0]}, model "
                         f"{m['cpu_family_model_stepping'][1]})" for m in results["machines"])
    if machines:
        lines += ["", f"Machine: {machines}."]
    return "\n".join(lines) + "\n"


def plot(groups: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Validation against test accuracy, one panel per run file, the diagonal for reference."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, max(1, len(groups)), figsize=(4.6 * max(1, len(groups)), 4.4), dpi=100,
                             squeeze=False)
    for ax, (name, rows) in zip(axes[0], groups.items(), strict=False):
        trained = [r for r in rows if "skipped" not in r]
        if not trained:
            continue
        val, test = [100 * r["val_best"] for r in trained], [100 * r["test"] for r in trained]
        ax.scatter(val, test, s=22, alpha=0.75, color="tab:blue", label="a configuration")
        pick = max(trained, key=lambda r: r["val_best"])
        ax.scatter([100 * pick["val_best"]], [100 * pick["test"]], s=80, facecolors="none",
                   edgecolors="tab:red", linewidths=1.5, label="picked by validation")
        stuck = [r for r in trained if r["val_best"] < LEARNED]
        if stuck:  # they sit on one spot
            ax.annotate(f"{len(stuck)} stuck at chance", (100 * stuck[0]["val_best"], 100 * stuck[0]["test"]),
                        xytext=(12, 4), textcoords="offset points", fontsize=8, color="0.3")
        low, high = min(val + test) - 2, max(val + test) + 2
        ax.plot([low, high], [low, high], color="0.6", linestyle="--", linewidth=1, label="test = validation")
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
        ax.set_xlabel("validation accuracy, best epoch (%)")
        ax.set_ylabel("official test accuracy (%)")
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_analysis(out: Path) -> Path:
    groups = {p.stem: load_rows(p) for p in sorted(out.glob("*.jsonl"))}
    rows = [row for group in groups.values() for row in group]
    machines = distinct([{k: row["machine"].get(k) for k in ("cpu_model", "cpu_family_model_stepping",
                                                             "logical_cores")} for row in rows])
    results = {"benchmark": "val_test_transfer", "data": "kmnist-7k: the search's split of the 7,011 "
               "training images; the official 10,000 test images", "top": TOP,
               "runs": {name: analyse_rows(group) for name, group in groups.items()}, "machines": machines}
    path = out.parent / f"{out.name}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    path.with_suffix(".md").write_text(markdown(results))
    plot(groups, path.with_suffix(".png"))
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default=DEFAULT_SPACE, help=f"search space (default {DEFAULT_SPACE})")
    p.add_argument("--configs", type=int, default=DEFAULT_CONFIGS,
                   help=f"random configurations (default {DEFAULT_CONFIGS})")
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS,
                   help=f"epochs per configuration (default {DEFAULT_EPOCHS})")
    p.add_argument("--sample-seed", type=int, default=0, help="the sampler's seed (default 0)")
    p.add_argument("--source", type=Path, default=KMNIST_7K,
                   help=f"KMNIST root to copy (default {KMNIST_7K})")
    p.add_argument("--out-dir", type=Path, default=OUT, help=f"results folder (default {OUT})")
    p.add_argument("--only-analyse", "--analyse", action="store_true",
                   help="only rebuild the results from the run files")
    args = p.parse_args()
    if not args.only_analyse:
        if not (args.source / "KMNIST" / "raw").is_dir():
            p.error(f"no KMNIST root at {args.source}: give --source a folder holding KMNIST/raw")
        with tempfile.TemporaryDirectory(prefix="transfer-data-") as tmp:
            data_dir = copy_root(args.source, Path(tmp) / "kmnist")
            run(args.space, args.configs, args.epochs, args.sample_seed, data_dir, args.out_dir)
    path = write_analysis(args.out_dir)
    print(path.with_suffix(".md").read_text())
    print(f"wrote {path}, {path.with_suffix('.md').name} and {path.with_suffix('.png').name}")


if __name__ == "__main__":
    main()
