import math

import optuna
import pytest
import torch

import objectives.training as training
from objectives.data import SearchData, TensorSplit, load_search_data
from objectives.objective import Objective, trial_epochs
from search.study import (
    FINISHED,
    StudyMismatchError,
    enqueue_documented,
    make_pruner,
    open_study,
    run_until,
    study_precision,
)
from spaces import get_space
from storage.urls import open_storage

CPU = torch.device("cpu")


def sqlite_study(tmp_path, space, pruner):
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    return open_study(storage, "t", space, "kmnist", optuna.samplers.TPESampler(seed=0), pruner)


def test_documented_epochs_are_capped_by_the_budget():
    assert trial_epochs(10, 50) == 10
    assert trial_epochs(10, 4) == 4
    assert trial_epochs(10, None) == 10


def test_pruner_prunes_a_hopeless_trial(tmp_path, synthetic_root):
    space = get_space("mlp_regularisation")
    data = load_search_data("kmnist", synthetic_root, 1 / 6, 0, CPU)
    study = sqlite_study(tmp_path, space, optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    good = {"hidden_layers": "128", "dropout": 0.0, "use_weight_decay": False,
            "learning_rate": 1e-3, "batch_size": 32}
    hopeless = {**good, "learning_rate": 1e-5, "batch_size": 256}
    study.enqueue_trial(good)
    study.enqueue_trial(hopeless)
    study.optimize(Objective(space, data, epochs=3, seed=0), n_trials=2)
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED]
    assert len(study.trials[1].intermediate_values) < 3


def test_nan_ends_trials_as_pruned_and_the_study_goes_on(tmp_path, synthetic_root):
    space = get_space("mlp_regularisation")
    clean = load_search_data("kmnist", synthetic_root, 1 / 6, 0, CPU)
    images = clean.train.images.clone()
    images[:5] = math.nan
    data = SearchData(TensorSplit(images, clean.train.labels), clean.val, 10, 0.0, 1.0, "x")
    study = sqlite_study(tmp_path, space, make_pruner("none", 2))
    run_until(study, Objective(space, data, epochs=2, seed=0), target=2)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED] * 2
    assert all("became nan" in t.user_attrs["pruned_reason"] for t in study.trials)


def test_trial_records_its_attributes(tmp_path, synthetic_root):
    space = get_space("mlp_regularisation")
    data = load_search_data("kmnist", synthetic_root, 1 / 6, 0, CPU)
    study = sqlite_study(tmp_path, space, make_pruner("none", 2))
    assert enqueue_documented(study, space) == len(space.experiments) == 20
    assert enqueue_documented(study, space) == 0  # never twice
    run_until(study, Objective(space, data, epochs=2, seed=0), target=1)
    trial = study.get_trials(states=FINISHED)[0]
    assert trial.user_attrs["param_count"] == 535_818
    assert trial.user_attrs["device"] == "cpu"
    assert trial.user_attrs["best_epoch"] in (1, 2)
    assert trial.user_attrs["seconds_per_epoch"] > 0
    assert trial.user_attrs["epochs_capped_from"] == 50
    assert trial.user_attrs["documented_experiment"] == "000/Experiment 1"
    assert trial.user_attrs["claims"]["test_accuracy"] == 0.9254
    assert len(trial.intermediate_values) == 2


def test_study_precision_keeps_what_the_study_was_started_with():
    assert study_precision(None, None) == "auto"  # a new study
    assert study_precision(None, "fp32") == "fp32"
    study = optuna.create_study(study_name="s")
    assert study_precision(study, "bf16") == "bf16"  # not started by kmnist-search yet
    study.set_user_attr("search_settings", {"seed": 0, "precision": "bf16"})
    assert study_precision(study, None) == study_precision(study, "bf16") == "bf16"
    with pytest.raises(StudyMismatchError, match="trains in precision 'bf16', not 'auto'"):
        study_precision(study, "auto")
    study.set_user_attr("search_settings", {"seed": 0})  # started before --precision existed
    assert study_precision(study, None) == "fp32"


def test_objective_trains_in_the_precision_auto_resolves_to(tmp_path, synthetic_root, monkeypatch):
    space = get_space("mlp_regularisation")
    data = load_search_data("kmnist", synthetic_root, 1 / 6, 0, CPU)
    for native, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(training, "cpu_has_native_bf16", lambda native=native: native)
        assert Objective(space, data, epochs=1, seed=0, precision="auto").precision == expected
    assert Objective(space, data, epochs=1, seed=0).precision == "fp32"  # replay's default
