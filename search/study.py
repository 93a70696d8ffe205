"""Creating, resuming and driving studies.

`--trials N` is the TOTAL number of finished (complete or pruned) trials a study should
hold: Optuna's own `n_trials` counts only the trials of one call (optuna#2638).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import optuna
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, TrialState

from spaces.base import DocumentedExperiment, SearchSpace

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
METRIC_NAME = "validation accuracy"
PRUNERS = ("median", "hyperband", "none")
MAX_CONSECUTIVE_FAILURES = 5


class StudyMismatchError(ValueError):
    """An existing study was created for a different space or dataset."""


def make_sampler(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    if name == "median":
        # wait for a few complete trials and two epochs: early epochs rank models poorly
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=2)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {name!r}")


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def find_study(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study | None:
    if name not in optuna.study.get_all_study_names(storage):
        return None
    return optuna.load_study(study_name=name, storage=storage)


def check_matches(study: optuna.Study, space: SearchSpace, dataset: str) -> None:
    attrs = study.user_attrs
    for key, wanted in (("space", space.name), ("dataset", dataset)):
        if key in attrs and attrs[key] != wanted:
            raise StudyMismatchError(
                f"study {study.study_name!r} was created with {key} {attrs[key]!r}, not "
                f"{wanted!r}: use --{key} {attrs[key]} or another --study name"
            )


def open_study(storage: optuna.storages.BaseStorage, name: str, space: SearchSpace,
               dataset: str, sampler: optuna.samplers.BaseSampler,
               pruner: optuna.pruners.BasePruner) -> optuna.Study:
    """Create study `name` for `space`, or resume it if it exists for the same space."""
    existing = find_study(storage, name)
    if existing is not None:
        check_matches(existing, space, dataset)
    study = optuna.create_study(
        study_name=name, storage=storage, sampler=sampler, pruner=pruner,
        direction="maximize", load_if_exists=True,
    )
    if existing is None:
        study.set_user_attr("space", space.name)
        study.set_user_attr("dataset", dataset)
        study.set_metric_names([METRIC_NAME])
    return study


def enqueue_documented(study: optuna.Study, space: SearchSpace,
                       experiments: Sequence[DocumentedExperiment] | None = None) -> int:
    """Enqueue each documented experiment not yet in the study; returns how many were added."""
    present = {t.user_attrs.get("documented_experiment") for t in study.get_trials(deepcopy=False)}
    added = 0
    for experiment in space.experiments if experiments is None else experiments:
        if experiment.key in present:
            continue
        study.enqueue_trial(space.trial_params(experiment.config),
                            user_attrs=experiment.trial_attrs())
        added += 1
    return added


class _StopAfterRepeatedFailures:
    """A search whose every trial crashes would otherwise loop forever."""

    def __init__(self, limit: int) -> None:
        self.limit, self.streak = limit, 0

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.streak = self.streak + 1 if trial.state == TrialState.FAIL else 0
        if self.streak >= self.limit:
            study.stop()


def run_until(study: optuna.Study, objective: Callable[[optuna.Trial], float], target: int,
              callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = ()) -> None:
    """Run trials until the study holds `target` finished trials."""
    if finished_count(study) >= target:
        return
    study.optimize(
        objective,
        callbacks=[MaxTrialsCallback(target, states=FINISHED),
                   _StopAfterRepeatedFailures(MAX_CONSECUTIVE_FAILURES), *callbacks],
        catch=(RuntimeError, ValueError),
        gc_after_trial=False,
    )


def trial_source(trial: FrozenTrial) -> str:
    return trial.user_attrs.get("documented_experiment", "sampled")


def leaderboard(study: optuna.Study, limit: int = 10) -> list[FrozenTrial]:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(complete, key=lambda t: t.value, reverse=True)[:limit]
