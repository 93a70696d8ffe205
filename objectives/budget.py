"""A deployment budget: the most parameters, MFLOPs per image and CPU latency a model may cost.

Plain data without torch, so the command line can check and store a budget before anything
heavy loads. The costs are the trial user attributes the objective records for every trial.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class CostLimit:
    """How one budget field reads: the cost it caps, its unit and its command-line option."""

    name: str  # as `front --cost` names it
    field: str  # Budget field
    attr: str  # trial user attribute holding the measured cost
    unit: str
    option: str


COST_LIMITS = (
    CostLimit("params", "max_params", "param_count", "parameters", "--max-params"),
    CostLimit("mflops", "max_mflops", "forward_mflops", "MFLOPs per image", "--max-mflops"),
    CostLimit("latency", "max_latency_ms", "latency_ms", "ms per image on one CPU thread",
              "--max-latency-ms"),
)


def format_cost(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


@dataclass(frozen=True)
class Budget:
    max_params: int | None = None
    max_mflops: float | None = None
    max_latency_ms: float | None = None

    def limits(self) -> list[tuple[CostLimit, float]]:
        """The limits this budget sets, each with its value."""
        return [(c, getattr(self, c.field)) for c in COST_LIMITS if getattr(self, c.field) is not None]

    def excess(self, costs: Mapping[str, float]) -> dict[str, float]:
        """Per limit: how far the cost lies above it, relative to it (<= 0 within the budget).

        Relative, so that the sampler can add up excesses of parameters and milliseconds.
        """
        return {c.field: costs[c.attr] / limit - 1.0 for c, limit in self.limits()}

    def violations(self, costs: Mapping[str, float]) -> list[str]:
        return [f"{format_cost(costs[c.attr])} {c.unit} exceed {c.option} {format_cost(limit)}"
                for c, limit in self.limits() if costs[c.attr] > limit]

    def describe(self) -> str:
        """The budget as the options that set it, or "no budget"."""
        return " ".join(f"{c.option} {limit}" for c, limit in self.limits()) or "no budget"

    def as_dict(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, stored: Mapping[str, float]) -> Budget:
        return cls(**stored)
