"""The learning-curve runs: each documented experiment trained on nested stratified subsets
of the training split at several sizes, several seeds each, and tested on the test set.

The runs are trials of studies `curve-<space>-<dataset>`, so a stopped audit resumes where
it stopped.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from objectives.data import SearchData, TensorSplit, nested_stratified_order, take
from objectives.datasets import DataUnavailableError
from objectives.objective import Objective
from search.study import StudyMismatchError, make_sampler, open_study
from spaces.base import DocumentedExperiment, SearchSpace

SOURCE = "learning-curve"


@dataclass(frozen=True)
class CurveSettings:
    sizes: tuple[int, ...]  # training-set sizes, ascending; none above the training split
    seeds: int  # runs per size; seed i draws its own nested subsets and initial weights
    max_epochs: int | None  # cap on the documented epochs (documented early stopping still applies)
    seed: int  # base seed; also fixed the validation split
    level: float = 0.9  # nominal coverage of the prediction intervals
    bootstrap: int = 500

    def recorded(self, split_hash: str) -> dict[str, Any]:
        """What the runs depend on: a study made with other values holds other runs."""
        return {"max_epochs": self.max_epochs, "seed": self.seed, "split_hash": split_hash}


@dataclass(frozen=True)
class CurveRun:
    experiment: str  # documented experiment key
    size: int
    seed: int
    test_accuracy: float
    val_accuracy: float  # best over epochs, on the fixed validation split
    epochs_run: int
    param_count: int
    trial: int


def curve_study(storage: optuna.storages.BaseStorage, space: SearchSpace, dataset: str,
                settings: CurveSettings, split_hash: str) -> optuna.Study:
    study = open_study(storage, f"curve-{space.name}-{dataset}", space, dataset,
                       make_sampler(settings.seed), optuna.pruners.NopPruner())
    wanted = settings.recorded(split_hash)
    recorded = study.user_attrs.get("curve_settings")
    if recorded is None:
        study.set_user_attr("curve_settings", wanted)
    elif recorded != wanted:
        differ = ", ".join(f"{k} {recorded.get(k)} (now {v})" for k, v in wanted.items()
                           if recorded.get(k) != v)
        raise StudyMismatchError(f"study {study.study_name!r} holds learning-curve runs made with {differ}: "
                                 "repeat those options or use another --storage")
    return study


class CurveObjective:
    """Trains the trial on the subset its user attributes name, so any queued run is run right."""

    def __init__(self, space: SearchSpace, data: SearchData, test: TensorSplit,
                 settings: CurveSettings) -> None:
        self.space, self.data, self.test, self.settings = space, data, test, settings
        # every curve run carries its documented epochs; the budget only caps them
        self.budget = settings.max_epochs or sys.maxsize
        self.orders: dict[int, np.ndarray] = {}

    def subset(self, size: int, seed: int) -> SearchData:
        if seed not in self.orders:
            labels = self.data.train.labels.cpu().numpy()
            self.orders[seed] = nested_stratified_order(labels, self.settings.seed + seed)
        return replace(self.data, train=take(self.data.train, self.orders[seed][:size]))

    def __call__(self, trial: optuna.Trial) -> float:
        data = self.subset(trial.user_attrs["train_size"], trial.user_attrs["curve_seed"])
        return Objective(self.space, data, self.budget, self.settings.seed, test=self.test)(trial)


def _key(trial: FrozenTrial) -> tuple[str, int, int]:
    attrs = trial.user_attrs
    return attrs.get("documented_experiment", ""), attrs.get("train_size", -1), attrs.get("curve_seed", -1)


def run_one(study: optuna.Study, objective: CurveObjective) -> FrozenTrial:
    """Run the oldest queued trial."""
    finished: list[FrozenTrial] = []
    study.optimize(objective, n_trials=1, catch=(RuntimeError, ValueError),
                   callbacks=[lambda _, trial: finished.append(trial)])
    return finished[0]


def enqueue_run(study: optuna.Study, space: SearchSpace, experiment: DocumentedExperiment, size: int,
                seed: int) -> None:
    study.enqueue_trial(space.trial_params(experiment.config),
                        user_attrs={**experiment.trial_attrs(), "source": SOURCE, "train_size": size,
                                    "curve_seed": seed, "train_seed_offset": seed})


def run_curve(study: optuna.Study, space: SearchSpace, experiment: DocumentedExperiment,
              objective: CurveObjective, settings: CurveSettings,
              report: Callable[[str], None] = lambda _: None) -> list[CurveRun]:
    """Every (size, seed) run of `experiment`, training only those the study does not hold yet."""
    wanted = [(experiment.key, size, seed) for seed in range(settings.seeds) for size in settings.sizes]
    done = {_key(t): t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,
                                                                         TrialState.PRUNED))}
    waiting = {_key(t) for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))}
    for key in wanted:
        if key not in done and key not in waiting:
            enqueue_run(study, space, experiment, key[1], key[2])
    todo = [key for key in wanted if key not in done]
    for seed in range(settings.seeds):
        for key in (k for k in todo if k[2] == seed):
            while key not in done:  # a run queued by an interrupted audit may come first: it is run too
                trial = run_one(study, objective)
                done[_key(trial)] = trial  # a failed run is left out of the curve and retried next time
        mine = [done[k] for k in wanted if k[2] == seed and done[k].state == TrialState.COMPLETE]
        missed = sum(k[2] == seed for k in wanted) - len(mine)
        accs = [t.user_attrs["test_accuracy"] for t in mine] or [float("nan")]
        report(f"{experiment.key} seed {seed}: {len(mine)} sizes, test accuracy {100 * min(accs):.1f}% .. "
               f"{100 * max(accs):.1f}%" + f"; {missed} runs failed or were pruned" * (missed > 0))
    return [CurveRun(experiment.key, t.user_attrs["train_size"], t.user_attrs["curve_seed"],
                     t.user_attrs["test_accuracy"], max(t.intermediate_values.values()),
                     t.user_attrs["epochs_run"], t.user_attrs["param_count"], t.number)
            for t in (done[k] for k in wanted) if t.state == TrialState.COMPLETE]


def curve_points(runs: Sequence[CurveRun]) -> tuple[np.ndarray, np.ndarray]:
    return (np.array([r.size for r in runs], dtype=float), np.array([r.test_accuracy for r in runs]))


def resolve_sizes(requested: Sequence[int], available: int, dataset: str) -> tuple[int, ...]:
    """`requested` with 0 meaning the whole training split, checked against `available`."""
    too_big = [n for n in requested if n > available]
    if too_big:
        raise DataUnavailableError(f"--sizes {too_big[0]:,} exceeds the {available:,} training images of "
                                 f"{dataset} left after the validation split: use sizes up to {available:,} "
                                 "or 'all'")
    return tuple(sorted({available if n == 0 else n for n in requested}))
