"""The catalogue of documented experiments and the audit rules."""

import pytest
import torch

from objectives.data import load_raw
from objectives.datasets import DATASET_CHOICES
from objectives.models import build_model, count_parameters, model_config
from search.replay import judge
from spaces import ALL_SPACES
from spaces.documented import ALL_EXPERIMENTS
from tests.conftest import make_synthetic_root


def spaces_holding(experiment):
    return [s for s in ALL_SPACES if experiment in s.experiments]


def test_catalogue_covers_every_report():
    reports = {e.report.split("_")[0] for e in ALL_EXPERIMENTS}
    assert reports == {"000", "001", "002", "003", "004"}
    assert len({e.key for e in ALL_EXPERIMENTS}) == len(ALL_EXPERIMENTS) == 25


@pytest.mark.parametrize("experiment", ALL_EXPERIMENTS, ids=lambda e: e.key)
def test_every_experiment_is_replayed_by_a_space_that_contains_it(experiment):
    holders = spaces_holding(experiment)
    assert holders, f"{experiment.key} is in no space"
    for space in holders:
        assert space.problems({**space.fixed, **experiment.config}) == []


@pytest.mark.parametrize(
    "experiment", [e for e in ALL_EXPERIMENTS if e.claim("param_count")], ids=lambda e: e.key
)
def test_parameter_count_equals_the_report(experiment):
    space = spaces_holding(experiment)[0]
    num_classes = DATASET_CHOICES[experiment.dataset].num_classes
    model = build_model(model_config(space.family, {**space.fixed, **experiment.config}, num_classes))
    assert count_parameters(model) == experiment.claim("param_count")


def test_four_class_grouping_maps_labels_as_documented(tmp_path):
    make_synthetic_root(tmp_path, "mnist", n_train=100, n_test=20)
    _, original = load_raw("mnist", tmp_path, train=True)
    _, grouped = load_raw("mnist-merged4", tmp_path, train=True)
    expected = {0: 0, 6: 0, 1: 1, 7: 1, 2: 2, 3: 2, 5: 2, 8: 2, 4: 3, 9: 3}
    assert all(int(g) == expected[int(o)] for o, g in zip(original, grouped, strict=True))
    assert set(grouped.tolist()) == {0, 1, 2, 3}
    assert DATASET_CHOICES["mnist-merged4"].num_classes == 4


def test_grouped_dataset_trains_a_four_class_model(tmp_path):
    from objectives.data import load_search_data

    make_synthetic_root(tmp_path, "mnist", n_train=200, n_test=20)
    data = load_search_data("mnist-merged4", tmp_path, 0.2, 0, torch.device("cpu"))
    assert data.num_classes == 4 and int(data.train.labels.max()) == 3


@pytest.mark.parametrize(
    ("metric", "claimed", "measured", "limits", "verdict"),
    [
        ("test_accuracy", 0.92, 0.915, [], "reproduced"),
        ("test_accuracy", 0.92, 0.85, [], "not reproduced"),
        ("test_accuracy", 0.92, 0.85, ["capped at 2 of 50 epochs"], "not comparable"),
        ("test_accuracy", 0.88, 0.95, ["capped at 2 of 50 epochs"], "not reproduced"),  # beaten
        ("test_loss", 0.50, 0.55, [], "reproduced"),
        ("test_loss", 0.50, 0.90, [], "not reproduced"),
        ("param_count", 5750, 5750, [], "reproduced"),
        ("param_count", 5750, 5751, [], "not reproduced"),
        ("train_accuracy", 0.99, None, [], "not comparable"),
    ],
)
def test_judge(metric, claimed, measured, limits, verdict):
    assert judge(metric, claimed, measured, limits)[0] == verdict


def test_retrain_report_compares_with_the_best_sound_documented_claim():
    from search.retrain import best_documented_claim

    value, key = best_documented_claim("kmnist")
    assert (value, key) == (0.9254, "000/Experiment 1")  # not 002's doubtful 98.34 %
    assert best_documented_claim("mnist-merged4") == (0.9918, "004/Experiment 2: Modified Classification "
                                                              "with Combined Classes")
