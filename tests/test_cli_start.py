"""`kmnist-search start` as users run it: a real subprocess on a real SQLite file."""

import optuna
import pytest

from search.study import FINISHED
from tests.conftest import run_cli

pytestmark = pytest.mark.slow


def load(db):
    return optuna.load_study(study_name="mlp_regularisation", storage=f"sqlite:///{db}")


def start(tmp_path, root, trials, *extra):
    return run_cli("start", "--space", "mlp_regularisation", "--trials", str(trials), "--epochs", "2",
                   "--storage", f"sqlite:///{tmp_path / 'k.db'}", "--data-dir", str(root), *extra,
                   cwd=tmp_path)


def test_replays_first_then_tops_up_to_the_total_then_does_nothing(tmp_path, synthetic_root):
    db = tmp_path / "k.db"
    first = start(tmp_path, synthetic_root, 4)
    assert first.returncode == 0, first.stderr
    trials = load(db).get_trials()
    assert len(trials) == 4
    sources = [t.user_attrs.get("documented_experiment") for t in trials]
    assert sources[:3] == ["000/Experiment 1", "000/Experiment 2", "000/Experiment 3"]
    assert sources[3] is None
    assert "trial   3" in first.stdout and "rank" in first.stdout

    second = start(tmp_path, synthetic_root, 6)
    assert second.returncode == 0, second.stderr
    study = load(db)
    assert len(study.get_trials(states=FINISHED)) == 6
    documented = [t for t in study.trials if "documented_experiment" in t.user_attrs]
    assert len(documented) == 3  # re-running never enqueues them twice

    third = start(tmp_path, synthetic_root, 6)
    assert third.returncode == 0, third.stderr
    assert "nothing to do" in third.stdout
    assert len(load(db).trials) == 6


def test_an_interrupted_search_finishes_the_remainder(tmp_path, synthetic_root):
    # a documented trial left WAITING (as after an interruption) runs on the next start
    first = start(tmp_path, synthetic_root, 2)
    assert first.returncode == 0, first.stderr
    study = load(tmp_path / "k.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "WAITING"]
    again = start(tmp_path, synthetic_root, 3)
    assert again.returncode == 0, again.stderr
    study = load(tmp_path / "k.db")
    assert len(study.get_trials(states=FINISHED)) == 3
    assert study.trials[2].user_attrs["documented_experiment"] == "000/Experiment 3"


def test_no_replay_samples_from_the_first_trial(tmp_path, synthetic_root):
    result = start(tmp_path, synthetic_root, 2, "--no-replay", "--pruner", "hyperband")
    assert result.returncode == 0, result.stderr
    assert all("documented_experiment" not in t.user_attrs for t in load(tmp_path / "k.db").trials)


def test_spaces_and_status_commands(tmp_path, synthetic_root):
    listing = run_cli("spaces", cwd=tmp_path)
    assert listing.returncode == 0
    assert "mlp_regularisation" in listing.stdout and "000/Experiment 3" in listing.stdout
    assert start(tmp_path, synthetic_root, 1).returncode == 0
    status = run_cli("status", "--storage", f"sqlite:///{tmp_path / 'k.db'}", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert "study mlp_regularisation: 1 complete" in status.stdout
