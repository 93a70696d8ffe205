"""The one training loop shared by every model family, plus evaluation.

The whole split lives on the device; each epoch permutes it once and batches are
contiguous slices, so there is no per-sample Python work and no DataLoader.
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from objectives.augment import Augmentation, random_affine
from objectives.data import TensorSplit
from objectives.errors import DeviceUnavailableError, TensorFileError
from objectives.tensor_files import load_tensor_file, save_tensor_file
from spaces.base import REPORTS_DEFAULTS

EVAL_BATCH = 4096
OPTIMIZERS = ("adam", "adamw", "sgd")
PRECISIONS = ("fp32", "bf16")  # what a run computes in; `resolve_precision` turns "auto" into one
LR_SCHEDULES = ("constant", "cosine", "onecycle")
SGD_MOMENTUM = 0.9


@dataclass(frozen=True)
class TrainSettings:
    """Defaults are the reports' choices: Adam at a constant rate, no smoothing, no augmentation."""

    epochs: int
    batch_size: int
    learning_rate: float  # the peak rate for the one-cycle schedule
    weight_decay: float = 0.0  # L2 in the gradient for adam and sgd, decoupled for adamw
    seed: int = 0
    early_stopping_patience: int | None = None  # epochs without a lower validation loss
    optimizer: str = "adam"
    lr_schedule: str = "constant"  # cosine and onecycle span all `epochs`, stepped per batch
    label_smoothing: float = 0.0
    augmentation: Augmentation = field(default_factory=Augmentation)
    precision: str = "fp32"  # "bf16": autocast matmuls and convolutions, weights stay float32

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}: use {', '.join(PRECISIONS)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}: use {', '.join(OPTIMIZERS)}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr_schedule {self.lr_schedule!r}: use {', '.join(LR_SCHEDULES)}")


def train_settings(params: Mapping[str, Any], epochs: int, seed: int,
                   early_stopping_patience: int | None = None, precision: str = "fp32") -> TrainSettings:
    """A trial's (or an exported configuration's) plain parameters as training settings;
    knobs they do not name keep the reports' choices."""
    params = {**REPORTS_DEFAULTS, **params}
    return TrainSettings(
        epochs=epochs, batch_size=params["batch_size"], learning_rate=params["learning_rate"],
        weight_decay=params.get("weight_decay", 0.0), seed=seed,
        early_stopping_patience=early_stopping_patience,
        optimizer=params["optimizer"], lr_schedule=params["lr_schedule"],
        label_smoothing=params["label_smoothing"],
        augmentation=Augmentation(params["max_shift"], params["max_rotation"]),
        precision=precision,
    )


@dataclass(frozen=True)
class EpochResult:
    epoch: int  # 1-based
    train_loss: float
    val_loss: float  # NaN when training without a validation split
    val_accuracy: float
    seconds: float
    restored: bool = False  # replayed from a checkpoint, not trained in this run


@dataclass(frozen=True)
class Evaluation:
    loss: float
    accuracy: float
    predictions: torch.Tensor  # int64 on the CPU


class NonFiniteLossError(ArithmeticError):
    def __init__(self, epoch: int, loss: float) -> None:
        super().__init__(f"training loss became {loss} in epoch {epoch}")
        self.epoch = epoch


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (full disk, permissions); training can go on without."""


Scheduler = torch.optim.lr_scheduler.LRScheduler


CHECKPOINT_FORMAT = "kmnist-search-checkpoint/2"
LEGACY_CHECKPOINT_SUFFIX = ".pt"  # torch.save files of format 1: never loaded


class CheckpointReadError(ValueError):
    """A checkpoint that cannot be resumed from; the trial restarts from epoch 0."""


@dataclass(frozen=True)
class Checkpoint:
    """Where a run's epoch checkpoint lives, and the digest that proves a file there is the one
    this run (or the run it resumes) wrote: a file put there by anyone else is not loaded."""

    path: Path
    expected_sha256: str | None = None  # digest recorded when the file was last written
    on_saved: Callable[[str], None] | None = None  # receives the digest of each file written


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checked_history(entries: object, max_epochs: int) -> list[EpochResult]:
    """A checkpoint's epoch history, every entry checked: consecutive epochs from 1, at most
    the run's epochs, finite losses, accuracies in [0, 1]. ValueError otherwise."""
    if not isinstance(entries, list) or len(entries) > max_epochs:
        raise ValueError(f"the history must list at most {max_epochs} epochs")
    history = []
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or set(entry) - {f.name for f in fields(EpochResult)}:
            raise ValueError(f"epoch {number} is not an epoch result")
        result = EpochResult(**{**entry, "restored": True})
        numbers = (result.train_loss, result.val_loss, result.val_accuracy, result.seconds)
        values_ok = (result.epoch == number and not isinstance(result.epoch, bool)
                     and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers)
                     and math.isfinite(result.train_loss) and result.train_loss >= 0
                     and math.isfinite(result.seconds) and result.seconds >= 0
                     and (math.isnan(result.val_accuracy) or 0 <= result.val_accuracy <= 1)
                     and (math.isnan(result.val_loss) or 0 <= result.val_loss < math.inf))
        if not values_ok:
            raise ValueError(f"epoch {number}'s result is out of range")
        history.append(result)
    return history


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    generator: torch.Generator, history: list[EpochResult],
                    scheduler: Scheduler | None = None) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_tensor_file(path, CHECKPOINT_FORMAT, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            # dropout draws from torch's global generators: with them a resumed run
            # continues exactly as the uninterrupted one would have
            "global_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
            "generator": generator.get_state(), "history": [asdict(r) for r in history]})
    except (OSError, RuntimeError) as error:
        raise CheckpointWriteError(f"cannot write checkpoint {path}: {error}") from None


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    generator: torch.Generator, scheduler: Scheduler | None = None,
                    max_epochs: int = 1000) -> list[EpochResult]:
    """Restore the states saved after the last finished epoch; returns that history.

    CheckpointReadError leaves model, optimiser, scheduler and generators as they were.
    """
    try:
        state = load_tensor_file(path, CHECKPOINT_FORMAT)
        history = checked_history(state["history"], max_epochs)
    except TensorFileError as error:
        raise CheckpointReadError(f"{error}: the trial restarts from epoch 0") from None
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointReadError(f"{path} lacks a valid epoch history ({error}): the trial restarts "
                                  "from epoch 0") from None
    before = copy.deepcopy((model.state_dict(), optimizer.state_dict(),
                            scheduler.state_dict() if scheduler is not None else None))
    generator_before, global_before = generator.get_state(), torch.get_rng_state()
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["global_rng"])
        generator.set_state(state["generator"])  # generator states are CPU tensors on every device
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        model.load_state_dict(before[0])
        optimizer.load_state_dict(before[1])
        if scheduler is not None:
            scheduler.load_state_dict(before[2])
        generator.set_state(generator_before)
        torch.set_rng_state(global_before)
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointReadError(f"{path} does not fit this trial's model or optimiser ({first}): "
                                  "the trial restarts from epoch 0") from None
    return history


def legacy_checkpoint(path: Path) -> Path | None:
    """The torch.save checkpoint an older version wrote for the same trial, if one is there."""
    legacy = path.with_suffix(LEGACY_CHECKPOINT_SUFFIX)
    return legacy if legacy != path and legacy.exists() else None


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceUnavailableError(f"{name!r} is not a device: use --device cpu, cuda, cuda:N "
                                     "or auto") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DeviceUnavailableError(f"no CUDA device on this machine for --device {name}: "
                                         "use --device cpu or auto")
        if device.index is not None and device.index >= count:
            raise DeviceUnavailableError(f"no CUDA device {device.index} on this machine (it has "
                                         f"{count}: 0-{count - 1}) for --device {name}: use one of "
                                         "them, --device cpu or auto")
    return device


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX); elsewhere oneDNN
    emulates it and bf16 is slower than float32."""
    probes = [getattr(torch.cpu, name, None)
              for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if all(probe is not None for probe in probes):
        return any(probe() for probe in probes)
    try:  # older torch: the kernel's flags
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(requested: str, device: torch.device) -> str:
    """"auto" as the evidence in BENCHMARKS.md part 1 decided it: bf16 autocast on CUDA and on
    CPUs with native bf16 (it ranks 42 configurations as float32 does and trains MLPs 1.3x and
    CNNs 1.15x faster there), float32 everywhere else."""
    if requested != "auto":
        return requested
    if device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16()):
        return "bf16"
    return "fp32"


def seed_everything(seed: int) -> None:
    """Seed torch's global generators, which weight init and dropout draw from."""
    torch.manual_seed(seed)


def make_optimizer(model: nn.Module, settings: TrainSettings,
                   device: torch.device) -> torch.optim.Optimizer:
    fused = device.type in ("cpu", "cuda")  # one kernel per step, not ~10 per parameter
    kwargs = {"lr": settings.learning_rate, "weight_decay": settings.weight_decay, "fused": fused}
    if settings.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), momentum=SGD_MOMENTUM, nesterov=True, **kwargs)
    optimizer_class = torch.optim.AdamW if settings.optimizer == "adamw" else torch.optim.Adam
    return optimizer_class(model.parameters(), **kwargs)


def make_scheduler(optimizer: torch.optim.Optimizer, settings: TrainSettings,
                   steps_per_epoch: int) -> Scheduler | None:
    total_steps = settings.epochs * steps_per_epoch
    if settings.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    if settings.lr_schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=settings.learning_rate,
                                                   total_steps=total_steps)
    return None


def _autocast(device: torch.device, precision: str) -> torch.autocast:
    # bfloat16 needs no loss scaling
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


class ShuffleBuffers:
    """The split in a new order each epoch, gathered into buffers made once per run: a fresh
    gather allocates the whole split again every epoch (benchmarks/loop_overheads.py)."""

    def __init__(self, split: TensorSplit) -> None:
        self.split = split
        self.images, self.labels = torch.empty_like(split.images), torch.empty_like(split.labels)

    def shuffled(self, order: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        torch.index_select(self.split.images, 0, order, out=self.images)
        torch.index_select(self.split.labels, 0, order, out=self.labels)
        return self.images, self.labels


@torch.inference_mode()
def evaluate(model: nn.Module, split: TensorSplit, precision: str = "fp32") -> Evaluation:
    model.eval()
    device = split.images.device
    total_loss = torch.zeros((), device=device)
    predictions = []
    for start in range(0, len(split), EVAL_BATCH):
        x = split.images[start : start + EVAL_BATCH]
        y = split.labels[start : start + EVAL_BATCH]
        with _autocast(device, precision):
            logits = model(x)
        total_loss += F.cross_entropy(logits.float(), y, reduction="sum")
        predictions.append(logits.argmax(dim=1))
    predicted = torch.cat(predictions)
    accuracy = (predicted == split.labels).float().mean()
    return Evaluation(
        float(total_loss) / len(split), float(accuracy), predicted.cpu()
    )


def train(
    model: nn.Module,
    train_split: TensorSplit,
    val_split: TensorSplit | None,
    settings: TrainSettings,
    on_epoch: Callable[[EpochResult], None] | None = None,
    checkpoint: Checkpoint | None = None,
    on_checkpoint_error: Callable[[Exception], None] | None = None,
) -> list[EpochResult]:
    """Minimise cross-entropy; `on_epoch` sees each epoch's result and may raise to stop.

    With `checkpoint`, training resumes from its file when the file exists and has the
    expected digest (replaying the saved epochs to `on_epoch` with `restored=True`) and
    rewrites it after every epoch. A file that cannot be written, read or trusted goes to
    `on_checkpoint_error`; training goes on.
    """
    device = train_split.images.device
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    # NHWC convolutions and pooling: 2.3-2.7x faster CNN epochs on CPU (benchmarks/), the
    # tensor-core layout on GPUs; a no-op for MLPs
    model.to(memory_format=torch.channels_last)
    n, batch = len(train_split), settings.batch_size
    optimizer = make_optimizer(model, settings, device)
    scheduler = make_scheduler(optimizer, settings, steps_per_epoch=math.ceil(n / batch))
    augmentation = settings.augmentation
    background = train_split.images.amin()  # normalised black; stays on the device
    shuffle = ShuffleBuffers(train_split)
    history: list[EpochResult] = []
    if checkpoint is not None:
        history = _resume(checkpoint, settings.epochs, model, optimizer, generator, scheduler,
                          on_checkpoint_error)
    best_val_loss, epochs_since_best = math.inf, 0
    for result in history:
        if on_epoch is not None:
            on_epoch(result)
        best_val_loss, epochs_since_best = _early_stopping_state(result.val_loss, best_val_loss,
                                                                 epochs_since_best)
    for epoch in range(len(history) + 1, settings.epochs + 1):
        started = time.perf_counter()
        model.train()
        images, labels = shuffle.shuffled(torch.randperm(n, device=device, generator=generator))
        loss_sum = torch.zeros((), device=device)
        for start in range(0, n, batch):
            x, y = images[start : start + batch], labels[start : start + batch]
            if augmentation.enabled:
                x = random_affine(x, augmentation, background, generator)
            with _autocast(device, settings.precision):
                loss = F.cross_entropy(model(x), y, label_smoothing=settings.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            loss_sum += loss.detach() * len(y)
        train_loss = float(loss_sum) / n  # the epoch's only host synchronisation
        if not math.isfinite(train_loss):
            raise NonFiniteLossError(epoch, train_loss)
        if val_split is not None:
            evaluation = evaluate(model, val_split, settings.precision)
            val_loss, val_accuracy = evaluation.loss, evaluation.accuracy
        else:
            val_loss = val_accuracy = math.nan
        result = EpochResult(epoch, train_loss, val_loss, val_accuracy,
                             time.perf_counter() - started)
        history.append(result)
        if checkpoint is not None:
            try:
                save_checkpoint(checkpoint.path, model, optimizer, generator, history, scheduler)
                if checkpoint.on_saved is not None:
                    checkpoint.on_saved(file_sha256(checkpoint.path))
            except CheckpointWriteError as error:
                checkpoint = None  # keep training; only a crash would now lose progress
                if on_checkpoint_error is not None:
                    on_checkpoint_error(error)
        if on_epoch is not None:
            on_epoch(result)
        best_val_loss, epochs_since_best = _early_stopping_state(val_loss, best_val_loss,
                                                                 epochs_since_best)
        patience = settings.early_stopping_patience
        if patience is not None and val_split is not None and epochs_since_best >= patience:
            break
    return history


def _resume(checkpoint: Checkpoint, epochs: int, model: nn.Module, optimizer: torch.optim.Optimizer,
            generator: torch.Generator, scheduler: Scheduler | None,
            on_checkpoint_error: Callable[[Exception], None] | None) -> list[EpochResult]:
    """The restored history, or none (epoch 0) when there is no usable checkpoint."""
    problem: CheckpointReadError | None = None
    path = checkpoint.path
    legacy = legacy_checkpoint(path)
    if path.exists():
        try:
            if checkpoint.expected_sha256 is None or file_sha256(path) != checkpoint.expected_sha256:
                raise CheckpointReadError(f"{path} is not the checkpoint this trial wrote (its sha256 "
                                          "differs from the one recorded on the trial): the trial "
                                          "restarts from epoch 0")
            return load_checkpoint(path, model, optimizer, generator, scheduler, max_epochs=epochs)
        except OSError as error:
            problem = CheckpointReadError(f"cannot read {path} ({error}): the trial restarts from epoch 0")
        except CheckpointReadError as error:
            problem = error
    elif legacy is not None:
        problem = CheckpointReadError(
            f"{legacy} predates the safe checkpoint format (a torch.save file, which could run code "
            "if loaded) and is not loaded: the trial restarts from epoch 0")
    if problem is not None and on_checkpoint_error is not None:
        on_checkpoint_error(problem)
    return []


def _early_stopping_state(val_loss: float, best: float, since_best: int) -> tuple[float, int]:
    return (val_loss, 0) if val_loss < best else (best, since_best + 1)
