"""The deployment budget: the most parameters, MFLOPs per image and CPU latency a model may cost.

- `Budget` and its `COST_LIMITS`: plain data. The costs are the trial user attributes the
  objective records for every trial; the objective prunes a model over budget before training.
- The budget stored on a study (`stored_budget`, `settled_budget`, `record_budget`): the same
  for every worker, set when the study is created.
- `UnmeetableBudgetCheck`: stops a search when no model of its space can meet the budget.

Importable without torch (the smallest model is measured with objectives/cost.py, loaded
only when needed), so the command line checks and stores a budget before anything heavy loads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from spaces.base import SearchSpace, format_params

BUDGET_ATTR = "budget"
INFEASIBLE_STREAK = 3  # over-budget trials in a row before asking whether any model fits


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


class BudgetMismatchError(ValueError):
    """A study was created with another budget than the one asked for."""


class UnmeetableBudgetError(ValueError):
    """No configuration of the space meets the budget; the message names the smallest."""


def stored_budget(study: optuna.Study) -> Budget:
    return Budget.from_dict(study.user_attrs.get(BUDGET_ATTR, {}))


def settled_budget(study: optuna.Study | None, asked: Budget | None) -> Budget:
    """The budget a `start` or `worker` searches under: an existing study's own; `asked`
    (None when no budget option was given) must be the same."""
    if study is None or (BUDGET_ATTR not in study.user_attrs and not study.get_trials(deepcopy=False)):
        return asked or Budget()  # a new study takes the budget asked for
    stored = stored_budget(study)
    if asked is not None and asked != stored:
        raise BudgetMismatchError(
            f"study {study.study_name!r} was created with {stored.describe()}, not {asked.describe()}: "
            "leave out the budget options to search under the stored one, or use another --study name")
    return stored


def record_budget(study: optuna.Study, budget: Budget) -> None:
    if BUDGET_ATTR not in study.user_attrs:
        study.set_user_attr(BUDGET_ATTR, budget.as_dict())


def unmeetable(space: SearchSpace, budget: Budget, num_classes: int) -> str | None:
    """Why no configuration of `space` meets `budget`, naming the smallest one; None if one may."""
    from objectives.cost import smallest_latency, smallest_model

    for limit, value in budget.limits():
        smallest = (smallest_latency(space, num_classes) if limit.attr == "latency_ms"
                    else smallest_model(space, limit.attr, num_classes))
        if smallest.cost > value:
            return (f"no {space.name} model meets {limit.option} {value}: the smallest configuration "
                    f"the space allows ({format_params(smallest.params) or 'every one is the same'}) has "
                    f"{format_cost(smallest.cost)} {limit.unit}; raise {limit.option} to at least "
                    f"{format_cost(smallest.cost)}")
    return None


def pruned_untrained(trial: FrozenTrial) -> bool:
    """Over budget, over the space's FLOP cap, or no model at all: pruned before any epoch."""
    return trial.state == TrialState.PRUNED and not trial.intermediate_values


class UnmeetableBudgetCheck:
    """A trial callback: after a few trials in a row pruned before training, stop the search if
    no model of the space can meet the budget (checked once; a budget some model meets goes on)."""

    def __init__(self, space: SearchSpace, budget: Budget, num_classes: int) -> None:
        self.space, self.budget, self.num_classes = space, budget, num_classes
        self.streak, self.checked = 0, False

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.streak = self.streak + 1 if pruned_untrained(trial) else 0
        if self.streak >= INFEASIBLE_STREAK and not self.checked:
            self.checked = True
            problem = unmeetable(self.space, self.budget, self.num_classes)
            if problem is not None:
                raise UnmeetableBudgetError(problem)
