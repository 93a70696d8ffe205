"""Recipes: strong starting points enqueued after the documented experiments."""

import optuna
import pytest
from optuna.trial import FixedTrial, TrialState

from search.evidence import recipe_note
from search.study import enqueue_documented, enqueue_recipes, trial_source
from spaces import ALL_SPACES, get_space
from spaces.base import RECIPE

WITH_RECIPES = [s for s in ALL_SPACES if s.recipes]


def test_some_space_has_a_recipe():
    assert [s.name for s in WITH_RECIPES] == ["cnn_beyond"]


@pytest.mark.parametrize("space", WITH_RECIPES, ids=lambda s: s.name)
def test_every_recipe_lies_inside_its_space_and_round_trips(space):
    names = [r.name for r in space.recipes]
    assert len(set(names)) == len(names)
    for recipe in space.recipes:
        assert space.problems(recipe.config) == []
        assert recipe.source.strip()
        config = {**space.defaults, **recipe.config}
        expected = {**space.fixed, **{p.name: config[p.name] for p in space.params}}
        assert space.suggest(FixedTrial(space.trial_params(recipe.config))) == expected


def study_on_disk(tmp_path, name="s"):
    return optuna.create_study(study_name=name, storage=f"sqlite:///{tmp_path / 'k.db'}",
                               direction="maximize")


def test_recipes_queue_after_the_replays_once_each(tmp_path):
    space = get_space("cnn_beyond")
    study = study_on_disk(tmp_path)
    assert enqueue_documented(study, space) == len(space.experiments)
    assert enqueue_recipes(study, space) == len(space.recipes)
    assert enqueue_recipes(study, space) == 0  # a resumed start adds nothing
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [trial_source(t) for t in waiting] == (
        [e.key for e in space.experiments] + [f"recipe {r.name}" for r in space.recipes])
    recipe = space.recipes[0]
    queued = waiting[len(space.experiments)]
    assert queued.system_attrs["fixed_params"] == space.trial_params(recipe.config)
    assert queued.user_attrs == {"source": "recipe", RECIPE: recipe.name, "recipe_source": recipe.source}

    # the first trial asked for runs the first documented experiment, the third the recipe
    asked = [study.ask() for _ in range(len(space.experiments) + 1)]
    config = {**space.defaults, **recipe.config}
    assert space.suggest(asked[-1]) == {p.name: config[p.name] for p in space.params}
    assert asked[-1].user_attrs[RECIPE] == recipe.name


def test_a_space_without_recipes_enqueues_none(tmp_path):
    assert enqueue_recipes(study_on_disk(tmp_path), get_space("mlp_regularisation")) == 0


@pytest.mark.parametrize("attrs, expected", [
    ({"documented_experiment": "004/Experiment 1"}, "004/Experiment 1"),
    ({RECIPE: "small-resnet"}, "recipe small-resnet"),
    ({}, "sampled"),
    ({RECIPE: ["not", "text"]}, "sampled"),  # a forged attribute reads as sampled
    ({"documented_experiment": 7, RECIPE: "r"}, "recipe r"),
])
def test_trial_source_reads_only_text_attributes(attrs, expected):
    trial = optuna.trial.create_trial(value=0.5, params={}, distributions={}, user_attrs=attrs)
    assert trial_source(trial) == expected


def test_recipe_note_names_the_recipe_and_its_source():
    trial = optuna.trial.create_trial(value=0.5, params={}, distributions={},
                                      user_attrs={RECIPE: "r", "recipe_source": "a hand pick"})
    note = recipe_note(trial)
    assert note.startswith(f"## Trial {trial.number}: recipe r") and "Source: a hand pick" in note
    assert recipe_note(optuna.trial.create_trial(value=0.5, params={}, distributions={})) is None
    forged = optuna.trial.create_trial(value=0.5, params={}, distributions={},
                                       user_attrs={RECIPE: "r", "recipe_source": "x" * 10_000})
    assert len(recipe_note(forged)) < 700
