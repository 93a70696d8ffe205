"""`kmnist-search start` as users run it: a real subprocess on a real SQLite file; where the
subject is the search rather than the command line, the library call the command makes."""

import optuna
import pytest
import torch

from search.study import FINISHED
from spaces import get_space
from tests.conftest import join_in_process, run_cli, run_main, start_in_process

pytestmark = pytest.mark.slow


def load(db, name="mlp_regularisation"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{db}")


def start(tmp_path, root, trials, *extra, space="mlp_regularisation", run=run_cli):
    return run("start", "--space", space, "--trials", str(trials), "--epochs", "1",
               "--storage", f"sqlite:///{tmp_path / 'k.db'}", "--data-dir", str(root), *extra,
               cwd=tmp_path)


def search(tmp_path, root, trials, **request):
    outcome, said = start_in_process(f"sqlite:///{tmp_path / 'k.db'}", root, trials, 1, **request)
    assert outcome.finished == trials
    return said


def test_replays_first_then_tops_up_to_the_total_then_does_nothing(tmp_path, synthetic_root):
    db, space = tmp_path / "k.db", "cnn_regularisation"
    first = start(tmp_path, synthetic_root, 3, space=space)
    assert first.returncode == 0, first.stderr
    trials = load(db, space).get_trials()
    assert len(trials) == 3
    sources = [t.user_attrs.get("documented_experiment") for t in trials]
    assert sources[0].startswith("004/Experiment 1") and sources[1].startswith("004/Experiment 2")
    assert sources[2] is None  # then the sampler takes over
    assert "trial   2" in first.stdout and "rank" in first.stdout

    # resuming is the study's behaviour, not the process's: the same `main`, in this process
    second = start(tmp_path, synthetic_root, 5, space=space, run=run_main)
    assert second.returncode == 0, second.stderr
    study = load(db, space)
    assert len(study.get_trials(states=FINISHED)) == 5
    documented = [t for t in study.trials if "documented_experiment" in t.user_attrs]
    assert len(documented) == 2  # re-running never enqueues them twice

    third = start(tmp_path, synthetic_root, 5, space=space, run=run_main)
    assert third.returncode == 0, third.stderr
    assert "nothing to do" in third.stdout
    assert len(load(db, space).trials) == 5


def test_an_interrupted_search_finishes_the_remainder(tmp_path, synthetic_root):
    # a documented trial left WAITING (as after an interruption) runs on the next start
    search(tmp_path, synthetic_root, 2)
    study = load(tmp_path / "k.db")
    assert [t.state.name for t in study.trials[:3]] == ["COMPLETE", "COMPLETE", "WAITING"]
    search(tmp_path, synthetic_root, 3)
    study = load(tmp_path / "k.db")
    assert len(study.get_trials(states=FINISHED)) == 3
    assert study.trials[2].user_attrs["documented_experiment"] == "000/Experiment 3"


def test_no_replay_samples_from_the_first_trial(tmp_path, synthetic_root):
    search(tmp_path, synthetic_root, 2, replay=False, pruner="hyperband")
    assert all("documented_experiment" not in t.user_attrs for t in load(tmp_path / "k.db").trials)


def test_spaces_and_status_commands(tmp_path, synthetic_root):
    listing = run_cli("spaces", cwd=tmp_path)
    assert listing.returncode == 0
    assert "mlp_regularisation" in listing.stdout and "000/Experiment 3" in listing.stdout
    search(tmp_path, synthetic_root, 1)
    status = run_cli("status", "--storage", f"sqlite:///{tmp_path / 'k.db'}", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert "study mlp_regularisation: 1 complete" in status.stdout
    queued = len(get_space("mlp_regularisation").experiments) - 1
    assert f"{queued} documented experiments still queued (run start with a higher --trials to replay " \
        "them)" in status.stdout


def test_precision_is_recorded_on_the_study_and_workers_follow_it(tmp_path, synthetic_root):
    said = search(tmp_path, synthetic_root, 1, replay=False, precision="bf16")
    assert "on cpu in bf16" in said
    assert load(tmp_path / "k.db").user_attrs["search_settings"]["precision"] == "bf16"
    # neither a resumed start nor a joining worker names it: both keep the study's
    search(tmp_path, synthetic_root, 2)
    joined, _ = join_in_process(f"sqlite:///{tmp_path / 'k.db'}", "mlp_regularisation", synthetic_root,
                                trials=3)
    assert joined.finished == 3
    study = load(tmp_path / "k.db")
    assert [t.user_attrs["precision"] for t in study.get_trials(states=FINISHED)] == ["bf16"] * 3
    assert study.user_attrs["search_settings"]["precision"] == "bf16"


def test_a_new_study_asks_for_auto_and_its_trials_say_what_it_resolved_to(tmp_path, synthetic_root):
    from objectives.training import resolve_precision

    search(tmp_path, synthetic_root, 1, replay=False)
    study = load(tmp_path / "k.db")
    assert study.user_attrs["search_settings"]["precision"] == "auto"
    expected = resolve_precision("auto", torch.device("cpu"))
    assert study.trials[0].user_attrs["precision"] == expected
