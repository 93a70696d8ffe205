"""A study's deployment budget: stored on the study, the same for every worker, and a search
that stops when no model of its space can meet it."""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from objectives.budget import Budget, format_cost
from search.progress import format_params
from search.study import StudyMismatchError
from spaces.base import SearchSpace

BUDGET_ATTR = "budget"
INFEASIBLE_STREAK = 3  # over-budget trials in a row before asking whether any model fits


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
        raise StudyMismatchError(
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
