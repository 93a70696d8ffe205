import optuna
import pytest

from spaces import ALL_SPACES, get_space
from spaces.base import OptionalLogFloatParam, UnknownSpaceError


def test_unknown_space_lists_the_known_ones():
    with pytest.raises(UnknownSpaceError, match="mlp_regularisation"):
        get_space("nope")


@pytest.mark.parametrize("space", ALL_SPACES, ids=lambda s: s.name)
def test_every_documented_experiment_lies_inside_its_space(space):
    for experiment in space.experiments:
        assert space.problems(experiment.config) == [], experiment.key


@pytest.mark.parametrize("space", ALL_SPACES, ids=lambda s: s.name)
def test_enqueued_trial_params_give_back_the_documented_config(space):
    study = optuna.create_study()
    for experiment in space.experiments:
        study.enqueue_trial(space.trial_params(experiment.config))
        trial = study.ask()
        suggested = space.suggest(trial)
        for name, value in experiment.config.items():
            assert suggested[name] == value, (experiment.key, name)
        study.tell(trial, 0.0)


def test_mlp_regularisation_covers_documented_values():
    space = get_space("mlp_regularisation")
    assert {e.key for e in space.experiments} >= {"000/Experiment 1", "000/Experiment 2", "000/Experiment 3"}
    params = {p.name: p for p in space.params}
    for batch in (32, 64, 128, 256):
        assert params["batch_size"].contains(batch)
    for decay in (0.0, 1e-5, 1e-4, 5e-4, 1e-3):
        assert params["weight_decay"].contains(decay)
    assert not params["weight_decay"].contains(0.5)


def test_weight_decay_none_is_a_switch_not_a_log_zero():
    param = OptionalLogFloatParam("weight_decay", 1e-6, 1e-2)
    assert param.trial_params(0.0) == {"use_weight_decay": False}
    assert param.trial_params(1e-5) == {"use_weight_decay": True, "weight_decay": 1e-5}
