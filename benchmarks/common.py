"""What every benchmark shares: the machine record, repeated timings, the results file."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch loads only where a benchmark measures with it, so --help and analyses start fast
    import torch
    from torch import nn

RESULTS = Path(__file__).resolve().parent / "results"
# the real KMNIST root the benchmarks read (7,011 training images, the official 10,000 test images)
KMNIST_7K = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "kmnist-7k"
CLI = Path(sys.executable).parent / "kmnist-search"
REPETITIONS = 3
# BENCHMARKS.md part 4's best cnn_beyond trial, as Optuna parameters (train_loop.py times it)
BEST_CNN_BEYOND = {
    "n_conv_blocks": 2, "kernel_1": 7, "channels_1": 32, "pool_1": "max2s2", "kernel_2": 7,
    "channels_2": 64, "pool_2": "avg2s2", "convs_per_block": 1, "global_pool": False,
    "dense_layers": "64", "dropout": 0.05648, "dropout_placement": "both", "activation": "silu",
    "batch_norm": True, "optimizer": "sgd", "learning_rate": 0.13168, "use_weight_decay": False,
    "lr_schedule": "onecycle", "label_smoothing": 0.10361, "max_shift": 1, "max_rotation": 10.4456,
    "batch_size": 16,
}


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="a smoke run on small slices (seconds)")
    # two OpenMP threads on a shared 2-core machine stall whenever another process runs
    # (see BENCHMARKS.md); one thread gives stable figures; --threads 2 on a quiet machine
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--repetitions", type=int, default=REPETITIONS, help="timed repetitions (>= 3)")
    return p


def cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return fields
    for line in text.split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def machine() -> dict[str, Any]:
    import torch

    info = cpuinfo()
    flags = set(info.get("flags", "").split())
    return {
        "cpu_model": info.get("model name", platform.processor() or "unknown"),
        "cpu_family_model_stepping": [info.get("cpu family"), info.get("model"), info.get("stepping")],
        "cpu_mhz": info.get("cpu MHz"),
        "cpu_flags_of_interest": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "fma"}),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cuda_available": torch.cuda.is_available(),
        "python": platform.python_version(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def begin(args: argparse.Namespace) -> dict[str, Any]:
    """What every timing benchmark does first: refuse fewer than 3 repetitions, set the
    threads, record and print the machine."""
    if args.repetitions < 3:
        raise SystemExit("--repetitions must be at least 3: speed figures are medians of >= 3 runs")
    set_threads(args.threads)
    record = machine()
    print(f"machine: {record['cpu_model']}, {record['usable_cores']} cores, torch {record['torch']}, "
          f"{args.threads} thread(s); load {record['load_average_1m']}", flush=True)
    return record


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def timed(work: Callable[[], Any]) -> dict[str, Any]:
    """Wall seconds of `work()`, the CPU seconds this process spent meanwhile, its value.

    CPU seconds well below threads x wall seconds mean other processes took the cores;
    at one thread, CPU seconds are the time the work held a core.
    """
    cpu, wall = time.process_time(), time.perf_counter()
    value = work()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"seconds": wall, "cpu_seconds": cpu, "cpu_share": cpu / wall if wall > 0 else 0.0,
            "value": value}


def median(values: list[float]) -> float:
    return statistics.median(values)


def ratios(numerators: list[float], denominators: list[float]) -> list[float]:
    """Per-repetition ratios: both sides of each were measured in the same repetition."""
    return [x / y for x, y in zip(numerators, denominators, strict=True)]


def matmul_gflops(threads: int, size: int = 1024, calls: int = 10,
                  dtype: torch.dtype | None = None) -> dict[str, float]:
    """This machine's matmul rate in `dtype` (default float32) at `threads` threads, the compute
    ceiling: GFLOP per wall second and per CPU second."""
    import torch

    dtype = dtype or torch.float32
    set_threads(threads)
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(2):
        torch.mm(a, b)
    result = timed(lambda: [torch.mm(a, b) for _ in range(calls)])
    gflop = 2 * size**3 * calls / 1e9
    return {"wall": gflop / result["seconds"], "cpu": gflop / result["cpu_seconds"] * threads}


def write_results(name: str, payload: dict[str, Any], quick: bool = False) -> Path:
    """results/NAME.json; a --quick smoke run writes NAME.quick.tmp (git ignores it)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / (f"{name}.quick.tmp" if quick else f"{name}.json")
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


def as_before(model: nn.Module) -> nn.Module:
    """The model as built before the loop-overhead changes (BENCHMARKS 1): torch's nn.Dropout in place of
    objectives' Dropout, one k x k pool in place of the separable pair."""
    from torch import nn

    for name, child in model.named_children():
        if isinstance(child, nn.Dropout):
            setattr(model, name, nn.Dropout(child.p))
        elif isinstance(child, nn.Sequential) and len(child) == 2 and all(
                isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) for m in child):
            rows, cols = child[0], child[1]
            setattr(model, name, type(rows)(rows.kernel_size[1], rows.stride[1]))
            assert cols.kernel_size[0] == rows.kernel_size[1] and cols.stride[0] == rows.stride[1]
        else:
            as_before(child)
    return model


def first_reaching(run: dict[str, Any], level: float) -> dict[str, Any] | None:
    """The first trial (within the budget) after which a search's best is at least `level`."""
    for t in run["trials"]:
        if t["elapsed_s"] <= run["budget_s"] and t["best_so_far"] >= level - 1e-9:
            return t
    return None


def synthetic_root(folder: Path, n: int, seed: int = 0) -> Path:
    """A torchvision-layout KMNIST root of random uint8 images: speed does not depend on content."""
    from objectives.data import write_root

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    write_root(folder, "kmnist", (images, labels), (images[:1000], labels[:1000]))
    return folder


def copy_root(source: Path, target: Path) -> Path:
    """A writable copy of a dataset root (the product unpacks archives beside them; nothing
    writes into the source)."""
    for file in source.rglob("*"):
        if file.is_file():
            (target / file.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, target / file.relative_to(source))
    return target


def distinct(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each different row once, in first-seen order (dicts are not hashable)."""
    seen: list[dict[str, Any]] = []
    for row in rows:
        if row not in seen:
            seen.append(row)
    return seen
