"""Accuracy against cost: the non-dominated completed trials of a study, their figure, and
the smallest model within a few points of the best."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from matplotlib.ticker import PercentFormatter  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402

from objectives.budget import COST_LIMITS, Budget, CostLimit  # noqa: E402

COSTS: dict[str, CostLimit] = {c.name: c for c in COST_LIMITS}


class FrontError(ValueError):
    """A study without the completed trials a front needs; the message says what to do."""


def costed_trials(study: optuna.Study, cost: CostLimit) -> list[FrozenTrial]:
    """The completed trials that record `cost` (trials run before latency was measured do not)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise FrontError(f"study {study.study_name!r} has no completed trial: run "
                         f"`kmnist-search start --study {study.study_name}` first")
    costed = [t for t in complete if cost.attr in t.user_attrs]
    if not costed:
        raise FrontError(f"no completed trial of study {study.study_name!r} records {cost.attr} "
                         "(it ran before costs were measured): choose another --cost")
    return costed


def pareto_front(trials: list[FrozenTrial], cost: CostLimit) -> list[FrozenTrial]:
    """Trials no other trial beats (as accurate or more for less, or more accurate for as
    little), cheapest first; exact ties are all kept."""
    front: list[FrozenTrial] = []
    for trial in sorted(trials, key=lambda t: (t.user_attrs[cost.attr], -t.value)):
        last = front[-1] if front else None
        if last is None or trial.value > last.value or (
                trial.value == last.value and trial.user_attrs[cost.attr] == last.user_attrs[cost.attr]):
            front.append(trial)
    return front


def smallest_within(trials: list[FrozenTrial], cost: CostLimit, points: float) -> FrozenTrial:
    """The cheapest trial whose validation accuracy lies within `points` percentage points of
    the best (the most accurate of equally cheap ones)."""
    best = max(t.value for t in trials)
    near = [t for t in trials if t.value >= best - points / 100]
    return min(near, key=lambda t: (t.user_attrs[cost.attr], -t.value))


def plot_front(trials: list[FrozenTrial], front: list[FrozenTrial], cost: CostLimit, budget: Budget,
               title: str, path: Path, pick: FrozenTrial | None = None) -> Path:
    """All trials as dots, the front as a staircase; error on a log scale spreads out the top."""
    def xy(chosen: list[FrozenTrial]) -> tuple[list[float], list[float]]:
        return [t.user_attrs[cost.attr] for t in chosen], [max(1 - t.value, 1e-4) for t in chosen]

    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.scatter(*xy(trials), s=14, color="tab:gray", alpha=0.6, label=f"completed trials ({len(trials)})")
    ax.step(*xy(front), where="post", color="tab:red", marker="o", markersize=5,
            label=f"front ({len(front)})")
    for trial in front:  # trial numbers, for `export --trial N`
        (x,), (y,) = xy([trial])
        ax.annotate(str(trial.number), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7,
                    color="tab:red")
    if pick is not None:
        ax.scatter(*xy([pick]), s=160, marker="*", color="gold", edgecolors="black", zorder=3,
                   label=f"picked: trial {pick.number}")
    limit = {c.attr: value for c, value in budget.limits()}.get(cost.attr)
    if limit is not None:
        ax.axvline(limit, color="tab:blue", linestyle="--", label=f"budget {cost.option} {limit}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(cost.unit)
    ax.set_ylabel("validation error (1 - accuracy), log scale")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.yaxis.set_minor_formatter(PercentFormatter(1.0))
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, scatterpoints=1, loc="upper left", bbox_to_anchor=(1.01, 1))  # off the data
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
