"""The Optuna objective: space -> model -> shared training loop -> validation accuracy.

It talks to Optuna only through the trial it is given (suggest, report, should_prune,
user attributes).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch

from objectives.budget import Budget
from objectives.cost import measure_latency
from objectives.data import SearchData, TensorSplit
from objectives.models import InvalidModelError, build_model, count_parameters, forward_mflops, model_config
from objectives.training import (
    Checkpoint,
    EpochResult,
    NonFiniteLossError,
    evaluate,
    resolve_precision,
    seed_everything,
    train,
    train_settings,
)
from spaces.base import DOCUMENTED_EPOCHS, EARLY_STOPPING, SearchSpace

EpochListener = Callable[[int, EpochResult], None]


@dataclass(frozen=True)
class TrialOutcome:
    """What a finished (or pruned) trial leaves behind for evidence writers."""

    history: list[EpochResult]
    num_classes: int
    val_labels: torch.Tensor | None = None  # CPU; only for completed trials
    val_predictions: torch.Tensor | None = None


TrialEndListener = Callable[[optuna.Trial, TrialOutcome], None]
CheckpointPath = Callable[[optuna.Trial], Path | None]
CHECKPOINT_DIGEST = "checkpoint_sha256"  # user attribute: a retry inherits it with the file


def trial_epochs(budget: int, documented: int | None) -> int:
    """A documented experiment runs its own epoch count, capped at the search's budget."""
    return budget if documented is None else min(budget, documented)


class Objective:
    """Trains the trial's model; maximises the best validation accuracy over its epochs.

    `test` is given only by replay, whose claims to check are test accuracies; the
    search itself never passes it. A model over `budget` is pruned before training, and
    each limit is set as a trial constraint, from which TPE learns the feasible region.
    `precision` is "fp32", "bf16" or "auto" (see `resolve_precision`); validation runs in the
    same precision as training.
    """

    def __init__(self, space: SearchSpace, data: SearchData, epochs: int, seed: int,
                 on_epoch: EpochListener | None = None, test: TensorSplit | None = None,
                 on_trial_end: TrialEndListener | None = None,
                 checkpoint_for: CheckpointPath | None = None, budget: Budget | None = None,
                 precision: str = "fp32") -> None:
        self.space, self.data, self.epochs, self.seed = space, data, epochs, seed
        self.on_epoch, self.test, self.on_trial_end = on_epoch, test, on_trial_end
        self.checkpoint_for, self.budget = checkpoint_for, budget or Budget()
        self.precision = resolve_precision(precision, data.train.images.device)

    def __call__(self, trial: optuna.Trial) -> float:
        params: dict[str, Any] = self.space.suggest(trial)
        documented = trial.user_attrs.get(DOCUMENTED_EPOCHS)
        epochs = trial_epochs(self.epochs, documented)
        if documented is not None and documented > epochs:
            trial.set_user_attr("epochs_capped_from", documented)
        path = self.checkpoint_for(trial) if self.checkpoint_for else None
        checkpoint = None if path is None else Checkpoint(
            path, trial.user_attrs.get(CHECKPOINT_DIGEST),
            on_saved=lambda digest: trial.set_user_attr(CHECKPOINT_DIGEST, digest))
        # a retried trial keeps its predecessor's seed so its resumed run is the same run
        seed = self.seed + trial.user_attrs.get("train_seed_offset", trial.number)
        seed_everything(seed)
        device = self.data.train.images.device
        try:
            model = build_model(model_config(self.space.family, params, self.data.num_classes))
        except InvalidModelError as error:  # a corner of the space with no model in it
            self._prune_untrained(trial, str(error))
        mflops = forward_mflops(model)
        trial.set_user_attr("forward_mflops", round(mflops, 3))
        cap = self.space.max_forward_mflops
        if cap is not None and mflops > cap:
            self._prune_untrained(trial, f"{mflops:.0f} MFLOPs per image exceed {self.space.name}'s "
                                         f"cap of {cap:.0f}: too slow for this space's budget")
        costs = {"param_count": count_parameters(model), "forward_mflops": round(mflops, 3),
                 **measure_latency(model)}  # on the CPU, before the model moves to the device
        for name, value in costs.items():
            trial.set_user_attr(name, value)
        self._check_budget(trial, costs)
        model = model.to(device)
        trial.set_user_attr("device", str(device))
        trial.set_user_attr("precision", self.precision)
        trial.set_user_attr("train_seed", seed)
        trial.set_user_attr("train_seed_offset", seed - self.seed)
        settings = train_settings(params, epochs, seed, trial.user_attrs.get(EARLY_STOPPING),
                                  self.precision)
        history: list[EpochResult] = []

        def report(result: EpochResult) -> None:
            history.append(result)
            if result.restored:
                trial.set_user_attr("resumed_from_epoch", result.epoch)
            best = max(history, key=lambda r: r.val_accuracy)
            trial.set_user_attr("best_epoch", best.epoch)
            trial.set_user_attr(
                "seconds_per_epoch", round(statistics.median(r.seconds for r in history), 3)
            )
            trial.report(result.val_accuracy, result.epoch)
            if self.on_epoch is not None:
                self.on_epoch(trial.number, result)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {result.epoch}")

        def checkpoint_failed(error: Exception) -> None:
            trial.set_user_attr("checkpoint_error", str(error))

        try:
            train(model, self.data.train, self.data.val, settings, report, checkpoint,
                  checkpoint_failed)
        except NonFiniteLossError as error:
            trial.set_user_attr("pruned_reason", str(error))
            self._trial_ended(trial, TrialOutcome(history, self.data.num_classes))
            raise optuna.TrialPruned(str(error)) from None
        except optuna.TrialPruned:
            self._trial_ended(trial, TrialOutcome(history, self.data.num_classes))
            raise
        trial.set_user_attr("epochs_run", len(history))
        trial.set_user_attr("min_val_loss", min(r.val_loss for r in history))
        if self.test is not None:
            evaluation = evaluate(model, self.test, self.precision)
            trial.set_user_attr("test_accuracy", evaluation.accuracy)
            trial.set_user_attr("test_loss", evaluation.loss)
        predictions = (evaluate(model, self.data.val, self.precision).predictions
                       if self.on_trial_end else None)
        self._trial_ended(trial, TrialOutcome(history, self.data.num_classes,
                                              self.data.val.labels.cpu(), predictions))
        return max(r.val_accuracy for r in history)

    def _check_budget(self, trial: optuna.Trial, costs: dict[str, float]) -> None:
        constraints = trial.constraints  # a retried trial inherits its predecessor's
        for name, excess in self.budget.excess(costs).items():
            if name not in constraints:
                trial.set_constraint(name, excess)
        violations = self.budget.violations(costs)
        if violations:
            self._prune_untrained(trial, f"over budget: {'; '.join(violations)}")

    @staticmethod
    def _prune_untrained(trial: optuna.Trial, reason: str) -> None:
        trial.set_user_attr("pruned_reason", reason)
        raise optuna.TrialPruned(reason)

    def _trial_ended(self, trial: optuna.Trial, outcome: TrialOutcome) -> None:
        # the checkpoint stays until the trial's end is stored (search.study.CheckpointPaths)
        if self.on_trial_end is not None:
            self.on_trial_end(trial, outcome)
