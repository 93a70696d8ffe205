"""The building blocks of a search space: parameters, documented experiments, claims.

A space is plain data. It knows how to ask a trial for values (define-by-run) and how to
turn a documented configuration back into the trial parameters that reproduce it, so a
documented experiment can be enqueued without any model code.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

# user attributes of an enqueued documented trial that the objective reads back
DOCUMENTED_EPOCHS = "documented_epochs"
EARLY_STOPPING = "early_stopping_patience"
RECIPE = "recipe"  # the user attribute naming an enqueued recipe

# What every report did without saying so. Spaces that search these knobs read a documented
# configuration with them filled in; objectives/ uses the same values as its defaults.
REPORTS_DEFAULTS: Mapping[str, Any] = {
    "activation": "relu",
    "batch_norm": False,
    "optimizer": "adam",
    "lr_schedule": "constant",
    "label_smoothing": 0.0,
    "max_shift": 0,
    "max_rotation": 0.0,
    "convs_per_block": 1,
    "global_pool": False,
}


class UnknownSpaceError(LookupError):
    """A space name that no module in `spaces/` defines."""


class TrialLike(Protocol):
    """The slice of `optuna.Trial` a space needs; keeps this package free of Optuna."""

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...
    def suggest_int(self, name: str, low: int, high: int, *, log: bool = False) -> int: ...
    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


@dataclass(frozen=True)
class FloatParam:
    name: str
    low: float
    high: float
    log: bool = False

    def suggest(self, trial: TrialLike) -> float:
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)

    def trial_params(self, value: float) -> dict[str, Any]:
        return {self.name: float(value)}

    def contains(self, value: Any) -> bool:
        return _is_number(value) and self.low <= value <= self.high

    def describe(self) -> str:
        return f"{self.low:g} .. {self.high:g}" + (" (log)" if self.log else "")


@dataclass(frozen=True)
class IntParam:
    name: str
    low: int
    high: int
    log: bool = False

    def suggest(self, trial: TrialLike) -> int:
        return trial.suggest_int(self.name, self.low, self.high, log=self.log)

    def trial_params(self, value: int) -> dict[str, Any]:
        return {self.name: int(value)}

    def contains(self, value: Any) -> bool:
        return _is_whole(value) and self.low <= value <= self.high

    def describe(self) -> str:
        return f"{self.low} .. {self.high}" + (" (log)" if self.log else "")


@dataclass(frozen=True)
class ChoiceParam:
    name: str
    choices: tuple[Any, ...]

    def suggest(self, trial: TrialLike) -> Any:
        return trial.suggest_categorical(self.name, list(self.choices))

    def trial_params(self, value: Any) -> dict[str, Any]:
        return {self.name: value}

    def contains(self, value: Any) -> bool:
        return value in self.choices

    def describe(self) -> str:
        return "{" + ", ".join(str(c) for c in self.choices) + "}"


@dataclass(frozen=True)
class OptionalLogFloatParam:
    """A log-scale float that may also be switched off (value 0.0).

    Log scales cannot hold zero, yet reports used "no weight decay" as their baseline;
    a boolean switch `use_<name>` expresses that and the float exists only when on.
    """

    name: str
    low: float
    high: float

    @property
    def switch(self) -> str:
        return f"use_{self.name}"

    def suggest(self, trial: TrialLike) -> float:
        if not trial.suggest_categorical(self.switch, [False, True]):
            return 0.0
        return trial.suggest_float(self.name, self.low, self.high, log=True)

    def trial_params(self, value: float) -> dict[str, Any]:
        if value == 0:
            return {self.switch: False}
        return {self.switch: True, self.name: float(value)}

    def contains(self, value: Any) -> bool:
        return _is_number(value) and (value == 0 or self.low <= value <= self.high)

    def describe(self) -> str:
        return f"none or {self.low:g} .. {self.high:g} (log)"


@dataclass(frozen=True)
class WidthsParam:
    """Hidden-layer widths as one categorical choice, written "512-256" as users read them."""

    name: str
    choices: tuple[tuple[int, ...], ...]

    def suggest(self, trial: TrialLike) -> tuple[int, ...]:
        label = trial.suggest_categorical(self.name, [format_widths(c) for c in self.choices])
        return parse_widths(label)

    def trial_params(self, value: tuple[int, ...]) -> dict[str, Any]:
        return {self.name: format_widths(value)}

    def contains(self, value: Any) -> bool:
        return (isinstance(value, (tuple, list)) and all(map(_is_whole, value))
                and tuple(value) in self.choices)

    def describe(self) -> str:
        return "{" + ", ".join(format_widths(c) for c in self.choices) + "}"


@dataclass(frozen=True)
class LayerWidthsParam:
    """Depth, then one width per layer that exists (define-by-run: `width_3` only when depth >= 3)."""

    name: str
    min_layers: int
    max_layers: int
    widths: tuple[int, ...]

    @property
    def depth_name(self) -> str:
        return f"n_{self.name}"

    def suggest(self, trial: TrialLike) -> tuple[int, ...]:
        depth = trial.suggest_int(self.depth_name, self.min_layers, self.max_layers)
        return tuple(
            trial.suggest_categorical(f"width_{i}", list(self.widths)) for i in range(1, depth + 1)
        )

    def trial_params(self, value: tuple[int, ...]) -> dict[str, Any]:
        return {self.depth_name: len(value), **{f"width_{i}": w for i, w in enumerate(value, 1)}}

    def contains(self, value: Any) -> bool:
        return (isinstance(value, (tuple, list)) and self.min_layers <= len(value) <= self.max_layers
                and all(_is_whole(w) and w in self.widths for w in value))

    def describe(self) -> str:
        return f"{self.min_layers}..{self.max_layers} layers, each of {{{', '.join(map(str, self.widths))}}}"


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


POOL_LABEL = re.compile(r"(max|avg)(\d+)s(\d+)")


BLOCK_KEYS = frozenset({"channels", "kernel_size", "padding", "pool", "pool_kernel", "pool_stride"})


def pool_label(block: Mapping[str, Any]) -> str:
    """A block's pooling as one categorical value: "max2s2" is a 2x2 max pool of stride 2."""
    if block.get("pool", "max") == "none":
        return "none"
    return f"{block.get('pool', 'max')}{block.get('pool_kernel', 2)}s{block.get('pool_stride', 2)}"


def parse_pool(label: str) -> dict[str, Any]:
    if label == "none":
        return {"pool": "none"}
    match = POOL_LABEL.fullmatch(label)
    if match is None:  # a typo in a space's choices must not quietly become "no pooling"
        raise ValueError(f"unknown pool label {label!r}: use none or e.g. max2s2, avg7s2")
    kind, kernel, stride = match.groups()
    return {"pool": kind, "pool_kernel": int(kernel), "pool_stride": int(stride)}


@dataclass(frozen=True)
class ConvStackParam:
    """Depth, then channels, kernel and pooling per block that exists (define-by-run).

    Convolutions pad "same" (kernel // 2), as every documented CNN does; a block is the
    dict `objectives.models.ConvBlock` takes.
    """

    name: str
    min_blocks: int
    max_blocks: int
    channels: tuple[int, ...]
    kernels: tuple[int, ...]
    pools: tuple[str, ...]

    @property
    def depth_name(self) -> str:
        return f"n_{self.name}"

    def suggest(self, trial: TrialLike) -> tuple[dict[str, Any], ...]:
        depth = trial.suggest_int(self.depth_name, self.min_blocks, self.max_blocks)
        blocks = []
        for i in range(1, depth + 1):
            kernel = trial.suggest_categorical(f"kernel_{i}", list(self.kernels))
            blocks.append({
                "channels": trial.suggest_categorical(f"channels_{i}", list(self.channels)),
                "kernel_size": kernel,
                "padding": kernel // 2,
                **parse_pool(trial.suggest_categorical(f"pool_{i}", list(self.pools))),
            })
        return tuple(blocks)

    def trial_params(self, value: tuple[Mapping[str, Any], ...]) -> dict[str, Any]:
        params: dict[str, Any] = {self.depth_name: len(value)}
        for i, block in enumerate(value, 1):
            params.update({f"kernel_{i}": block["kernel_size"], f"channels_{i}": block["channels"],
                           f"pool_{i}": pool_label(block)})
        return params

    def contains(self, value: Any) -> bool:
        return isinstance(value, (tuple, list)) and self.min_blocks <= len(value) <= self.max_blocks and all(
            isinstance(b, Mapping) and set(b) <= BLOCK_KEYS and {"channels", "kernel_size"} <= set(b)
            and all(_is_whole(b[k]) for k in ("channels", "kernel_size", "padding", "pool_kernel",
                                                "pool_stride") if k in b)
            and b["channels"] in self.channels and b["kernel_size"] in self.kernels
            and b.get("padding", 0) == b["kernel_size"] // 2 and pool_label(b) in self.pools
            for b in value
        )

    def describe(self) -> str:
        return (f"{self.min_blocks}..{self.max_blocks} blocks, each of channels "
                f"{{{', '.join(map(str, self.channels))}}}, kernel {{{', '.join(map(str, self.kernels))}}}"
                f", pool {{{', '.join(self.pools)}}}")


Param = (ConvStackParam | LayerWidthsParam | FloatParam | IntParam | ChoiceParam | OptionalLogFloatParam
         | WidthsParam)


def format_widths(widths: tuple[int, ...]) -> str:
    return "-".join(str(w) for w in widths) if widths else "none"


def parse_widths(label: str) -> tuple[int, ...]:
    return () if label == "none" else tuple(int(w) for w in label.split("-"))


def format_params(params: Mapping[str, Any]) -> str:
    """Trial parameters on one line: `name=value, ...`, floats to three significant digits."""
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


@dataclass(frozen=True)
class Claim:
    """One figure a report states, with where it says so."""

    metric: str  # e.g. "test_accuracy", "val_accuracy", "test_loss", "param_count"
    value: float
    where: str  # quote or location in the report

    def __post_init__(self) -> None:
        if not math.isfinite(self.value):
            raise ValueError(f"claim {self.metric} must be finite")


@dataclass(frozen=True)
class DocumentedExperiment:
    """A hand-run experiment from one report, expressed in a space's parameters."""

    report: str  # file name under shared/seeds/
    name: str  # the experiment's name as the report gives it
    dataset: str  # "kmnist", "mnist", "mnist4" ...
    config: Mapping[str, Any]  # in the parameters of the spaces that replay it
    epochs: int
    claims: tuple[Claim, ...]
    early_stopping_patience: int | None = None
    validation: str = ""  # how the report validated (split, or none)
    notes: str = ""  # contradictions in the report and the reading chosen
    doubtful: str = ""  # why its claims should not serve as a benchmark ("" when sound)
    train_images: int = 60_000  # images it trained on: the training set less any validation split

    @property
    def key(self) -> str:
        return f"{self.report.split('_')[0]}/{self.name}"

    def claim(self, metric: str) -> float | None:
        return next((c.value for c in self.claims if c.metric == metric), None)

    def trial_attrs(self) -> dict[str, Any]:
        """User attributes that tag its replayed trial and carry its protocol to the objective."""
        attrs: dict[str, Any] = {
            "source": "documented",
            "documented_experiment": self.key,
            "report": self.report,
            "experiment": self.name,
            "documented_dataset": self.dataset,
            DOCUMENTED_EPOCHS: self.epochs,
            "claims": {c.metric: c.value for c in self.claims},
        }
        if self.early_stopping_patience is not None:
            attrs[EARLY_STOPPING] = self.early_stopping_patience
        return attrs


@dataclass(frozen=True)
class Recipe:
    """A strong starting point that no report documents: a configuration a practitioner would
    try first, enqueued after the documented experiments so the sampler starts from it."""

    name: str
    config: Mapping[str, Any]  # in the space's configuration form, like a documented config
    source: str  # where the configuration comes from and what it measured

    def trial_attrs(self) -> dict[str, Any]:
        return {"source": "recipe", RECIPE: self.name, "recipe_source": self.source}


@dataclass(frozen=True)
class SearchSpace:
    name: str
    family: str  # "mlp" or "cnn": which model builder the objective uses
    description: str
    params: tuple[Param, ...]
    experiments: tuple[DocumentedExperiment, ...] = ()
    recipes: tuple[Recipe, ...] = ()  # enqueued after the experiments
    fixed: Mapping[str, Any] = field(default_factory=dict)  # settings this space never varies
    # values of knobs a documented configuration leaves unsaid (REPORTS_DEFAULTS)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    epochs: int = 10  # default epoch budget per trial
    pruner_warmup_epochs: int = 2  # epochs before the median pruner may stop a trial
    max_forward_mflops: float | None = None  # costlier models are pruned before training

    def pruner_warmup(self, epochs: int) -> int:
        """The warm-up scaled down for a shorter budget than the space's default (never below 2)."""
        if epochs >= self.epochs:
            return self.pruner_warmup_epochs
        return min(self.pruner_warmup_epochs, max(2, self.pruner_warmup_epochs * epochs // self.epochs))

    def suggest(self, trial: TrialLike) -> dict[str, Any]:
        return {**self.fixed, **{p.name: p.suggest(trial) for p in self.params}}

    def trial_params(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The Optuna parameters that make `suggest` return `config`."""
        config = {**self.defaults, **config}
        params: dict[str, Any] = {}
        for p in self.params:
            params.update(p.trial_params(config[p.name]))
        return params

    @property
    def declared(self) -> frozenset[str]:
        """The configuration keys this space defines: its parameters and its fixed settings."""
        return frozenset(p.name for p in self.params) | frozenset(self.fixed)

    def problems(self, config: Mapping[str, Any]) -> list[str]:
        """Why `config` lies outside this space; empty when it lies inside."""
        config = {**self.defaults, **config}
        found = []
        for p in self.params:
            if p.name not in config:
                found.append(f"{p.name} missing")
            elif not _contains(p, config[p.name]):
                found.append(f"{p.name}={config[p.name]!r} outside {p.describe()}")
        for name, value in self.fixed.items():
            if name in config and config[name] != value:
                found.append(f"{name}={config[name]!r} but this space fixes {value!r}")
        return found


def _contains(param: Param, value: Any) -> bool:
    try:
        return param.contains(value)
    except (TypeError, ValueError, KeyError, AttributeError):  # a value of the wrong shape
        return False
