"""bf16 against fp32 for the search: does bf16 autocast rank configurations as fp32 does?

Part 1, ranking: configurations drawn at random (Optuna's RandomSampler, fixed seed) from
`mlp_regularisation`, `mlp_beyond` and `cnn_beyond` (CNNs capped in MFLOPs so the run stays
short), each trained twice with the product's own `train` on real KMNIST (the search's
train/validation split of `--data-dir`), once in fp32 and once with bf16 autocast, same seed,
same initial weights, interleaved. Reports the Spearman rank correlation of the best
validation accuracies, the top five of each ranking, and the per-epoch speed ratio. Results
are written after every configuration; a rerun resumes where the last one stopped.

Part 2, torch.compile: one trial's budget of epochs for the seed-000 MLP and for the best
`cnn_beyond` CNN of BENCHMARKS.md part 4, eager against `model.compile()`, interleaved:
compile time against per-epoch savings.

    .venv/bin/python benchmarks/precision.py [--data-dir DIR] [--quick] [--threads N] [--fresh]
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from common import (
    BEST_CNN_BEYOND,
    KMNIST_7K,
    RESULTS,
    copy_root,
    machine,
    median,
    parser,
    ratios,
    set_threads,
)
from scipy.stats import spearmanr

from objectives.data import SearchData, TensorSplit, load_search_data
from objectives.models import InvalidModelError, build_model, forward_mflops, model_config
from objectives.training import (
    EpochResult,
    NonFiniteLossError,
    seed_everything,
    train,
    train_settings,
)
from spaces import get_space
from spaces.documented import R000_EXP1

DATA = KMNIST_7K
SAMPLER_SEED = 18
TRAIN_SEED = 0
VAL_FRACTION = 1 / 6  # the search's default


@dataclass(frozen=True)
class Draw:
    label: str  # configuration keys are LABEL-NN
    space: str
    count: int
    epochs: int
    mflops: tuple[float, float] = (0.0, math.inf)  # forward MFLOPs per image drawn; others skipped


# short budgets keep 42 pairs near 20 CPU minutes; cnn_beyond allows 120 MFLOPs, so most CNNs
# drawn are small (cheap) and a few larger ones (such as the searches end up at) get 2 epochs
DRAWS = (Draw("mlp_regularisation", "mlp_regularisation", 12, 8), Draw("mlp_beyond", "mlp_beyond", 12, 8),
         Draw("cnn_beyond", "cnn_beyond", 12, 4, (0.0, 8.0)),
         Draw("cnn_beyond_large", "cnn_beyond", 6, 2, (8.0, 60.0)))
QUICK_DRAWS = (Draw("mlp_regularisation", "mlp_regularisation", 2, 1), Draw("mlp_beyond", "mlp_beyond", 2, 1),
               Draw("cnn_beyond", "cnn_beyond", 2, 1, (0.0, 8.0)))
TOP = 5
TARGET_SPEARMAN = 0.9
PRECISIONS = ("fp32", "bf16")


# --- part 1: ranking ------------------------------------------------------------------------

def draw_configurations(draws: tuple[Draw, ...]) -> list[dict[str, Any]]:
    """Random configurations of each space (the same ones on every run: a seeded sampler)."""
    configurations = []
    for draw in draws:
        space = get_space(draw.space)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=SAMPLER_SEED))
        drawn, skipped = 0, 0
        while drawn < draw.count:
            trial = study.ask()
            params = space.suggest(trial)
            study.tell(trial, 0.0)
            try:
                model = build_model(model_config(space.family, params, 10))
            except InvalidModelError:
                skipped += 1
                continue
            mflops = forward_mflops(model)
            if not draw.mflops[0] <= mflops <= draw.mflops[1]:
                skipped += 1
                continue
            configurations.append({"key": f"{draw.label}-{drawn:02d}", "draw": draw.label,
                                   "space": draw.space, "family": space.family, "epochs": draw.epochs,
                                   "params": params,
                                   "forward_mflops": round(mflops, 3), "skipped_before": skipped})
            drawn += 1
    return configurations


def fingerprint(configuration: dict[str, Any]) -> str:
    text = json.dumps([configuration["params"], configuration["epochs"]], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def train_once(configuration: dict[str, Any], data: SearchData, precision: str) -> dict[str, Any]:
    """One run as the search's objective makes it: same seed, same initial weights for both precisions."""
    seed_everything(TRAIN_SEED)
    model = build_model(model_config(configuration["family"], configuration["params"], data.num_classes))
    settings = train_settings(configuration["params"], configuration["epochs"], TRAIN_SEED,
                              precision=precision)
    history: list[EpochResult] = []
    diverged = None
    cpu = time.process_time()
    try:
        train(model, data.train, data.val, settings, history.append)
    except NonFiniteLossError as error:  # the search prunes such a trial
        diverged = str(error)
    cpu = time.process_time() - cpu
    epochs = max(1, len(history))
    return {
        "best_val_accuracy": max((r.val_accuracy for r in history), default=0.0),
        "val_accuracy_per_epoch": [round(r.val_accuracy, 4) for r in history],
        "final_train_loss": history[-1].train_loss if history else math.nan,
        "s_per_epoch": round(median([r.seconds for r in history]) if history else math.nan, 4),
        "cpu_s_per_epoch": round(cpu / epochs, 4),
        "diverged": diverged,
    }


def run_pairs(configurations: list[dict[str, Any]], data: SearchData, done: dict[str, Any],
              save: Any) -> dict[str, Any]:
    for index, configuration in enumerate(configurations):
        key, mark = configuration["key"], fingerprint(configuration)
        if done.get(key, {}).get("fingerprint") == mark:
            done[key].update(configuration)  # trained already: only the description may be newer
            continue
        order = PRECISIONS if index % 2 == 0 else tuple(reversed(PRECISIONS))  # load hits both alike
        runs = {precision: train_once(configuration, data, precision) for precision in order}
        done[key] = {**configuration, "fingerprint": mark, **runs}
        fp32, bf16 = runs["fp32"], runs["bf16"]
        print(f"  {key} ({configuration['forward_mflops']} MFLOPs, "
              f"batch {configuration['params']['batch_size']}): "
              f"fp32 {fp32['best_val_accuracy']:.4f} / bf16 {bf16['best_val_accuracy']:.4f}, "
              f"{fp32['s_per_epoch']:.2f} / {bf16['s_per_epoch']:.2f} s per epoch", flush=True)
        save()
    return done


def top(pairs: list[dict[str, Any]], precision: str, k: int = TOP) -> list[str]:
    return [p["key"] for p in sorted(pairs, key=lambda p: -p[precision]["best_val_accuracy"])[:k]]


def rank_summary(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    fp32 = [p["fp32"]["best_val_accuracy"] for p in pairs]
    bf16 = [p["bf16"]["best_val_accuracy"] for p in pairs]
    wall = ratios([p["fp32"]["s_per_epoch"] for p in pairs], [p["bf16"]["s_per_epoch"] for p in pairs])
    cpu = ratios([p["fp32"]["cpu_s_per_epoch"] for p in pairs], [p["bf16"]["cpu_s_per_epoch"] for p in pairs])
    differences = [abs(a - b) for a, b in zip(fp32, bf16, strict=True)]
    summary: dict[str, Any] = {
        "configurations": len(pairs),
        "bf16_speedup_per_epoch": {"median": round(median(wall), 3), "min": round(min(wall), 3),
                                   "max": round(max(wall), 3)},
        "bf16_speedup_per_epoch_by_cpu_time": {"median": round(median(cpu), 3)},
        "abs_accuracy_difference": {"median": round(median(differences), 4),
                                    "max": round(max(differences), 4)},
        "diverged": {precision: [p["key"] for p in pairs if p[precision]["diverged"]]
                     for precision in PRECISIONS},
    }
    if len(pairs) >= 3:
        rho = spearmanr(fp32, bf16).statistic
        summary["spearman"] = round(float(rho), 4)
    return summary


def summarise_ranking(done: dict[str, Any], configurations: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [c["key"] for c in configurations]
    pairs = [done[k] for k in keys if k in done]
    if not pairs:
        return {}
    groups = {"all": pairs,
              **{family: [p for p in pairs if p["family"] == family] for family in ("mlp", "cnn")},
              **{label: [p for p in pairs if p["key"].rsplit("-", 1)[0] == label]
                 for label in dict.fromkeys(p["key"].rsplit("-", 1)[0] for p in pairs)}}
    summary = {name: rank_summary(group) for name, group in groups.items() if group}
    top_fp32, top_bf16 = top(pairs, "fp32"), top(pairs, "bf16")
    by_key = {p["key"]: p for p in pairs}
    accuracy = {k: {precision: by_key[k][precision]["best_val_accuracy"] for precision in PRECISIONS}
                for k in by_key}
    summary["top_five_by_fp32"] = [
        {"key": k, "fp32": round(accuracy[k]["fp32"], 4), "bf16": round(accuracy[k]["bf16"], 4),
         "difference": round(accuracy[k]["bf16"] - accuracy[k]["fp32"], 4)} for k in top_fp32]
    summary["top_five_by_bf16"] = top_bf16
    summary["top_five_shared"] = len(set(top_fp32) & set(top_bf16))
    summary["same_best_configuration"] = top_fp32[0] == top_bf16[0]
    # the best half by fp32: ranking among good configurations is what a search needs most
    best_half = sorted(pairs, key=lambda p: -p["fp32"]["best_val_accuracy"])[: max(3, len(pairs) // 2)]
    summary["best_half_spearman"] = round(float(spearmanr(
        [p["fp32"]["best_val_accuracy"] for p in best_half],
        [p["bf16"]["best_val_accuracy"] for p in best_half]).statistic), 4)
    if "spearman" in summary["all"]:
        summary["target_spearman"] = {"target": TARGET_SPEARMAN, "measured": summary["all"]["spearman"],
                                      "met": summary["all"]["spearman"] >= TARGET_SPEARMAN}
    return summary


# --- part 2: torch.compile --------------------------------------------------------------------

def compile_cases() -> dict[str, dict[str, Any]]:
    best_cnn = get_space("cnn_beyond").suggest(optuna.trial.FixedTrial(BEST_CNN_BEYOND))
    return {
        "mlp_000_exp1": {"family": "mlp", "params": R000_EXP1.config, "train_images": None,
                         "trial_epochs": get_space("mlp_regularisation").epochs},
        # a slice keeps its epochs short; compiling costs the same for any number of images
        "cnn_beyond_best": {"family": "cnn", "params": best_cnn, "train_images": 1_200,
                            "trial_epochs": get_space("cnn_beyond").epochs},
    }


def slices(case: dict[str, Any], data: SearchData) -> tuple[TensorSplit, TensorSplit]:
    """The case's share of the train and validation splits (both cut in the same proportion)."""
    share = (case["train_images"] or len(data.train)) / len(data.train)
    n, m = round(len(data.train) * share), round(len(data.val) * share)
    return (TensorSplit(data.train.images[:n], data.train.labels[:n]),
            TensorSplit(data.val.images[:m], data.val.labels[:m]))


def compiled_run(case: dict[str, Any], data: SearchData, epochs: int, compiled: bool) -> dict[str, Any]:
    seed_everything(TRAIN_SEED)
    model = build_model(model_config(case["family"], case["params"], data.num_classes))
    if compiled:
        model.compile()
    settings = train_settings(case["params"], epochs, TRAIN_SEED)
    train_split, val_split = slices(case, data)
    try:
        history = train(model, train_split, val_split, settings)
    except Exception as error:  # noqa: BLE001 - a compile failure is a result here, not a crash
        return {"failed": f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"}
    return {"s_per_epoch": [round(r.seconds, 3) for r in history],
            "best_val_accuracy": round(max(r.val_accuracy for r in history), 4)}


def measure_compile(data: SearchData, epochs: int, reps: int) -> dict[str, Any]:
    """Eager against compiled over `epochs`, alternating which goes first. The first compiled
    epoch includes compiling (the training and the evaluation graphs): in the first
    repetition with an empty inductor cache (as a trial with a new architecture finds it),
    later from the cache `main` points at a fresh folder."""
    results = {}
    for name, case in compile_cases().items():
        runs: dict[str, list[dict[str, Any]]] = {"eager": [], "compiled": []}
        for rep in range(reps):
            for way in (("eager", "compiled") if rep % 2 == 0 else ("compiled", "eager")):
                torch._dynamo.reset()  # every trial builds a new model and compiles afresh
                runs[way].append(compiled_run(case, data, epochs, way == "compiled"))
        failed = [r["failed"] for r in runs["compiled"] if "failed" in r]
        if failed:
            results[name] = {"compile_failed": failed[0]}
            print(f"  {name}: compile failed: {failed[0]}", flush=True)
            continue
        share = len(slices(case, data)[0]) / len(data.train)
        results[name] = summarise_compile(runs, case["trial_epochs"], share)
        row = results[name]
        print(f"  {name}: compiling costs {row['compile_overhead_s_cold_cache']} s "
              f"({row['compile_overhead_s_warm_cache']} s from the cache), saves "
              f"{row['saving_s_per_epoch']} s per epoch; break-even after "
              f"{row['break_even_epochs_cold_cache']} epochs, a trial has {case['trial_epochs']}", flush=True)
    return results


def summarise_compile(runs: dict[str, list[dict[str, Any]]], trial_epochs: int,
                      share: float) -> dict[str, Any]:
    """Compile overhead (first compiled epoch minus first eager epoch) against the saving per
    later epoch, scaled from the timed `share` of the split to all of it."""
    eager_first = median([r["s_per_epoch"][0] for r in runs["eager"]])
    cold = runs["compiled"][0]["s_per_epoch"][0] - eager_first
    warm = median([r["s_per_epoch"][0] for r in runs["compiled"][1:]]) - eager_first
    eager_later = median([statistics.median(r["s_per_epoch"][1:]) for r in runs["eager"]]) / share
    compiled_later = median([statistics.median(r["s_per_epoch"][1:]) for r in runs["compiled"]]) / share
    saving = eager_later - compiled_later

    def break_even(overhead: float) -> float | None:
        return round(overhead / saving, 1) if saving > 0 else None

    return {
        "trial_epochs": trial_epochs,
        "timed_on_share_of_split": round(share, 3),
        "compile_overhead_s_cold_cache": round(cold, 1),
        "compile_overhead_s_warm_cache": round(warm, 1),
        "eager_s_per_epoch": round(eager_later, 3),
        "compiled_s_per_epoch": round(compiled_later, 3),
        "saving_s_per_epoch": round(saving, 3),
        "speedup_after_compiling": round(eager_later / compiled_later, 3),
        "break_even_epochs_cold_cache": break_even(cold),
        "break_even_epochs_warm_cache": break_even(warm),
        "pays_within_a_trial_cold_cache": saving > 0 and cold / saving <= trial_epochs,
        "trial_seconds_eager": round(eager_later * trial_epochs, 1),
        "trial_seconds_compiled_cold_cache": round(cold + compiled_later * trial_epochs, 1),
        # inductor draws dropout masks from its own generator: compiled runs are other runs
        "same_best_val_accuracy": runs["eager"][0]["best_val_accuracy"]
        == runs["compiled"][0]["best_val_accuracy"],
        "runs": runs,
    }


# --- main -------------------------------------------------------------------------------------

def main() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=DATA, help=f"KMNIST root (default {DATA})")
    p.add_argument("--fresh", action="store_true", help="ignore the results of an earlier run")
    p.add_argument("--skip-compile", action="store_true", help="part 1 only")
    args = p.parse_args()
    if not (args.data_dir / "KMNIST" / "raw").is_dir():
        print(f"skipped: no real KMNIST files under {args.data_dir} (pass --data-dir ROOT)")
        return
    set_threads(args.threads)
    name = "precision"
    # an empty inductor cache, so the first compile costs what a new architecture's does
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-precision-inductor-")
    path = RESULTS / (f"{name}.quick.tmp" if args.quick else f"{name}.json")
    earlier = {} if args.fresh or not path.exists() else json.loads(path.read_text())
    results: dict[str, Any] = {
        "benchmark": name, "quick": args.quick, "machine": machine(),
        "data": {"dir": str(args.data_dir), "val_fraction": VAL_FRACTION, "split_seed": TRAIN_SEED},
        "sampler_seed": SAMPLER_SEED, "train_seed": TRAIN_SEED,
        "draws": [asdict(draw) for draw in (QUICK_DRAWS if args.quick else DRAWS)],
        "pairs": earlier.get("pairs", {}),
        **({"compile": earlier["compile"]} if "compile" in earlier else {}),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        path.write_text(json.dumps(results, indent=2, default=str) + "\n")

    with tempfile.TemporaryDirectory(prefix="bench-precision-") as tmp:
        root = Path(tmp) / "kmnist"
        copy_root(args.data_dir, root)  # never read the shared copy in place
        data = load_search_data("kmnist", root, VAL_FRACTION, TRAIN_SEED, torch.device("cpu"))
        print(f"{len(data.train)} train / {len(data.val)} validation images; load "
              f"{results['machine']['load_average_1m']}", flush=True)
        configurations = draw_configurations(QUICK_DRAWS if args.quick else DRAWS)
        print(f"ranking: {len(configurations)} configurations, fp32 and bf16 each", flush=True)
        run_pairs(configurations, data, results["pairs"], save)
        results["ranking"] = summarise_ranking(results["pairs"], configurations)
        save()
        print(json.dumps({k: v for k, v in results["ranking"].items()}, indent=1), flush=True)
        if not args.skip_compile and "compile" not in results:
            print("torch.compile:", flush=True)
            results["compile"] = measure_compile(data, 2 if args.quick else 4, args.repetitions)
    results["machine_after"] = {"load_average_1m": machine()["load_average_1m"]}
    save()
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
