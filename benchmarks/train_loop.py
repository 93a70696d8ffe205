"""Training-loop throughput (issue 7 part 1): one epoch over 60,000 synthetic images.

Three ways, measured in one run and compared as ratios:
(a) the reports' way: torchvision's KMNIST Dataset with ToTensor + Normalize, a default
    DataLoader(shuffle=True), Adam, `loss.item()` every batch;
(b) the product's shared loop, `objectives.training.train`;
(c) the compute limit: the epoch's training FLOPs at this machine's measured matmul rate.
Then a profile of (b) and experimental variants of it, each timed against (b) as it is.

    .venv/bin/python benchmarks/train_loop.py [--quick] [--threads N]
"""

from __future__ import annotations

import contextlib
import functools
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from common import (
    machine,
    matmul_gflops,
    median,
    parser,
    ratios,
    set_threads,
    timed,
    usable_cores,
    write_results,
)
from torch import nn
from torch.profiler import ProfilerActivity, profile
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.flop_counter import FlopCounterMode
from torchvision import datasets, transforms

import objectives.training as training
from objectives.data import TensorSplit, load_raw, pixel_stats, to_device, write_root
from objectives.models import build_model, model_config
from objectives.training import TrainSettings, seed_everything, train
from spaces.documented import R000_EXP1, R004_EXP1

EPOCH_IMAGES = 60_000
CPU = torch.device("cpu")
# targets of issue 7 for the MLP
TARGET_SPEEDUP = 2.5
TARGET_LIMIT_FRACTION = 0.80


@dataclass(frozen=True)
class Case:
    name: str
    family: str
    params: dict[str, Any]
    timed_images: int  # images trained per timing; seconds are scaled to EPOCH_IMAGES
    quick_images: int
    variants: tuple[str, ...] = ()
    variant_images: int = 0
    note: str = ""

    @property
    def batch_size(self) -> int:
        return self.params["batch_size"]

    def model(self) -> nn.Module:
        seed_everything(0)
        return build_model(model_config(self.family, self.params, 10))


CASES = (
    Case("mlp_000_exp1", "mlp", R000_EXP1.config, EPOCH_IMAGES, 6_400,
         ("adam_fused", "adam_foreach", "bf16_autocast"), 12_800,
         "seed 000 experiment 1: 784-512-256-10, dropout 0.2, Adam 1e-3, batch 128"),
    Case("cnn_004_b16", "cnn", R004_EXP1.config, 4_000, 320,
         ("channels_last", "channels_last+adam_fused", "bf16_autocast"), 2_000,
         "seed 004 CNN (spaces/documented.py CNN_004_BLOCKS), batch 16 as documented"),
    Case("cnn_004_b128", "cnn", {**R004_EXP1.config, "batch_size": 128}, 4_000, 384,
         ("channels_last", "channels_last+adam_fused"), 2_048,
         "seed 004 CNN at batch 128, for reference"),
)


# --- data -------------------------------------------------------------------------------

def synthetic_root(folder: Path, n: int, seed: int = 0) -> Path:
    """A torchvision-layout KMNIST root of random uint8 images: speed does not depend on content."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    write_root(folder, "kmnist", (images, labels), (images[:1000], labels[:1000]))
    return folder


@dataclass
class EpochData:
    product: TensorSplit  # (b): normalised float32 on the device, as load_search_data makes it
    reports: Dataset  # (a): torchvision's KMNIST with per-image transforms


def load(folder: Path) -> EpochData:
    images, labels = load_raw("kmnist", folder, train=True)  # also unpacks the .gz files
    mean, std = pixel_stats(images)
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((mean,), (std,))])
    return EpochData(to_device(images, labels, mean, std, CPU),
                     datasets.KMNIST(str(folder), train=True, transform=transform))


# --- (a) and (b) ------------------------------------------------------------------------

def reports_epoch(model: nn.Module, dataset: Dataset, batch_size: int, learning_rate: float) -> float:
    """The loop the reports (and most tutorials) wrote."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    criterion = nn.CrossEntropyLoss()
    model.train()
    running_loss = 0.0
    for images, labels in loader:
        optimizer.zero_grad()
        loss = criterion(model(images), labels)
        loss.backward()
        optimizer.step()
        running_loss += loss.item() * len(labels)
    return running_loss / len(dataset)


def product_epoch(model: nn.Module, split: TensorSplit, case: Case, n: int) -> float:
    part = TensorSplit(split.images[:n], split.labels[:n])
    settings = TrainSettings(epochs=1, batch_size=case.batch_size,
                             learning_rate=case.params["learning_rate"], seed=0)
    return train(model, part, None, settings)[0].train_loss


# --- experimental variants of (b): the product's loop with one change patched in ----------

ORIGINAL_ADAM = torch.optim.Adam
# the changes to objectives/training.py this benchmark recommends (see BENCHMARKS.md)
RECOMMENDED = "channels_last+adam_fused"


def _bf16_autocast(device: torch.device) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=True)


@contextlib.contextmanager
def changed_loop(variant: str) -> Iterator[None]:
    """The product's own `train`, with changes patched in for the duration ("" for none).

    adam_fused / adam_foreach: `torch.optim.Adam(..., fused=True)` / `foreach=True`;
    bf16_autocast: `_autocast` enabled on the CPU too; channels_last: the model's memory
    format (set by `product_run`). Several join with "+".
    """
    with contextlib.ExitStack() as stack:
        for part in variant.split("+"):
            if part.startswith("adam_"):
                option = part.removeprefix("adam_")
                stack.enter_context(mock.patch.object(
                    torch.optim, "Adam", functools.partial(ORIGINAL_ADAM, **{option: True})))
            elif part == "bf16_autocast":
                stack.enter_context(mock.patch.object(training, "_autocast", _bf16_autocast))
        yield


def reports_run(case: Case, dataset: Dataset, n: int) -> Callable[[], float]:
    """(a), ready to time: the model is built before the clock starts."""
    model, subset = case.model(), Subset(dataset, range(n))
    return lambda: reports_epoch(model, subset, case.batch_size, case.params["learning_rate"])


def product_run(case: Case, split: TensorSplit, n: int, variant: str = "") -> Callable[[], float]:
    """(b), or (b) with an experimental `variant` (see `changed_loop`), ready to time."""
    model = case.model()
    if "channels_last" in variant:
        model = model.to(memory_format=torch.channels_last)

    def run() -> float:
        with changed_loop(variant):
            return product_epoch(model, split, case, n)

    return run


# --- (c) --------------------------------------------------------------------------------

def flops_per_image(case: Case) -> dict[str, float]:
    """Counted matmul/conv FLOPs of one training step, per image (FlopCounterMode)."""
    model = case.model()
    x, y = torch.randn(case.batch_size, 1, 28, 28), torch.randint(0, 10, (case.batch_size,))
    with FlopCounterMode(display=False) as forward:
        logits = model(x)
    loss = F.cross_entropy(logits, y)
    with FlopCounterMode(display=False) as backward:
        loss.backward()
    fwd, bwd = forward.get_total_flops(), backward.get_total_flops()
    return {"forward": fwd / case.batch_size, "counted_training": (fwd + bwd) / case.batch_size,
            "three_times_forward": 3 * fwd / case.batch_size}


def measure_ways(cases: tuple[Case, ...], data: EpochData, quick: bool, threads: int,
                 reps: int) -> dict[str, dict[str, list[float]]]:
    """For each case and repetition: the matmul rate, then (a), (b) and (b) with the
    recommended changes, in alternating order.

    Seconds per epoch by the wall clock, and by CPU time / threads (what the work took
    while it held the cores: robust to other processes on a shared machine).
    """
    runs: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for rep in range(reps):
        for case in cases:
            n = case.quick_images if quick else case.timed_images
            row = runs[case.name]
            rate = matmul_gflops(threads)
            row["matmul_gflops"].append(rate["wall"])
            row["matmul_gflops_cpu"].append(rate["cpu"])
            ways = {
                "a_reports": lambda c=case, n=n: reports_run(c, data.reports, n),
                "b_product": lambda c=case, n=n: product_run(c, data.product, n),
                "b_recommended": lambda c=case, n=n: product_run(c, data.product, n, RECOMMENDED),
            }
            for way in (list(ways) if rep % 2 == 0 else list(reversed(ways))):  # cancels drift
                result = timed(ways[way]())
                row[way].append(result["seconds"] * EPOCH_IMAGES / n)
                row[way + "_cpu"].append(result["cpu_seconds"] / threads * EPOCH_IMAGES / n)
            print(f"  rep {rep + 1}: {case.name}: (a) {row['a_reports'][-1]:.2f} s/epoch, "
                  f"(b) {row['b_product'][-1]:.2f}, recommended {row['b_recommended'][-1]:.2f} s/epoch, "
                  f"matmul {rate['wall']:.1f} GFLOP/s", flush=True)
    return runs


def against_targets(row: dict[str, Any], speedup: str, counted: str, forward: str) -> dict[str, Any]:
    wanted = ((speedup, TARGET_SPEEDUP), (counted, TARGET_LIMIT_FRACTION), (forward, TARGET_LIMIT_FRACTION))
    return {key.removeprefix("b_"): {"target": target, "measured": row[key], "met": row[key] >= target}
            for key, target in wanted}


def summarise(case: Case, flops: dict[str, float], runs: dict[str, list[float]], n: int) -> dict[str, Any]:
    def limit(kind: str, rates: list[float]) -> list[float]:
        return [flops[kind] * EPOCH_IMAGES / (r * 1e9) for r in rates]

    a, b, rec = runs["a_reports"], runs["b_product"], runs["b_recommended"]
    limit_counted = limit("counted_training", runs["matmul_gflops"])
    limit_3x = limit("three_times_forward", runs["matmul_gflops"])
    limit_counted_cpu = limit("counted_training", runs["matmul_gflops_cpu"])
    summary = {
        "model": case.note,
        "batch_size": case.batch_size,
        "images_timed_per_run": n,
        "scaled_to_epoch_of": EPOCH_IMAGES,
        "forward_mflop_per_image": round(flops["forward"] / 1e6, 4),
        "training_mflop_per_image_counted": round(flops["counted_training"] / 1e6, 4),
        "a_reports_s_per_epoch": round(median(a), 3),
        "b_product_s_per_epoch": round(median(b), 3),
        "c_limit_s_per_epoch_counted": round(median(limit_counted), 3),
        "c_limit_s_per_epoch_3x_forward": round(median(limit_3x), 3),
        "speedup_b_vs_a": round(median(ratios(a, b)), 3),
        "b_fraction_of_limit_counted": round(median(ratios(limit_counted, b)), 3),
        "b_fraction_of_limit_3x_forward": round(median(ratios(limit_3x, b)), 3),
        "b_recommended": {
            "change": RECOMMENDED,
            "s_per_epoch": round(median(rec), 3),
            "speedup_vs_b": round(median(ratios(b, rec)), 3),
            "speedup_vs_a": round(median(ratios(a, rec)), 3),
            "fraction_of_limit_counted": round(median(ratios(limit_counted, rec)), 3),
            "fraction_of_limit_3x_forward": round(median(ratios(limit_3x, rec)), 3),
        },
        "by_cpu_time": {
            "speedup_b_vs_a": round(median(ratios(runs["a_reports_cpu"], runs["b_product_cpu"])), 3),
            "b_fraction_of_limit_counted": round(median(ratios(limit_counted_cpu, runs["b_product_cpu"])), 3),
            "b_recommended_fraction_of_limit_counted": round(
                median(ratios(limit_counted_cpu, runs["b_recommended_cpu"])), 3),
        },
        "runs": {key: [round(v, 3) for v in values] for key, values in runs.items()},
    }
    if case.family == "mlp":
        summary["targets"] = against_targets(summary, "speedup_b_vs_a", "b_fraction_of_limit_counted",
                                             "b_fraction_of_limit_3x_forward")
        summary["targets_with_recommended_change"] = against_targets(
            summary["b_recommended"], "speedup_vs_a", "fraction_of_limit_counted",
            "fraction_of_limit_3x_forward")
    return summary


# --- profile of (b) -----------------------------------------------------------------------

KERNELS = {"aten::mm", "aten::addmm", "aten::mkldnn_convolution", "aten::convolution_backward"}


def category(name: str) -> str:
    """Which part of the loop a top-level profiler event belongs to."""
    if name.startswith("Optimizer.step"):
        return "optimizer step (Adam)"
    if name.startswith("Optimizer.zero_grad"):
        return "zero_grad"
    if name.startswith("autograd::engine"):
        return "backward"
    if name in ("aten::randperm", "aten::index", "aten::slice"):
        return "epoch permutation and batch slicing"
    if name in ("aten::mul", "aten::add_", "aten::detach", "aten::zeros", "aten::item",
                "aten::_local_scalar_dense"):
        return "loss bookkeeping"
    return "forward"


def profile_product(case: Case, split: TensorSplit, n: int, channels_last: bool = False) -> dict[str, Any]:
    variant = "channels_last" if channels_last else ""
    unprofiled = timed(product_run(case, split, n, variant))["seconds"]
    run = product_run(case, split, n, variant)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        wall = timed(run)["seconds"]
    top: dict[str, float] = defaultdict(float)
    names: dict[str, set[str]] = defaultdict(set)
    for event in prof.events():
        if event.cpu_parent is None:
            top[category(event.name)] += event.cpu_time_total / 1e6
            names[category(event.name)].add(event.name)
    averages = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    self_total = sum(e.self_cpu_time_total for e in averages) / 1e6
    kernels = sum(e.self_cpu_time_total for e in averages if e.key in KERNELS) / 1e6
    breakdown = {k: round(v / wall, 3) for k, v in sorted(top.items(), key=lambda kv: -kv[1])}
    breakdown["python and untraced"] = round(max(0.0, wall - sum(top.values())) / wall, 3)
    return {
        "images": n,
        "memory_format": "channels_last" if channels_last else "contiguous (as the product runs)",
        "seconds_unprofiled": round(unprofiled, 3),
        "seconds_profiled": round(wall, 3),
        "share_of_wall_by_part": breakdown,
        "ops_in_part": {k: sorted(v)[:12] for k, v in names.items()},
        "matmul_conv_kernel_share": round(kernels / wall, 3),
        "top_ops_by_self_cpu": [
            {"op": e.key, "calls": e.count, "self_ms": round(e.self_cpu_time_total / 1e3, 1),
             "share_of_self_total": round(e.self_cpu_time_total / 1e6 / self_total, 3)}
            for e in averages[:10]
        ],
    }


# --- variants, threads and the shuffle, each against (b) as it is --------------------------

def measure_variants(case: Case, split: TensorSplit, n: int, reps: int) -> dict[str, Any]:
    """Each variant against the unchanged loop, interleaved in every repetition."""
    seconds: dict[str, list[float]] = defaultdict(list)
    losses: dict[str, float] = {}
    unavailable: dict[str, str] = {}
    for _ in range(reps):
        for variant in ("as_is", *case.variants):
            if variant in unavailable:
                continue
            try:
                result = timed(product_run(case, split, n, "" if variant == "as_is" else variant))
            except AttributeError as error:  # objectives.training changed shape meanwhile
                unavailable[variant] = str(error)
                continue
            seconds[variant].append(result["seconds"])
            losses[variant] = result["value"]
    base = seconds["as_is"]
    return {
        "images": n,
        "seconds_as_is": [round(s, 3) for s in base],
        **{variant: {
            "speedup_vs_as_is": round(median(ratios(base, seconds[variant])), 3),
            "seconds": [round(s, 3) for s in seconds[variant]],
            "epoch_train_loss": round(losses[variant], 5),
            "epoch_train_loss_as_is": round(losses["as_is"], 5),
        } for variant in case.variants if variant not in unavailable},
        **({"unavailable": unavailable} if unavailable else {}),
    }


def measure_optimizer_step(case: Case, reps: int, steps: int = 50) -> dict[str, Any]:
    """Adam's step alone on the case's parameters: as the product builds it (single-tensor,
    torch's CPU default), fused, foreach; milliseconds per step, interleaved."""
    model = case.model()
    for parameter in model.parameters():
        parameter.grad = torch.randn_like(parameter)
    lr = case.params["learning_rate"]
    optimizers = {"as_is": ORIGINAL_ADAM(model.parameters(), lr=lr),
                  "fused": ORIGINAL_ADAM(model.parameters(), lr=lr, fused=True),
                  "foreach": ORIGINAL_ADAM(model.parameters(), lr=lr, foreach=True)}
    ms: dict[str, list[float]] = defaultdict(list)
    for _ in range(reps):
        for name, optimizer in optimizers.items():
            optimizer.step()  # creates the state outside the clock
            ms[name].append(timed(lambda o=optimizer: [o.step() for _ in range(steps)])["seconds"]
                            / steps * 1e3)
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        **{name: {"ms_per_step": round(median(values), 3),
                  "speedup_vs_as_is": round(median(ratios(ms["as_is"], values)), 2)}
           for name, values in ms.items()},
    }


def measure_threads(case: Case, split: TensorSplit, n: int, threads: int, reps: int) -> dict[str, Any]:
    """The unchanged loop at `threads` vs at one thread per usable core, interleaved."""
    counts = sorted({threads, usable_cores()})
    seconds: dict[int, list[float]] = defaultdict(list)
    shares: dict[int, list[float]] = defaultdict(list)
    for _ in range(reps):
        for count in counts:
            set_threads(count)
            result = timed(product_run(case, split, n))
            seconds[count].append(result["seconds"])
            shares[count].append(round(result["cpu_share"], 2))
    set_threads(threads)
    base = seconds[threads]
    return {
        "images": n,
        "benchmark_threads": threads,
        **{f"{count}_threads": {
            "seconds": [round(s, 3) for s in seconds[count]],
            "cpu_share": shares[count],
            "speedup_vs_benchmark_threads": round(median(ratios(base, seconds[count])), 3),
        } for count in counts},
    }


def measure_permutation(split: TensorSplit, reps: int) -> list[float]:
    """What the loop's once-per-epoch shuffle costs: randperm and two gathers of the split."""
    def shuffle() -> None:
        order = torch.randperm(len(split))
        split.images[order], split.labels[order]  # noqa: B018 - the gathers are the work

    return [timed(shuffle)["seconds"] for _ in range(reps)]


# --- main -----------------------------------------------------------------------------------

def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    if args.repetitions < 3:
        raise SystemExit("--repetitions must be at least 3: speed figures are medians of >= 3 runs")
    set_threads(args.threads)
    reps = args.repetitions
    machine_before = machine()
    print(f"machine: {machine_before['cpu_model']}, {machine_before['usable_cores']} cores, torch "
          f"{machine_before['torch']}, {args.threads} thread(s); load {machine_before['load_average_1m']}")
    with tempfile.TemporaryDirectory(prefix="bench-train-loop-") as tmp:
        n_images = max(c.quick_images if args.quick else c.timed_images for c in CASES)
        data = load(synthetic_root(Path(tmp), n_images))
        print(f"(a) vs (b), {reps} repetitions:", flush=True)
        runs = measure_ways(CASES, data, args.quick, args.threads, reps)
        flops = {case.name: flops_per_image(case) for case in CASES}
        rates = [r for case in CASES for r in runs[case.name]["matmul_gflops"]]
        results: dict[str, Any] = {
            "benchmark": "train_loop",
            "quick": args.quick,
            "machine": machine_before,
            "matmul_gflops_1024_float32": {"median": round(median(rates), 1),
                                           "runs": [round(r, 1) for r in rates]},
            "models": {case.name: summarise(case, flops[case.name], runs[case.name],
                                            case.quick_images if args.quick else case.timed_images)
                       for case in CASES},
        }
        for name, row in results["models"].items():
            print(f"  {name}: (a) {row['a_reports_s_per_epoch']} s, (b) {row['b_product_s_per_epoch']} s, "
                  f"(c) {row['c_limit_s_per_epoch_counted']} s; b/a speed-up {row['speedup_b_vs_a']}x, "
                  f"b at {row['b_fraction_of_limit_counted']:.0%} of the limit; recommended "
                  f"{row['b_recommended']['s_per_epoch']} s ({row['b_recommended']['speedup_vs_a']}x, "
                  f"{row['b_recommended']['fraction_of_limit_counted']:.0%})", flush=True)

        print("profile of (b):", flush=True)
        mlp, cnn16 = CASES[0], CASES[1]
        small = 2_560 if args.quick else 12_800
        cnn_small = 160 if args.quick else 800
        results["profile"] = {
            mlp.name: profile_product(mlp, data.product, small),
            cnn16.name: profile_product(cnn16, data.product, cnn_small),
            cnn16.name + "_channels_last": profile_product(cnn16, data.product, cnn_small, True),
        }
        for name, prof in results["profile"].items():
            print(f"  {name}: {prof['share_of_wall_by_part']}", flush=True)

        print("variants of (b):", flush=True)
        results["variants"] = {}
        for case in CASES:
            n = case.quick_images if args.quick else case.variant_images
            # short slices: more repetitions for the same noise
            results["variants"][case.name] = measure_variants(case, data.product, n, max(reps, 5))
            row = results["variants"][case.name]
            print(f"  {case.name}: " + ", ".join(
                f"{v} {row[v]['speedup_vs_as_is']}x" for v in case.variants if v in row), flush=True)
        results["optimizer_step"] = {case.name: measure_optimizer_step(case, max(reps, 5))
                                     for case in CASES[:2]}
        steps = -(-EPOCH_IMAGES // mlp.batch_size)
        mlp_step_ms = results["models"][mlp.name]["b_product_s_per_epoch"] / steps * 1e3
        results["optimizer_step"]["mlp_step_ms_in_b"] = round(mlp_step_ms, 3)
        print(f"  optimizer step alone: {results['optimizer_step']}", flush=True)
        results["threads"] = measure_threads(mlp, data.product, 1_280 if args.quick else 2_560,
                                             args.threads, reps)
        print(f"  threads: {results['threads']}", flush=True)
        permutation = [s * EPOCH_IMAGES / len(data.product) for s in measure_permutation(data.product, reps)]
        mlp_epoch = results["models"][mlp.name]["b_product_s_per_epoch"]
        results["epoch_permutation"] = {
            "seconds_per_epoch": [round(s, 4) for s in permutation],
            "share_of_mlp_epoch": round(median(permutation) / mlp_epoch, 4),
        }
    results["machine_after"] = {"load_average_1m": machine()["load_average_1m"]}
    path = write_results("train_loop", results, quick=args.quick)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
