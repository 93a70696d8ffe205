"""mlp_beyond and cnn_beyond: define-by-run parameters, documented experiments inside, CLI runs."""

import json

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from objectives.models import build_model, count_parameters, model_config
from spaces import ALL_SPACES, get_space
from spaces.base import ConvStackParam, parse_pool, pool_label
from spaces.documented import ALL_EXPERIMENTS
from tests.conftest import run_cli, run_main

MLP_BEYOND, CNN_BEYOND = get_space("mlp_beyond"), get_space("cnn_beyond")


def family_of(experiment) -> str:
    return "cnn" if "conv_blocks" in experiment.config else "mlp"


@pytest.mark.parametrize("experiment", ALL_EXPERIMENTS, ids=lambda e: e.key)
def test_every_documented_experiment_of_the_family_is_replayed_by_its_beyond_space(experiment):
    space = CNN_BEYOND if family_of(experiment) == "cnn" else MLP_BEYOND
    assert experiment in space.experiments
    assert space.problems(experiment.config) == []


def test_replayed_documented_configs_build_the_documented_models():
    """Filled in with the reports' defaults, a replay trains exactly the documented network."""
    for space in (MLP_BEYOND, CNN_BEYOND):
        study = optuna.create_study()
        for experiment in space.experiments:
            study.enqueue_trial(space.trial_params(experiment.config))
            params = space.suggest(study.ask())
            documented = build_model(model_config(space.family, {**space.fixed, **experiment.config}, 10))
            replayed = build_model(model_config(space.family, params, 10))
            assert str(replayed) == str(documented), experiment.key
            assert params["optimizer"] == "adam" and params["lr_schedule"] == "constant"
            assert params["max_shift"] == 0 and params["max_rotation"] == 0 and not params["batch_norm"]
    assert count_parameters(build_model(model_config("cnn", CNN_BEYOND.suggest(
        optuna.trial.FixedTrial(CNN_BEYOND.trial_params(ALL_EXPERIMENTS[-2].config))), 10))) == 5750


def test_beyond_spaces_search_the_knobs_they_document():
    mlp = {p.name for p in MLP_BEYOND.params}
    cnn = {p.name for p in CNN_BEYOND.params}
    shared = {"hidden_layers", "activation", "batch_norm", "label_smoothing", "optimizer", "lr_schedule",
              "max_shift", "max_rotation", "dropout", "weight_decay", "learning_rate", "batch_size"}
    assert shared <= mlp
    assert (shared - {"hidden_layers"}) | {"conv_blocks", "convs_per_block", "dropout_placement",
                                           "dense_layers"} <= cnn
    choices = {p.name: getattr(p, "choices", None) for p in CNN_BEYOND.params}
    assert set(choices["optimizer"]) == {"adam", "adamw", "sgd"}
    assert set(choices["lr_schedule"]) == {"constant", "cosine", "onecycle"}
    assert set(choices["activation"]) == {"relu", "gelu", "silu"}


def test_conv_stack_is_define_by_run():
    space = CNN_BEYOND
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    depths = set()
    for _ in range(40):
        trial = study.ask()
        params = space.suggest(trial)
        depth = trial.params["n_conv_blocks"]
        depths.add(depth)
        assert len(params["conv_blocks"]) == depth
        for i in range(1, 5):
            assert (f"channels_{i}" in trial.params) == (i <= depth)
            assert (f"kernel_{i}" in trial.params) == (i <= depth)
            assert (f"pool_{i}" in trial.params) == (i <= depth)
        for block in params["conv_blocks"]:
            assert block["padding"] == block["kernel_size"] // 2  # "same" convolutions
        study.tell(trial, 0.0)
    assert depths == {1, 2, 3, 4}


def test_mlp_widths_are_define_by_run():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(30):
        trial = study.ask()
        widths = MLP_BEYOND.suggest(trial)["hidden_layers"]
        assert [f"width_{i}" in trial.params for i in range(1, 5)] == [i <= len(widths) for i in range(1, 5)]
        study.tell(trial, 0.0)


@pytest.mark.parametrize("label", ["max2s2", "avg2s2", "max7s1", "max5s1", "avg7s2", "none"])
def test_pool_labels_round_trip(label):
    assert pool_label(parse_pool(label)) == label


def test_unknown_pool_label_is_an_error_not_no_pooling():
    with pytest.raises(ValueError, match="unknown pool label 'max2'"):
        parse_pool("max2")


def test_conv_stack_rejects_blocks_outside_it():
    param = ConvStackParam("conv_blocks", 1, 2, (8, 16), (3,), ("max2s2",))
    good = {"channels": 8, "kernel_size": 3, "padding": 1, "pool": "max", "pool_kernel": 2, "pool_stride": 2}
    assert param.contains((good,))
    assert not param.contains(({**good, "channels": 12},))
    assert not param.contains(({**good, "padding": 0},))
    assert not param.contains(({**good, "pool_kernel": 3},))
    assert not param.contains((good, good, good))


def test_space_budgets_and_pruner_warmup():
    assert MLP_BEYOND.epochs > MLP_BEYOND.pruner_warmup_epochs >= 2
    assert CNN_BEYOND.epochs > CNN_BEYOND.pruner_warmup_epochs >= 2
    assert CNN_BEYOND.pruner_warmup(CNN_BEYOND.epochs) == CNN_BEYOND.pruner_warmup_epochs
    assert CNN_BEYOND.pruner_warmup(3) == 2
    for space in ALL_SPACES:
        if space.max_forward_mflops is not None:
            assert space.max_forward_mflops > 0


def test_spaces_command_lists_the_beyond_spaces(tmp_path):
    listed = run_cli("spaces", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    for name in ("mlp_beyond", "cnn_beyond"):
        assert f"{name} (" in listed.stdout
    assert "default budget: 15 epochs" in listed.stdout and "004/Experiment 1" in listed.stdout
    assert "then recipe vgg-onecycle: a hand pick" in listed.stdout


@pytest.mark.slow
def test_cnn_beyond_start_export_retrain_on_synthetic_data(tmp_path, synthetic_root):
    storage = f"sqlite:///{tmp_path / 'k.db'}"
    # each command through its `main` in this process: their own processes are tested elsewhere
    started = run_main("start", "--space", "cnn_beyond", "--trials", "6", "--epochs", "1", "--threads", "1",
                       "--storage", storage, "--data-dir", str(synthetic_root), cwd=tmp_path)
    assert started.returncode == 0, started.stderr
    study = optuna.load_study(study_name="cnn_beyond", storage=storage)
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 6
    assert {t.user_attrs.get("documented_experiment") for t in study.trials[:2]} == {
        e.key for e in CNN_BEYOND.experiments}
    assert study.trials[2].user_attrs["recipe"] == "vgg-onecycle"  # then the recipe, then the sampler
    assert all("recipe" not in t.user_attrs for t in study.trials[3:])
    assert all("forward_mflops" in t.user_attrs for t in finished)
    assert study.user_attrs["search_settings"]["epochs"] == 1

    exported = run_main("export", "--study", "cnn_beyond", "--storage", storage, "-o", "best.yaml",
                        "-f", "yaml", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    retrained = run_main("retrain", "best.yaml", "--seeds", "1", "--out", "run", "--threads", "1",
                         "--data-dir", str(synthetic_root), cwd=tmp_path)
    assert retrained.returncode == 0, retrained.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 0 <= metrics["test_accuracy"]["mean"] <= 1 and metrics["seeds"] == [0]

    config = yaml.safe_load((tmp_path / "best.yaml").read_text())
    config["params"]["optimizer"] = "lion"
    (tmp_path / "lion.yaml").write_text(yaml.safe_dump(config))
    refused = run_main("retrain", "lion.yaml", "-o", "run-lion", cwd=tmp_path)
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode != 0 and len(lines) == 1 and "Traceback" not in refused.stderr
    assert "optimizer='lion' outside {adam, adamw, sgd}" in lines[0]


def test_deadline_lets_the_running_trial_finish_and_starts_no_other(tmp_path):
    import time

    from search.study import run_until

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'k.db'}", direction="maximize")

    def slow(trial):
        time.sleep(0.3)
        return trial.suggest_float("x", 0, 1)

    assert run_until(study, slow, target=10, deadline=time.time() + 0.1)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]


@pytest.mark.slow
def test_timeout_stops_the_search_and_the_same_command_goes_on(tmp_path, synthetic_root):
    storage = f"sqlite:///{tmp_path / 'k.db'}"
    command = ("start", "--space", "mlp_beyond", "--trials", "4", "--epochs", "2", "--no-replay",
               "--storage", storage, "--data-dir", str(synthetic_root))
    first = run_cli(*command, "--timeout", "0.001", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "time limit of 0.001 minutes reached" in first.stdout and "run the same command" in first.stdout
    study = optuna.load_study(study_name="mlp_beyond", storage=storage)
    assert len([t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]) < 4
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    second = run_main(*command, cwd=tmp_path)  # the same command, through its `main` in this process
    assert second.returncode == 0, second.stderr
    study = optuna.load_study(study_name="mlp_beyond", storage=storage)
    assert len([t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]) == 4


def test_export_of_an_annealed_schedule_retrains_the_whole_schedule():
    from search.export import retrain_epochs

    trial = optuna.trial.create_trial(
        params={}, distributions={}, value=0.9, intermediate_values={1: 0.5, 2: 0.9, 3: 0.8},
        user_attrs={"best_epoch": 2, "epochs_run": 3})
    assert retrain_epochs(trial, {"lr_schedule": "constant"}) == 2
    assert retrain_epochs(trial, {"lr_schedule": "onecycle"}) == 3
    assert retrain_epochs(trial, {}) == 2
