"""Accuracy against cost: the non-dominated completed trials of a study, their figure, and
the smallest model within a few points of the best."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from objectives.budget import COST_LIMITS, Budget, CostLimit, format_cost, stored_budget
from storage.artifacts import attach

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
    """All trials as dots, the front as a staircase labelled with trial numbers (for
    `export --trial N`); validation accuracy in percent against the cost, on a log axis only
    where the costs span more than a decade."""
    # matplotlib takes about half a second to import, and every command imports this module
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    from search.figure_style import (
        COLOURS,
        WIDTH,
        figure_style,
        label_points,
        log_count_axis,
        percent_axis,
        save_figure,
        short_count,
    )

    with figure_style():
        fig, ax = plt.subplots(figsize=(WIDTH, 4.2), layout="constrained")
        limit = {c.attr: value for c, value in budget.limits()}.get(cost.attr)

        def xy(chosen: list[FrozenTrial]) -> tuple[list[float], list[float]]:
            return [t.user_attrs[cost.attr] for t in chosen], [100 * t.value for t in chosen]

        on_front = {t.number for t in front}
        off_front = [t for t in trials if t.number not in on_front]
        ax.scatter(*xy(off_front), s=18, color=COLOURS["other"], alpha=0.7,
                   label=f"other completed trials ({len(off_front)})")
        ax.step(*xy(front), where="post", color=COLOURS["front"], marker="o", markersize=5,
                label=f"front: nothing cheaper is as accurate ({len(front)})")
        if pick is not None:
            ax.scatter(*xy([pick]), s=170, marker="*", color=COLOURS["pick"], edgecolors="black", zorder=3,
                       label=f"picked: trial {pick.number}")
        if limit is not None:
            ax.axvline(limit, color=COLOURS["budget"], linestyle="--",
                       label=f"budget {cost.option} {format_cost(limit)}")
        costs = [*xy(trials)[0], *([limit] if limit is not None else [])]
        if max(costs) > 10 * min(costs):
            log_count_axis(ax, "x")
            ax.set_xlabel(f"{cost.unit} (log scale)")
        else:
            ax.xaxis.set_major_formatter(FuncFormatter(short_count))
            ax.set_xlabel(cost.unit)
        ax.set_ylabel("validation accuracy")
        percent_axis(ax)
        ax.margins(x=0.08, y=0.12)
        ax.set_title(title)
        fig.legend(loc="outside lower center", ncols=2)
        # the staircase as drawn ("post": along, then up), so no label sits on it or on a dot
        front_x, front_y = xy(front)
        stairs = [q for i in range(len(front)) for q in
                  ([(front_x[i], front_y[i - 1])] if i else []) + [(front_x[i], front_y[i])]]
        others = list(zip(*xy(off_front), strict=True))
        label_points(ax, front_x, front_y, [f"#{t.number}" for t in front], avoid=others,
                     avoid_lines=[stairs], fontsize=8, color=COLOURS["front"])
        return save_figure(fig, path)


@dataclass(frozen=True)
class Front:
    trials: list[FrozenTrial]  # every completed trial with the cost measured
    front: list[FrozenTrial]  # those no other beats on both accuracy and cost
    pick: FrozenTrial | None  # the cheapest within the asked points of the best, if asked
    figure_name: str  # the figure's name among the study's artifacts


def draw_front(study: optuna.Study, cost: CostLimit, artifact_store: object, within_points: float | None,
               output: Path | None = None) -> Front:
    """`kmnist-search front`: the study's front against `cost`, its figure attached to the study
    (and copied to `output` when given)."""
    trials = costed_trials(study, cost)
    front = pareto_front(trials, cost)
    pick = None if within_points is None else smallest_within(trials, cost, within_points)
    title = f"{study.study_name}: validation accuracy against {cost.unit}"
    with tempfile.TemporaryDirectory() as folder:
        path = plot_front(trials, front, cost, stored_budget(study), title,
                          Path(folder) / f"front-{cost.name}-{len(trials)}-trials.png", pick)
        attach(artifact_store, path, study)
        if output is not None:
            shutil.copyfile(path, output)
    return Front(trials, front, pick, path.name)
