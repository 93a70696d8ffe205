"""The re-evaluation of the top trials: stratified folds, a pick by the mean, recorded where
`status`, `export` and the dashboard read it."""

import json

import numpy as np
import optuna
import pytest

from search.reevaluate import Reevaluation, fold_splits, pick_by_mean, stored_result
from search.study import PICK_ATTR, stored_pick
from storage.optuna_private import get_note_from_system_attrs
from tests.conftest import run_cli, run_main, searched_folder


def result(trial, validation, folds):
    return Reevaluation(trial, validation, tuple(folds), epochs=3, seconds=1.0)


def test_the_pick_is_the_best_mean_not_the_best_single_split():
    lucky = result(0, 0.99, [0.90, 0.91, 0.89])
    steady = result(1, 0.95, [0.94, 0.93, 0.95])
    assert pick_by_mean([lucky, steady]) is steady
    tie = result(2, 0.96, [0.94, 0.93, 0.95])
    assert pick_by_mean([steady, tie]) is tie  # equal means: the better single split


def test_folds_partition_the_images_and_keep_class_shares():
    labels = np.repeat(np.arange(10), 30)
    splits = fold_splits(labels, 3, seed=0)
    held_out = np.concatenate([test for _, test in splits])
    assert sorted(held_out) == list(range(len(labels)))
    for train, test in splits:
        assert not set(train) & set(test)
        assert np.bincount(labels[test], minlength=10).tolist() == [10] * 10


def test_stored_results_are_read_back_only_when_well_formed(tmp_path):
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 'k.db'}")
    good = {"trial": 3, "validation_accuracy": 0.9, "fold_accuracies": [0.8, 0.85], "epochs": 4,
            "seconds": 2.0, "mean": 0.825, "std": 0.03}
    study.set_user_attr("reevaluation:3", good)
    assert stored_result(study, 3) == Reevaluation(3, 0.9, (0.8, 0.85), 4, 2.0)
    for forged in ({**good, "trial": 4}, {**good, "fold_accuracies": [7.0]}, {**good, "fold_accuracies": []},
                   {**good, "epochs": 10**9}, "not a mapping"):
        study.set_user_attr("reevaluation:3", forged)
        assert stored_result(study, 3) is None
    assert stored_pick(study) is None
    study.set_user_attr(PICK_ATTR, {"trial": 3, "mean": 0.8, "std": 0.01, "folds": 3, "top": 5,
                                    "seconds": 9.0})
    assert stored_pick(study)["trial"] == 3


@pytest.mark.slow
def test_reevaluate_records_the_pick_and_export_and_status_use_it(tmp_path, synthetic_root):
    folder = searched_folder(tmp_path, synthetic_root, 3, 2)
    url = f"sqlite:///{folder / 'k.db'}"
    result = run_cli("reevaluate", "--study", "mlp_regularisation", "--storage", url, "--top", "2",
                     "--folds", "2", "--data-dir", str(synthetic_root), "--threads", "1", cwd=folder)
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="mlp_regularisation", storage=url)
    pick = study.user_attrs[PICK_ATTR]
    stored = {int(key.split(":")[1]): value for key, value in study.user_attrs.items()
              if key.startswith("reevaluation:")}
    assert len(stored) == 2 and all(len(r["fold_accuracies"]) == 2 for r in stored.values())
    assert pick["trial"] == max(stored, key=lambda n: stored[n]["mean"])
    assert pick["folds"] == 2 and pick["top"] == 2 and pick["seconds"] > 0
    notes = study._storage.get_study_system_attrs(study._study_id)
    for number in stored:
        trial = next(t for t in study.trials if t.number == number)
        assert "## Re-evaluated" in get_note_from_system_attrs(notes, trial._trial_id)["body"]
    assert f"re-evaluated pick: trial {pick['trial']}" in result.stdout

    # the other commands through their `main` in this process: their own processes are tested elsewhere
    status = run_main("status", "--storage", url, cwd=folder)
    assert f"re-evaluated pick: trial {pick['trial']}" in status.stdout
    exported = run_main("export", "--study", "mlp_regularisation", "--storage", url, "-o", "best.json",
                        cwd=folder)
    assert exported.returncode == 0, exported.stderr
    assert json.loads((folder / "best.json").read_text())["provenance"]["trial"] == pick["trial"]

    again = run_main("reevaluate", "--study", "mlp_regularisation", "--storage", url, "--top", "2",
                     "--folds", "2", "--data-dir", str(synthetic_root), cwd=folder)
    assert again.returncode == 0, again.stderr
    assert "over folds (validation split" not in again.stdout  # stored results reused, nothing retrained
    assert optuna.load_study(study_name="mlp_regularisation", storage=url).user_attrs[PICK_ATTR] == pick

    study.set_user_attr(PICK_ATTR, {"trial": "../x", "mean": 2})  # a forged pick is ignored
    assert stored_pick(study) is None
    exported = run_main("export", "--study", "mlp_regularisation", "--storage", url, "-o", "best2.json",
                        cwd=folder)
    assert json.loads((folder / "best2.json").read_text())["provenance"]["trial"] == study.best_trial.number
