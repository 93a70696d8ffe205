"""Every figure, table and note a person reads, rendered from a real small run and checked:
no empty axes, the classes by name, numbers formatted for reading."""

import csv
import json

import numpy as np
import optuna
import pytest
import torch

from objectives.data import load_search_data
from objectives.datasets import DATASET_CHOICES
from objectives.objective import Objective
from search import evidence
from search.evidence import TrialEvidence, class_labels, confusion_figure
from search.export import checked_params, export_config
from search.retrain import run_figures, train_and_test, write_run
from search.study import enqueue_documented, make_sampler, open_study
from spaces import get_space
from storage.artifacts import open_artifact_store
from storage.optuna_private import get_note_from_system_attrs

KMNIST_ROMAN = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")


def empty_axes(fig) -> list[str]:
    """Titles of axes that draw nothing: no artist, or only lines without a finite point."""
    empty = []
    for ax in fig.axes:
        lines = [line for line in ax.lines if np.isfinite(np.asarray(line.get_ydata(), float)).any()]
        nan_lines = [line.get_label() for line in ax.lines if line not in lines]
        drawn = lines or ax.images or [c for c in ax.collections if len(c.get_offsets())]
        if not drawn or nan_lines:
            empty.append(f"{ax.get_ylabel()!r} {nan_lines}")
    return empty


def tick_texts(fig) -> set[str]:
    return {label.get_text() for ax in fig.axes
            for label in (*ax.get_xticklabels(), *ax.get_yticklabels())}


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, synthetic_root):
    """Two trials of mlp_regularisation on real SQLite: a replayed documented experiment
    (with its claims note) and a sampled one, with the evidence each trial left."""
    folder = tmp_path_factory.mktemp("figures")
    url = f"sqlite:///{folder / 'k.db'}"
    space = get_space("mlp_regularisation")
    data = load_search_data("kmnist", synthetic_root, 1 / 6, 0, torch.device("cpu"))
    study = open_study(optuna.storages.RDBStorage(url), "figures", space, "kmnist", make_sampler(0),
                       optuna.pruners.NopPruner())
    enqueue_documented(study, space, experiments=space.experiments[:1])
    store = open_artifact_store(folder / "artifacts")
    writer, outcomes = TrialEvidence(store), {}

    def listener(trial, outcome):
        writer(trial, outcome)
        outcomes[trial.number] = (trial, outcome)

    study.optimize(Objective(space, data, 2, 0, on_trial_end=listener), n_trials=2)
    return folder, url, study, writer, outcomes


@pytest.mark.slow
def test_trial_figures_have_no_empty_axes_and_name_the_classes(small_run):
    _, _, _, writer, outcomes = small_run
    names, _ = class_labels("kmnist", 10)
    for trial, outcome in outcomes.values():
        figures = writer.figures(trial, outcome)
        assert set(figures) == {"learning_curve.png", "confusion_matrix.png"}
        for name, fig in figures.items():
            assert not empty_axes(fig), (name, empty_axes(fig))
        assert set(names) <= tick_texts(figures["confusion_matrix.png"])


@pytest.mark.slow
def test_save_figure_writes_what_savefig_writes(tmp_path, small_run):
    """save_figure draws once where savefig draws twice, and the confusion matrix's counts sit
    outside the layout: the files must still be the same as savefig's with every text laid out."""
    import matplotlib.pyplot as plt

    from search.figure_style import DPI, save_figure

    _, _, _, writer, outcomes = small_run
    trial, outcome = next(iter(outcomes.values()))
    by_savefig, by_save_figure = writer.figures(trial, outcome), writer.figures(trial, outcome)
    for name, fig in by_savefig.items():
        for text in (t for ax in fig.axes for t in ax.texts):
            text.set_in_layout(True)
        fig.savefig(tmp_path / f"savefig-{name}", dpi=DPI)
        plt.close(fig)
        save_figure(by_save_figure[name], tmp_path / name)
        assert (tmp_path / name).read_bytes() == (tmp_path / f"savefig-{name}").read_bytes(), name
    fig = writer.figures(trial, outcome)["learning_curve.png"]
    with pytest.raises(ValueError, match="name the file .png"):
        save_figure(fig, tmp_path / "curve.svg")
    assert not (tmp_path / "curve.svg").exists()


@pytest.mark.slow
def test_trial_confusion_csv_carries_the_class_names(small_run):
    folder, _, study, _, _ = small_run
    csv_files = list((folder / "artifacts").rglob("*"))
    rows = [list(csv.reader(path.open(encoding="utf-8"))) for path in csv_files
            if path.is_file() and path.read_bytes().startswith(b"true\\predicted")]
    assert len(rows) == 2  # one per completed trial
    header, *body = rows[0]
    assert header[1:] == list(DATASET_CHOICES["kmnist"].class_names())
    assert header[1] == "お (o)" and [row[0] for row in body] == header[1:]
    assert sum(int(v) for row in body for v in row[1:]) == 100  # the validation split


@pytest.mark.slow
def test_replayed_trial_note_formats_counts_percentages_and_losses(small_run):
    _, _, study, _, outcomes = small_run
    replayed = next(t for t in study.get_trials() if "claims" in t.user_attrs)
    note = get_note_from_system_attrs(study._storage.get_study_system_attrs(study._study_id),
                                      replayed._trial_id)["body"]
    claims = replayed.user_attrs["claims"]
    assert f"| param_count | {claims['param_count']:,.0f} | {replayed.user_attrs['param_count']:,} |" in note
    assert f"| test_accuracy | {100 * claims['test_accuracy']:.2f}% |" in note
    assert "e+0" not in note and "e-0" not in note


@pytest.mark.slow
def test_retrain_figures_show_every_seed_and_name_the_classes(tmp_path, small_run, synthetic_root):
    _, url, study, _, _ = small_run
    config = export_config(study, study.best_trial, url)
    config["epochs"] = 2
    _, params = checked_params(config)
    results = train_and_test(config, params, synthetic_root, [0, 1], torch.device("cpu"), tmp_path)
    figures = run_figures(config, results)
    for name, fig in figures.items():
        assert not empty_axes(fig), (name, empty_axes(fig))
    curve = figures["learning_curve.png"]
    loss_ax, accuracy_ax = curve.axes
    assert [line.get_label() for line in loss_ax.lines] == [
        f"seed {r.seed}: test {100 * r.test_accuracy:.2f}%" for r in results]
    assert all(len(line.get_xdata()) == 2 for line in loss_ax.lines)  # one point per epoch
    marked = accuracy_ax.collections[0].get_offsets()[:, 1]
    assert list(marked) == pytest.approx([100 * r.test_accuracy for r in results])
    assert set(class_labels("kmnist", 10)[0]) <= tick_texts(figures["confusion_matrix.png"])

    metrics = write_run(tmp_path, config, results, synthetic_root)
    on_disk = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert on_disk["saved_model"]["class_names"] == list(DATASET_CHOICES["kmnist"].class_names())
    assert on_disk == json.loads(json.dumps(metrics))
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "| 3 | つ (tsu) |" in report
    header = (tmp_path / "confusion_matrix.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header.endswith("を (wo)")


@pytest.mark.parametrize("dataset, expected", [
    ("kmnist", KMNIST_ROMAN),
    ("mnist", tuple("0123456789")),
    ("fashion-mnist", ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                       "Sneaker", "Bag", "Ankle boot")),
    ("mnist-merged4", ("0/6", "1/7", "2/3/5/8", "4/9")),
])
def test_without_a_cjk_font_figures_use_plain_names(monkeypatch, dataset, expected):
    monkeypatch.setattr(evidence, "cjk_font", lambda: None)
    matrix = np.eye(len(expected), dtype=int) * 5
    fig = confusion_figure(matrix, "t", dataset)
    assert set(expected) <= tick_texts(fig)
    assert not empty_axes(fig)


def test_with_a_cjk_font_kmnist_figures_show_the_characters():
    if evidence.cjk_font() is None:
        pytest.skip("no CJK font installed (Debian: fonts-noto-cjk, .ci/install-system-packages)")
    fig = confusion_figure(np.eye(10, dtype=int), "t", "kmnist")
    texts = tick_texts(fig)
    assert "お (o)" in texts and "を (wo)" in texts
    label = fig.axes[0].get_xticklabels()[0]
    assert label.get_fontfamily() == [evidence.cjk_font()]


def test_class_names_match_torchvision():
    from torchvision import datasets

    assert DATASET_CHOICES["kmnist"].class_names(characters=False) == tuple(datasets.KMNIST.classes)
    assert DATASET_CHOICES["fashion-mnist"].class_names() == tuple(datasets.FashionMNIST.classes)
    assert DATASET_CHOICES["mnist"].class_names() == tuple(c.split(" - ")[0] for c in datasets.MNIST.classes)
