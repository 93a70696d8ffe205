"""Evidence the dashboard shows for each trial: learning curve, confusion matrix, notes.

Written as Optuna artifacts (PNG, CSV) and optuna-dashboard notes while the trial runs.
"""

from __future__ import annotations

import csv
import functools
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import optuna
from matplotlib import font_manager
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from optuna.artifacts import FileSystemArtifactStore
from optuna_dashboard import save_note
from sklearn.metrics import confusion_matrix

from objectives.datasets import DATASET_CHOICES, DatasetChoice
from objectives.objective import TrialOutcome
from objectives.training import EpochResult
from search.figure_style import WIDTH, percent_axis, save_figure, styled
from search.report_format import format_value, readable_paths
from spaces.base import RECIPE
from storage.artifacts import attach
from storage.optuna_private import get_note_from_system_attrs, save_note_with_version

# fonts that draw KMNIST's hiragana, best first (Debian: fonts-noto-cjk)
CJK_FONTS = ("Noto Sans CJK JP", "Noto Serif CJK JP", "IPAexGothic", "IPAGothic", "TakaoGothic",
             "Source Han Sans JP")


@functools.cache
def cjk_font() -> str | None:
    installed = {font.name for font in font_manager.fontManager.ttflist}
    if not installed & set(CJK_FONTS):  # installed after matplotlib cached its list of fonts?
        for path in font_manager.findSystemFonts():
            if "CJK" in Path(path).name:
                font_manager.fontManager.addfont(path)
        installed = {font.name for font in font_manager.fontManager.ttflist}
    return next((name for name in CJK_FONTS if name in installed), None)


def _dataset_choice(dataset: str | None, num_classes: int) -> DatasetChoice | None:
    """The dataset whose classes these are; None for a study that did not record it."""
    choice = DATASET_CHOICES.get(dataset or "")
    return choice if choice is not None and choice.num_classes == num_classes else None


def class_labels(dataset: str | None, num_classes: int) -> tuple[tuple[str, ...], str | None]:
    """Names to label a figure's classes with, and the font family that draws them (None: the
    default): KMNIST's characters where a CJK font is installed, their romanisation otherwise."""
    choice = _dataset_choice(dataset, num_classes)
    if choice is None:
        return tuple(str(label) for label in range(num_classes)), None
    font = cjk_font()
    return choice.class_names(characters=font is not None), font


def class_names(dataset: str | None, num_classes: int) -> tuple[str, ...]:
    """Names for tables, CSVs and JSON (text needs no font: KMNIST's carry their characters)."""
    choice = _dataset_choice(dataset, num_classes)
    return tuple(str(label) for label in range(num_classes)) if choice is None else choice.class_names()


@styled
def learning_curve_figure(history: list[EpochResult], title: str) -> Figure:
    """A trial's curve: training and validation loss, and validation accuracy, per epoch."""
    epochs = [r.epoch for r in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(WIDTH, 3.2), layout="constrained")
    loss_ax.plot(epochs, [r.train_loss for r in history], marker="o", label="training loss")
    loss_ax.plot(epochs, [r.val_loss for r in history], marker="o", label="validation loss")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("cross-entropy loss")
    loss_ax.legend()
    acc_ax.plot(epochs, [100 * r.val_accuracy for r in history], marker="o", color="tab:green",
                label="validation accuracy")
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel("validation accuracy")
    percent_axis(acc_ax)
    acc_ax.legend()
    for ax in (loss_ax, acc_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title)
    return fig


@styled
def retrain_curves_figure(runs: list[tuple[int, list[EpochResult], float]], title: str) -> Figure:
    """A retrain's figure from (seed, history, test accuracy) per seed: training loss per epoch
    (a retrain has no validation split) and the test accuracy each seed ended with."""
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(WIDTH, 3.4), width_ratios=(2, 1),
                                          layout="constrained")
    seeds = [str(seed) for seed, _, _ in runs]
    for seed, history, accuracy in runs:
        loss_ax.plot([r.epoch for r in history], [r.train_loss for r in history], marker="o",
                     label=f"seed {seed}: test {100 * accuracy:.2f}%")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("training loss")
    loss_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    loss_ax.legend()
    accuracies = [100 * accuracy for _, _, accuracy in runs]
    acc_ax.scatter(seeds, accuracies, c=[f"C{i}" for i in range(len(runs))], zorder=3)
    for seed, accuracy in zip(seeds, accuracies, strict=True):
        acc_ax.annotate(f"{accuracy:.2f}%", (seed, accuracy), textcoords="offset points", xytext=(7, 0),
                        ha="left", va="center", fontsize=8)
    mean = statistics.fmean(accuracies)
    acc_ax.axhline(mean, color="grey", linestyle="--", linewidth=1, label=f"mean {mean:.2f}%")
    acc_ax.set_xlabel("seed")
    acc_ax.set_ylabel("test accuracy")
    acc_ax.set_title("after the last epoch")
    acc_ax.margins(x=0.3, y=0.3)
    percent_axis(acc_ax)
    acc_ax.legend(loc="lower right")
    fig.suptitle(title)
    return fig


@styled
def confusion_figure(matrix: np.ndarray, title: str, dataset: str | None) -> Figure:
    names, font = class_labels(dataset, len(matrix))
    fig, ax = plt.subplots(figsize=(5.5, 5), layout="constrained")
    ax.imshow(matrix, cmap="Blues")
    threshold = matrix.max() / 2
    for (row, col), count in np.ndenumerate(matrix):
        # inside the axes anyway: left out of the layout, whose cost grows with every text
        ax.text(col, row, str(count), ha="center", va="center", fontsize=6,
                color="white" if count > threshold else "black", in_layout=False)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    text = {"fontfamily": font} if font else {}
    ax.set_xticks(range(len(matrix)), names, rotation=45, ha="right", **text)
    ax.set_yticks(range(len(matrix)), names, **text)
    ax.set_title(title)
    ax.grid(False)
    return fig


def write_confusion_csv(matrix: np.ndarray, path: Path, names: Sequence[str]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["true\\predicted", *names])
        writer.writerows([name, *row] for name, row in zip(names, matrix.tolist(), strict=True))
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
        "stopped_epoch": attrs.get("epochs_run"),
    }
    capped = attrs.get("epochs_capped_from")
    report = attrs["report"].split("_")[0]  # the report's number, as `replay --report` takes it
    lines = [
        f"## Trial {trial.number}: report {report}, {attrs['experiment']}",
        "",
        f"Replayed for {len(history)} epochs" +
        (f" (the report trained {capped}; capped)" if capped else "") +
        f". The claims are from report {report} ({attrs['report']}); this trial's learning_curve.png "
        "and confusion_matrix.png are under Artifacts.",
        "",
        "| metric | report claims | this trial measured |",
        "|---|---|---|",
    ]
    for metric, claimed in attrs["claims"].items():
        value = measured.get(metric)
        lines.append(f"| {metric} | {format_value(metric, claimed)} | {format_value(metric, value)} |")
    return "\n".join(lines)


def recipe_note(trial: optuna.Trial | optuna.trial.FrozenTrial) -> str | None:
    """Markdown: which recipe an enqueued trial ran and where the recipe comes from."""
    attrs = trial.user_attrs
    name, source = attrs.get(RECIPE), attrs.get("recipe_source")
    if not isinstance(name, str) or not isinstance(source, str):
        return None
    return (f"## Trial {trial.number}: recipe {name}\n\nA starting point enqueued after the documented "
            f"experiments, not sampled and not from a report. Source: {source[:500]}")


class TrialEvidence:
    """A trial-end listener for `Objective`: uploads plots and CSVs, writes notes."""

    def __init__(self, store: FileSystemArtifactStore) -> None:
        self.store = store

    @staticmethod
    def confusion(trial: optuna.Trial, outcome: TrialOutcome) -> tuple[np.ndarray, str | None] | None:
        """The validation confusion matrix of a completed trial and its study's dataset."""
        if outcome.val_predictions is None:
            return None
        matrix = confusion_matrix(outcome.val_labels.numpy(), outcome.val_predictions.numpy(),
                                  labels=list(range(outcome.num_classes)))
        return matrix, trial.study.user_attrs.get("dataset")

    def figures(self, trial: optuna.Trial, outcome: TrialOutcome) -> dict[str, Figure]:
        """The trial's figures by file name; the caller saves or closes them."""
        figures = {}
        if outcome.history:
            figures["learning_curve.png"] = learning_curve_figure(outcome.history, f"trial {trial.number}")
        confusion = self.confusion(trial, outcome)
        if confusion is not None:
            figures["confusion_matrix.png"] = confusion_figure(
                confusion[0], f"trial {trial.number}: validation confusion matrix", confusion[1])
        return figures

    def __call__(self, trial: optuna.Trial, outcome: TrialOutcome) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            for name, figure in self.figures(trial, outcome).items():
                attach(self.store, save_figure(figure, folder / name), trial)
            confusion = self.confusion(trial, outcome)
            if confusion is not None:
                matrix, dataset = confusion
                csv_path = write_confusion_csv(matrix, folder / "confusion_matrix.csv",
                                               class_names(dataset, len(matrix)))
                attach(self.store, csv_path, trial)
        note = claims_note(trial, outcome.history) or recipe_note(trial)
        if note:
            save_note(trial, note)


def append_note(study: optuna.Study, trial: optuna.trial.FrozenTrial, text: str) -> None:
    """Add to a finished trial's dashboard note (notes live in study attributes, so this works
    after the trial ended, unlike trial attributes). Paths read as `readable_paths` shows them:
    the dashboard is often read on another machine, where a scratch folder means nothing."""
    storage, study_id = study._storage, study._study_id
    note = get_note_from_system_attrs(storage.get_study_system_attrs(study_id), trial._trial_id)
    text = readable_paths(text)
    body = f"{note['body']}\n\n{text}" if note["body"] else text
    save_note_with_version(storage, study_id, trial._trial_id, note["version"] + 1, body)
