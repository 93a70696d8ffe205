"""The loop's per-op overheads, before and after: dropout masks, large pools, the
epoch permutation, the validation pass, and whole epochs with and without the changes.

Every candidate is timed against the way it replaces in the same repetition, the two
alternating; medians of --repetitions (>= 3), one thread. Shapes are the seed-000 MLP's
(784-512-256-10, dropout 0.2, batch 128) and the seed-004 CNN's at batch 16.

    .venv/bin/python benchmarks/loop_overheads.py [--quick] [--threads N]
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from common import as_before, begin, machine, median, parser, synthetic_root, write_results
from torch import nn
from train_loop import CASES, EPOCH_IMAGES

import objectives.training as training
from objectives.data import TensorSplit, load_raw, pixel_stats, to_device
from objectives.models import ConvBlock, Dropout, _pool
from objectives.training import evaluate, train, train_settings


def per_call_ms(work: Callable[[], Any], calls: int) -> float:
    work()  # warm-up: allocator, oneDNN primitive cache
    started = time.perf_counter()
    for _ in range(calls):
        work()
    return (time.perf_counter() - started) / calls * 1e3


def paired(before: Callable[[], Any], after: Callable[[], Any], calls: int, reps: int) -> dict[str, Any]:
    """ms per call of each way, alternating order per repetition; speed-up = before / after."""
    b, a = [], []
    for rep in range(reps):
        for way in ((before, b), (after, a)) if rep % 2 == 0 else ((after, a), (before, b)):
            way[1].append(per_call_ms(way[0], calls))
    return {"before_ms": round(median(b), 4), "after_ms": round(median(a), 4),
            "speedup": round(median([x / y for x, y in zip(b, a, strict=True)]), 3),
            "before_runs": [round(x, 4) for x in b], "after_runs": [round(x, 4) for x in a]}


# --- dropout --------------------------------------------------------------------------------

def dropout_step(kind: str, shape: tuple[int, ...], dtype: torch.dtype, p: float = 0.2) -> Callable[[], None]:
    """Forward and backward of a dropout module alone on an activation of `shape`: torch's
    nn.Dropout ("torch") or the product's objectives.models.Dropout."""
    x = torch.randn(shape, dtype=dtype, requires_grad=True)
    grad = torch.randn(shape, dtype=dtype)
    module = (nn.Dropout(p) if kind == "torch" else Dropout(p)).train()

    def run() -> None:
        module(x).backward(grad)
        x.grad = None
    return run


# --- the epoch permutation --------------------------------------------------------------------

def permutation(kind: str, split: TensorSplit) -> Callable[[], None]:
    buffers = training.ShuffleBuffers(split)

    def indexing() -> None:
        order = torch.randperm(len(split))
        split.images[order], split.labels[order]  # noqa: B018 - the gathers are the work

    def into_buffers() -> None:
        buffers.shuffled(torch.randperm(len(split)))
    return indexing if kind == "before" else into_buffers


# --- whole epochs -----------------------------------------------------------------------------

def pool_step(kind: str, pool: str, channels: int, size: int, kernel: int, stride: int,
              dtype: torch.dtype) -> Callable[[], None]:
    """Forward and backward of one pool at batch 16, channels_last as the loop trains."""
    block = ConvBlock(channels=channels, kernel_size=3, pool=pool, pool_kernel=kernel, pool_stride=stride)
    module = as_before(nn.Sequential(_pool(block))) if kind == "before" else _pool(block)
    x = torch.randn(16, channels, size, size, dtype=dtype).to(memory_format=torch.channels_last)
    x.requires_grad_()
    grad = torch.randn_like(module(x))

    def run() -> None:
        module(x).backward(grad)
        x.grad = None
    return run


def epoch_run(case_index: int, split: TensorSplit, val: TensorSplit, n: int, precision: str,
              way: str) -> Callable[[], None]:
    case = CASES[case_index]
    model = case.model()
    if way == "before":
        model = as_before(model)
    recipe = {"batch_size": case.batch_size, "learning_rate": case.params["learning_rate"]}
    settings = train_settings(recipe, epochs=1, seed=0, precision=precision)
    part = TensorSplit(split.images[:n], split.labels[:n])

    def run() -> None:
        saved = training.ShuffleBuffers
        if way == "before":
            training.ShuffleBuffers = OldShuffle
        try:
            train(model, part, val, settings)
        finally:
            training.ShuffleBuffers = saved
    return run


class OldShuffle:
    """The loop's earlier shuffle: a fresh gather of the split every epoch."""

    def __init__(self, split: TensorSplit) -> None:
        self.split = split

    def shuffled(self, order: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.split.images[order], self.split.labels[order]


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    before = begin(args)
    reps = args.repetitions
    results: dict[str, Any] = {"benchmark": "loop_overheads", "quick": args.quick, "machine": before}
    calls = 50 if args.quick else 400

    results["dropout_fwd_bwd"] = {}
    for shape in ((128, 512), (128, 256), (16, 16, 12, 12)):
        for dtype in (torch.float32, torch.bfloat16):
            key = f"{'x'.join(map(str, shape))}_{str(dtype).removeprefix('torch.')}"
            results["dropout_fwd_bwd"][key] = row = paired(
                dropout_step("torch", shape, dtype), dropout_step("product", shape, dtype), calls, reps)
            print(f"  dropout {key}: torch {row['before_ms']} ms, product {row['after_ms']} ms "
                  f"({row['speedup']}x)", flush=True)

    # the seed-004 CNN's pools on its maps (batch 16): 7x7/1 max on 16x28x28, 5x5/1 max on
    # 8x22x22, 7x7/2 avg on 4x18x18
    results["pool_fwd_bwd"] = {}
    for pool, channels, size, kernel, stride in (("max", 16, 28, 7, 1), ("max", 8, 22, 5, 1),
                                                 ("avg", 4, 18, 7, 2), ("max", 32, 28, 2, 2)):
        for dtype in (torch.float32, torch.bfloat16):
            key = f"{pool}{kernel}s{stride}_{channels}x{size}x{size}_{str(dtype).removeprefix('torch.')}"
            results["pool_fwd_bwd"][key] = row = paired(
                pool_step("before", pool, channels, size, kernel, stride, dtype),
                pool_step("after", pool, channels, size, kernel, stride, dtype), calls // 2, reps)
            print(f"  pool {key}: one window {row['before_ms']} ms, product {row['after_ms']} ms "
                  f"({row['speedup']}x)", flush=True)

    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory(prefix="bench-overheads-") as tmp:
        images, labels = load_raw("kmnist", synthetic_root(Path(tmp), EPOCH_IMAGES), train=True)
        mean, std = pixel_stats(images)
        split = to_device(images, labels, mean, std, torch.device("cpu"))
    val = TensorSplit(split.images[:1169], split.labels[:1169])  # the kmnist-7k split's size

    n_perm = 5_842
    part = TensorSplit(split.images[:n_perm], split.labels[:n_perm])
    results["permutation_5842"] = paired(permutation("before", part), permutation("after", part),
                                         20 if args.quick else 100, reps)
    results["permutation_60000"] = paired(permutation("before", split), permutation("after", split),
                                          5 if args.quick else 20, reps)
    print(f"  permutation: {results['permutation_5842']['speedup']}x (5,842 images), "
          f"{results['permutation_60000']['speedup']}x (60,000)", flush=True)

    # the validation pass against a training epoch of the search's split (5,842 / 1,169)
    mlp = CASES[0].model()
    train_part = TensorSplit(split.images[:5_842], split.labels[:5_842])
    results["validation_share"] = {}
    for precision in ("fp32", "bf16"):
        settings = train_settings({"batch_size": 128, "learning_rate": 1e-3}, 1, 0, precision=precision)
        epoch_ms = median([per_call_ms(lambda s=settings: train(mlp, train_part, None, s), 2)
                           for _ in range(reps)])
        val_ms = median([per_call_ms(lambda p=precision: evaluate(mlp, val, p), 5) for _ in range(reps)])
        results["validation_share"][precision] = {"train_epoch_ms": round(epoch_ms, 1),
                                                  "validation_ms": round(val_ms, 2),
                                                  "share": round(val_ms / (epoch_ms + val_ms), 4)}
    print(f"  validation pass: {results['validation_share']}", flush=True)

    # whole epochs with validation, on the search's split size, before and after
    results["epoch_before_after"] = {}
    n_mlp = 5_842
    for index, name, n, precision in ((0, "mlp_000_exp1", n_mlp, "fp32"), (0, "mlp_000_exp1", n_mlp, "bf16"),
                                      (1, "cnn_004_b16", 800 if args.quick else 2_000, "fp32"),
                                      (1, "cnn_004_b16", 800 if args.quick else 2_000, "bf16"),
                                      (3, "cnn_beyond_best", 400 if args.quick else 1_000, "bf16")):
        key = f"{name}_{precision}"
        results["epoch_before_after"][key] = row = paired(
            epoch_run(index, split, val, n, precision, "before"),
            epoch_run(index, split, val, n, precision, "after"), 1 if args.quick else 3, reps)
        row["images"] = n
        print(f"  epoch {key} ({n} images + 1,169 validation): before {row['before_ms']:.0f} ms, "
              f"after {row['after_ms']:.0f} ms ({row['speedup']}x)", flush=True)
    results["machine_after"] = {"load_average_1m": machine()["load_average_1m"]}
    print(f"wrote {write_results('loop_overheads', results, quick=args.quick)}")


if __name__ == "__main__":
    main()
