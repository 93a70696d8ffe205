"""Live progress and leaderboards with rich."""

from __future__ import annotations

from typing import TYPE_CHECKING

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from search.study import FINISHED, leaderboard, trial_source
from spaces.base import format_params

if TYPE_CHECKING:  # keeps `kmnist-search` start-up free of torch until training starts
    from objectives.training import EpochResult


def trial_reason(trial: FrozenTrial) -> str:
    """Why a trial was pruned or failed, in one line ("" when it completed)."""
    for reason in (trial.user_attrs.get("pruned_reason"), trial.user_attrs.get("surplus")):
        if reason:
            return reason
    if trial.user_attrs.get("interrupted"):
        return "interrupted (Ctrl-C); the next start resumes it"
    lines = trial.system_attrs.get("fail_reason", "").strip().splitlines()
    return lines[-1] if lines else ""


class SearchProgress:
    """Trials done of target, the running trial's epoch, best so far, elapsed and ETA."""

    def __init__(self, console: Console, study: optuna.Study, target: int) -> None:
        self.console, self.study = console, study
        done = len(study.get_trials(deepcopy=False, states=FINISHED))
        self.best_line = self._best_line()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=console,
        )
        self.task = self.progress.add_task("trials", total=target, completed=done, status="")

    def __enter__(self) -> SearchProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def _best_line(self) -> str:
        try:
            best = self.study.best_trial
        except ValueError:
            return "best: none yet"
        return f"best {best.value:.4f} (trial {best.number})"

    def on_epoch(self, trial_number: int, result: EpochResult) -> None:
        self.progress.update(
            self.task,
            status=f"trial {trial_number} epoch {result.epoch} val {result.val_accuracy:.4f} | "
            f"{self.best_line}",
        )

    def on_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        # count from the storage: other workers finish trials too
        done = len(study.get_trials(deepcopy=False, states=FINISHED))
        self.progress.update(self.task, completed=done)
        self.best_line = self._best_line()
        value = f"{trial.value:.4f}" if trial.value is not None else "-"
        reason = trial_reason(trial)
        self.console.print(
            f"trial {trial.number:>3} {trial.state.name.lower():<8} {value:>7}  "
            f"[{trial_source(trial)}] {format_params(trial.params)} {reason}".rstrip(),
            highlight=False,
        )
        if trial.user_attrs.get("checkpoint_error"):
            self.console.print(f"  checkpoint: {trial.user_attrs['checkpoint_error']}", highlight=False)


def leaderboard_table(study: optuna.Study, limit: int = 10) -> Table:
    states = {s: 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        states[t.state] += 1
    counts = ", ".join(f"{n} {s.name.lower()}" for s, n in states.items() if n)
    table = Table(title=f"study {study.study_name}: {counts or 'no trials'}")
    for column in ("rank", "trial", "val accuracy", "best epoch", "s/epoch", "source", "params"):
        table.add_column(column, overflow="fold")
    for rank, t in enumerate(leaderboard(study, limit), start=1):
        table.add_row(
            str(rank), str(t.number), f"{t.value:.4f}", str(t.user_attrs.get("best_epoch", "-")),
            str(t.user_attrs.get("seconds_per_epoch", "-")), trial_source(t),
            format_params(t.params),
        )
    return table
