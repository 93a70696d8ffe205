"""What a model costs to deploy: parameters, FLOPs and measured CPU inference latency.

Latency is measured on the CPU with one thread (where small models are deployed, and so
that a budget means the same on every worker whatever its `--threads`), in eval mode,
before training: the weights do not change the time.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from objectives.models import (
    IMAGE_SIZE,
    InvalidModelError,
    build_model,
    count_parameters,
    forward_mflops,
    model_config,
)
from spaces.base import SearchSpace

LATENCY_THREADS = 1
LATENCY_BATCH = 256
MIN_REPEATS = 3  # timed forward passes per batch size, after one warm-up
MAX_REPEATS = 50
MIN_SECONDS = 0.05  # small models repeat until this much time is timed, for a stable median


def _median_ms(forward: Callable[[], Any]) -> float:
    forward()  # warm-up: first-call allocations
    times: list[float] = []
    while len(times) < MIN_REPEATS or (sum(times) < MIN_SECONDS and len(times) < MAX_REPEATS):
        start = time.perf_counter()
        forward()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def measure_latency(model: nn.Module) -> dict[str, float]:
    """Median CPU milliseconds per image at batch 1 and per batch of 256, on one thread.

    The model must be on the CPU; its training mode and torch's thread count are restored.
    """
    generator = torch.Generator().manual_seed(0)  # the global RNG stays as the trial seeded it
    images = torch.randn(LATENCY_BATCH, 1, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    threads, was_training = torch.get_num_threads(), model.training
    torch.set_num_threads(LATENCY_THREADS)
    model.eval()
    try:
        with torch.inference_mode():
            single = _median_ms(lambda: model(images[:1]))
            batch = _median_ms(lambda: model(images))
    finally:
        torch.set_num_threads(threads)
        model.train(was_training)
    return {"latency_ms": round(single, 4), f"latency_ms_batch{LATENCY_BATCH}": round(batch, 3),
            "latency_threads": LATENCY_THREADS}


class _ChosenTrial:
    """A stand-in trial: answers each suggestion from `chosen`, else with its first choice or
    low end, and records what every suggested parameter could have been."""

    def __init__(self, chosen: Mapping[str, Any]) -> None:
        self.chosen, self.options, self.answers = chosen, {}, {}

    def _answer(self, name: str, options: tuple) -> Any:
        self.options[name] = options
        self.answers[name] = self.chosen.get(name, options[0])
        return self.answers[name]

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float:
        return self._answer(name, (low, high))

    def suggest_int(self, name: str, low: int, high: int, *, log: bool = False) -> int:
        return self._answer(name, tuple(range(low, high + 1)) if high - low <= 16 else (low, high))

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        return self._answer(name, tuple(choices))


@dataclass(frozen=True)
class SmallestModel:
    cost: float
    params: dict[str, Any]  # the trial parameters that set the cost (the rest do not change it)
    answers: dict[str, Any]  # every trial parameter of that configuration


def smallest_model(space: SearchSpace, attr: str, num_classes: int = 10) -> SmallestModel:
    """The configuration of `space` with the least `param_count` or `forward_mflops`.

    Steepest descent over the space's own choices (each parameter tried at every choice, or at
    both ends of a range; define-by-run parameters appear as their parents make them exist),
    from the first choices, until no single change lowers the cost. A descent can stop in a
    local minimum; for the spaces here it finds the global one (a test checks it against
    random samples).
    """
    measures: dict[str, Callable[[nn.Module], float]] = {"param_count": count_parameters,
                                                         "forward_mflops": forward_mflops}
    measure, seen = measures[attr], {}

    def evaluate(chosen: Mapping[str, Any]) -> tuple[float, _ChosenTrial]:
        key = tuple(sorted(chosen.items(), key=lambda item: item[0]))
        if key not in seen:
            trial = _ChosenTrial(chosen)
            try:
                model = build_model(model_config(space.family, space.suggest(trial), num_classes))
                seen[key] = (measure(model), trial)
            except InvalidModelError:
                seen[key] = (math.inf, trial)
        return seen[key]

    chosen: dict[str, Any] = {}
    best, trial = evaluate(chosen)
    while True:  # steepest descent: the best single change, until none lowers the cost
        moves = [(evaluate({**chosen, name: option})[0], name, option)
                 for name, options in trial.options.items() for option in options]
        cost, name, option = min(moves, key=lambda move: move[0])
        if cost >= best:
            break
        chosen = {**chosen, name: option}
        best, trial = evaluate(chosen)
    relevant = {name: trial.answers[name] for name, options in trial.options.items()
                if any(evaluate({**chosen, name: option})[0] != best for option in options)}
    return SmallestModel(best, relevant, dict(trial.answers))


def smallest_latency(space: SearchSpace, num_classes: int = 10) -> SmallestModel:
    """The measured latency of the configuration with the fewest FLOPs (the fastest, near enough)."""
    fewest = smallest_model(space, "forward_mflops", num_classes)
    model = build_model(model_config(space.family, space.suggest(_ChosenTrial(fewest.answers)), num_classes))
    return SmallestModel(measure_latency(model)["latency_ms"], fewest.params, fewest.answers)
