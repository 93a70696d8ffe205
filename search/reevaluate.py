"""A pick that is not luck: the top trials re-evaluated by stratified cross-validation.

The search ranks trials by one validation split of ~1/6 of the training images. Near the
top, that split cannot tell trials apart (on 1,169 images its standard error is ~0.8
points) and the maximum of noisy values is optimistic. Re-evaluation trains each of the
top K trials' configurations once per fold of scikit-learn's StratifiedKFold over the
whole training set, for the epochs `export` would retrain it for, and picks by the mean.

Results are stored as study user attributes (Optuna does not let finished trials change)
and as a note on each trial, so `status`, `export` and the dashboard show them.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState
from sklearn.model_selection import StratifiedKFold

from objectives.schema import SchemaError, mapping, number, whole_number
from search.export import retrain_epochs, trial_config
from search.study import PICK_ATTR, leaderboard
from spaces.base import SearchSpace

RESULT_PREFIX = "reevaluation:"  # + trial number


@dataclass(frozen=True)
class Reevaluation:
    trial: int
    validation_accuracy: float  # the search's single-split value
    fold_accuracies: tuple[float, ...]
    epochs: int
    seconds: float

    @property
    def mean(self) -> float:
        return statistics.fmean(self.fold_accuracies)

    @property
    def std(self) -> float:
        return statistics.stdev(self.fold_accuracies) if len(self.fold_accuracies) > 1 else 0.0


def fold_splits(labels: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train indices, held-out indices) per fold, stratified by class."""
    return list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(
        np.zeros(len(labels)), labels))


def pick_by_mean(results: list[Reevaluation]) -> Reevaluation:
    """The highest mean over folds; ties go to the higher single-split value, then the earlier trial."""
    return max(results, key=lambda r: (r.mean, r.validation_accuracy, -r.trial))


CrossValidate = Callable[[dict[str, Any], int, int], list[float]]  # params, epochs, seed -> per fold


def reevaluate(study: optuna.Study, space: SearchSpace, cross_validate: CrossValidate, top: int,
               seed: int, report: Callable[[Reevaluation], None] | None = None) -> list[Reevaluation]:
    """Cross-validate the `top` completed trials (already re-evaluated ones are reused),
    record each result and the pick on the study, and return the results best first."""
    from search.evidence import append_note

    results = []
    for trial in leaderboard(study, top):
        done = stored_result(study, trial.number)
        if done is not None:
            results.append(done)
            continue
        params = trial_config(trial, space)
        epochs = retrain_epochs(trial, params)
        started = time.perf_counter()
        accuracies = cross_validate(params, epochs, seed)
        result = Reevaluation(trial.number, float(trial.value), tuple(accuracies), epochs,
                              round(time.perf_counter() - started, 1))
        study.set_user_attr(f"{RESULT_PREFIX}{trial.number}", {**asdict(result), "mean": result.mean,
                                                               "std": result.std})
        append_note(study, trial, f"## Re-evaluated\n\n{100 * result.mean:.2f}% ± {100 * result.std:.2f} "
                                  f"mean over {len(accuracies)} stratified folds of the training set "
                                  f"({epochs} epochs each, {result.seconds:.0f} s), against "
                                  f"{100 * result.validation_accuracy:.2f}% on the search's validation "
                                  "split.")
        results.append(result)
        if report is not None:
            report(result)
    if not results:
        return []
    pick = pick_by_mean(results)
    study.set_user_attr(PICK_ATTR, {"trial": pick.trial, "mean": pick.mean, "std": pick.std,
                                    "folds": len(pick.fold_accuracies), "top": len(results),
                                    "seconds": round(sum(r.seconds for r in results), 1)})
    return sorted(results, key=lambda r: r.mean, reverse=True)


def reevaluate_study(study: optuna.Study, data_dir: Path, device: str, top: int, folds: int,
                     say: Callable[[str], None],
                     report: Callable[[Reevaluation], None] | None = None) -> list[Reevaluation]:
    """`reevaluate` on a study `start` made: its dataset's training images from `data_dir`,
    folds seeded by the study's seed, training in the study's precision."""
    from objectives.cross_validation import fold_accuracies
    from objectives.data import load_raw
    from objectives.datasets import DATASET_CHOICES
    from objectives.training import resolve_device, resolve_precision
    from search.export import ExportError
    from search.study import SearchSettings, study_precision
    from spaces import get_space

    settings = SearchSettings.load(study)
    space, dataset = get_space(str(study.user_attrs.get("space"))), str(study.user_attrs.get("dataset"))
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise ExportError(f"study {study.study_name!r} has no completed trial to re-evaluate: run `start` "
                          "first")
    torch_device = resolve_device(device)
    precision = resolve_precision(study_precision(study, None), torch_device)
    images, labels = load_raw(dataset, data_dir, train=True)
    splits = fold_splits(labels.numpy(), folds, settings.seed)
    say(f"re-evaluating the top {top} trials of {study.study_name!r}: {folds} folds of {len(labels):,} "
        f"{dataset} images, on {torch_device} in {precision}")

    def cross_validate(params: dict[str, Any], epochs: int, seed: int) -> list[float]:
        return fold_accuracies(space.family, params, epochs, seed, images, labels,
                               DATASET_CHOICES[dataset].num_classes, splits, torch_device, precision)

    return reevaluate(study, space, cross_validate, top, settings.seed, report)


def stored_result(study: optuna.Study, trial_number: int) -> Reevaluation | None:
    """A trial's stored re-evaluation, checked; None when there is none or it is malformed."""
    value = study.user_attrs.get(f"{RESULT_PREFIX}{trial_number}")
    try:
        mapping(value, "reevaluation")
        accuracies = tuple(number(a, "fold_accuracies", 0, 1) for a in value["fold_accuracies"][:100])
        if not accuracies:
            return None
        return Reevaluation(whole_number(value["trial"], "trial", trial_number, trial_number),
                            number(value["validation_accuracy"], "validation_accuracy", 0, 1), accuracies,
                            whole_number(value["epochs"], "epochs", 1, 10**4),
                            number(value["seconds"], "seconds", 0, 10**9))
    except (SchemaError, KeyError, TypeError):
        return None
