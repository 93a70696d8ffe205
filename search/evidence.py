"""Evidence the dashboard shows for each trial: learning curve, confusion matrix, notes.

Written as Optuna artifacts (PNG, CSV) and optuna-dashboard notes while the trial runs.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
from optuna.artifacts import FileSystemArtifactStore  # noqa: E402
from optuna_dashboard import save_note  # noqa: E402
from optuna_dashboard._note import get_note_from_system_attrs, save_note_with_version  # noqa: E402
from sklearn.metrics import confusion_matrix  # noqa: E402

from objectives.objective import TrialOutcome  # noqa: E402
from objectives.training import EpochResult  # noqa: E402
from storage.artifacts import attach  # noqa: E402


def plot_learning_curve(history: list[EpochResult], path: Path, title: str) -> Path:
    epochs = [r.epoch for r in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(9, 3.5))
    loss_ax.plot(epochs, [r.train_loss for r in history], marker="o", label="train loss")
    loss_ax.plot(epochs, [r.val_loss for r in history], marker="o", label="validation loss")
    loss_ax.set_xlabel("epoch")
    loss_ax.legend()
    acc_ax.plot(epochs, [r.val_accuracy for r in history], marker="o", color="tab:green")
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel("validation accuracy")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_confusion(matrix: np.ndarray, path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.imshow(matrix, cmap="Blues")
    for (row, col), count in np.ndenumerate(matrix):
        ax.text(col, row, str(count), ha="center", va="center", fontsize=6)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_xticks(range(len(matrix)))
    ax.set_yticks(range(len(matrix)))
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_confusion_csv(matrix: np.ndarray, path: Path) -> Path:
    header = "true\\predicted," + ",".join(str(i) for i in range(len(matrix)))
    rows = [f"{i}," + ",".join(str(v) for v in row) for i, row in enumerate(matrix)]
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def claims_note(trial: optuna.Trial | optuna.trial.FrozenTrial, history: list[EpochResult]) -> str | None:
    """Markdown: each claim of a replayed documented experiment beside what this trial measured."""
    attrs = trial.user_attrs
    if "claims" not in attrs:
        return None
    measured = {
        "val_accuracy": max((r.val_accuracy for r in history), default=None),
        "val_loss": min((r.val_loss for r in history), default=None),
        "param_count": attrs.get("param_count"),
        "test_accuracy": attrs.get("test_accuracy"),
        "test_loss": attrs.get("test_loss"),
    }
    capped = attrs.get("epochs_capped_from")
    lines = [
        f"## {attrs['report']}: {attrs['experiment']}",
        "",
        f"Replayed for {len(history)} epochs" +
        (f" (the report trained {capped}; capped)." if capped else "."),
        "",
        "| metric | report claims | this trial measured |",
        "|---|---|---|",
    ]
    for metric, claimed in attrs["claims"].items():
        value = measured.get(metric)
        lines.append(f"| {metric} | {claimed:g} | {'-' if value is None else f'{value:.4g}'} |")
    return "\n".join(lines)


class TrialEvidence:
    """A trial-end listener for `Objective`: uploads plots and CSVs, writes notes."""

    def __init__(self, store: FileSystemArtifactStore) -> None:
        self.store = store

    def __call__(self, trial: optuna.Trial, outcome: TrialOutcome) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            if outcome.history:
                curve = plot_learning_curve(outcome.history, folder / "learning_curve.png",
                                            f"trial {trial.number}")
                attach(self.store, curve, trial)
            if outcome.val_predictions is not None:
                matrix = confusion_matrix(outcome.val_labels.numpy(), outcome.val_predictions.numpy(),
                                          labels=list(range(outcome.num_classes)))
                title = f"trial {trial.number}: validation confusion matrix"
                attach(self.store, plot_confusion(matrix, folder / "confusion_matrix.png", title), trial)
                attach(self.store, write_confusion_csv(matrix, folder / "confusion_matrix.csv"), trial)
        note = claims_note(trial, outcome.history)
        if note:
            save_note(trial, note)


def append_note(study: optuna.Study, trial: optuna.trial.FrozenTrial, text: str) -> None:
    """Add to a finished trial's dashboard note (notes live in study attributes, so this works
    after the trial ended, unlike trial attributes)."""
    storage, study_id = study._storage, study._study_id
    note = get_note_from_system_attrs(storage.get_study_system_attrs(study_id), trial._trial_id)
    body = f"{note['body']}\n\n{text}" if note["body"] else text
    save_note_with_version(storage, study_id, trial._trial_id, note["version"] + 1, body)
