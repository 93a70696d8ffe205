"""search -> export -> retrain -> evaluate as real subprocesses on tiny synthetic data; the other
cases of a command through its `main` in the test's process."""

import json
import signal
import subprocess
import time

import optuna
import pytest
import yaml

from storage.configs import ConfigError, read_config, write_config
from tests.conftest import CLI, default_sigint, offline_env, run_cli, run_main, searched_folder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def searched(tmp_path_factory, synthetic_root):
    return searched_folder(tmp_path_factory.mktemp("searched"), synthetic_root, 3, 3)


def export(folder, *args, run=run_main):
    """`export` of the searched study; through its `main` in this process unless `run` says."""
    return run("export", "--study", "mlp_regularisation", "--storage", f"sqlite:///{folder / 'k.db'}",
               *args, cwd=folder)


def test_search_export_retrain_evaluate(searched, synthetic_root):
    exported = export(searched, "-o", "best.json", "--force", run=run_cli)
    assert exported.returncode == 0, exported.stderr
    config = json.loads((searched / "best.json").read_text())
    study = optuna.load_study(study_name="mlp_regularisation", storage=f"sqlite:///{searched / 'k.db'}")
    assert config["provenance"]["trial"] == study.best_trial.number
    assert config["provenance"]["validation_accuracy"] == study.best_value
    assert config["epochs"] == study.best_trial.user_attrs["best_epoch"]
    assert config["provenance"]["split_hash"] and config["provenance"]["versions"]["torch"]

    retrained = run_cli("retrain", "best.json", "--seeds", "2", "--out", "runs/best",
                        "--data-dir", str(synthetic_root), "--storage", f"sqlite:///{searched / 'k.db'}",
                        cwd=searched)
    assert retrained.returncode == 0, retrained.stderr
    run = searched / "runs" / "best"
    for name in ("model.safetensors", "metrics.json", "report.md", "confusion_matrix.png",
                 "learning_curve.png"):
        assert (run / name).stat().st_size > 0, name
    metrics = json.loads((run / "metrics.json").read_text())
    per_seed = metrics["test_accuracy"]["per_seed"]
    assert set(per_seed) == {"0", "1"}
    assert metrics["test_accuracy"]["mean"] == pytest.approx(sum(per_seed.values()) / 2)
    assert metrics["test_accuracy"]["std"] >= 0
    assert metrics["test_accuracy"]["mean"] > 0.5  # synthetic classes are easy
    assert len(metrics["saved_model"]["confusion_matrix"]) == 10
    assert set(metrics["saved_model"]["per_class"]["3"]) == {"precision", "recall", "f1-score", "support"}
    report = (run / "report.md").read_text()
    assert "± " in report and "validation accuracy" in report and "documented" in report

    evaluated = run_cli("evaluate", "runs/best", "--data-dir", str(synthetic_root), cwd=searched)
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"{100 * per_seed['0']:.2f}%" in evaluated.stdout and "matches" in evaluated.stdout

    # linked back to the study, so the dashboard shows where the winner went
    study = optuna.load_study(study_name="mlp_regularisation", storage=f"sqlite:///{searched / 'k.db'}")
    link = study.user_attrs[f"retrained_trial_{config['provenance']['trial']}"]
    assert link["run"].endswith("runs/best") and link["seeds"] == [0, 1]


def test_top_k_and_yaml(searched):
    result = export(searched, "-o", "top.yaml", "--top", "2", "--force")
    assert result.returncode == 0, result.stderr
    first, second = (yaml.safe_load((searched / f"top-{i}.yaml").read_text()) for i in (1, 2))
    assert first["provenance"]["validation_accuracy"] >= second["provenance"]["validation_accuracy"]


def test_exported_config_round_trips(tmp_path, searched):
    assert export(searched, "-o", "rt.json", "--force").returncode == 0
    config = read_config(searched / "rt.json")
    for fmt, name in (("json", "again.json"), ("yaml", "again.yaml")):
        write_config(config, tmp_path / name, fmt)
        assert read_config(tmp_path / name) == config
    with pytest.raises(ConfigError, match="exists"):
        write_config(config, tmp_path / "again.json", "json")


def one_line_error(result, fragment):
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert fragment in lines[0], lines[0]


def test_bad_export_and_retrain_inputs(tmp_path, searched):
    assert export(searched, "-o", "good.json", "--force").returncode == 0
    good = json.loads((searched / "good.json").read_text())
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "broken.yaml").write_text("params: [unclosed")
    (tmp_path / "extra.json").write_text(json.dumps({**good, "colour": "blue"}))
    (tmp_path / "space.json").write_text(json.dumps({**good, "space": "nope"}))
    (tmp_path / "outside.json").write_text(json.dumps({**good, "params": {**good["params"], "dropout": 7}}))
    for config, fragment in (("missing.json", "not found"), ("broken.json", "not valid JSON"),
                             ("broken.yaml", "not valid YAML"), ("extra.json", "unknown keys colour"),
                             ("space.json", "unknown space 'nope'"), ("outside.json", "dropout=7")):
        # the first through a real process, the others through the same `main` in this one
        run = run_cli if config == "missing.json" else run_main
        one_line_error(run("retrain", str(tmp_path / config), cwd=tmp_path), fragment)

    (tmp_path / "keep.json").write_text("precious")
    one_line_error(export(searched, "-o", str(tmp_path / "keep.json"), run=run_cli), "pass --force")
    assert (tmp_path / "keep.json").read_text() == "precious"
    one_line_error(export(searched, "-o", str(tmp_path / "no" / "dir" / "x.json")), "does not exist")
    one_line_error(export(searched, "--trial", "999", "-o", str(tmp_path / "t.json")), "no trial 999")

    empty_db = tmp_path / "empty.db"
    run = run_main("start", "--space", "mlp_regularisation", "--trials", "1", "--storage",
                   f"sqlite:///{empty_db}", "--data-dir", str(tmp_path / "nodata"), cwd=tmp_path)
    assert run.returncode != 0  # no data: no study is created
    optuna.create_study(study_name="mlp_regularisation", storage=f"sqlite:///{empty_db}")
    one_line_error(run_main("export", "--study", "mlp_regularisation", "--storage", f"sqlite:///{empty_db}",
                            cwd=tmp_path), "no completed trial")

    (tmp_path / "runs" / "done").mkdir(parents=True)
    (tmp_path / "runs" / "done" / "metrics.json").write_text("{}")
    one_line_error(run_main("retrain", str(searched / "good.json"), "-o", str(tmp_path / "runs" / "done"),
                            cwd=tmp_path), "already holds a retrained run")
    assert (tmp_path / "runs" / "done" / "metrics.json").read_text() == "{}"


def test_ctrl_c_stops_retrain_once_and_cleanly(searched, synthetic_root):
    assert export(searched, "-o", "ctrlc.json", "--force").returncode == 0
    process = subprocess.Popen([str(CLI), "retrain", "ctrlc.json", "--seeds", "50", "-o", "runs/ctrlc",
                                "--data-dir", str(synthetic_root)], cwd=searched, env=offline_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=default_sigint)
    deadline = time.time() + 60
    while not (searched / "runs" / "ctrlc" / "models" / "seed-0.safetensors").exists():
        assert time.time() < deadline and process.poll() is None, process.communicate()
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert stderr.strip().splitlines() == ["kmnist-search retrain: interrupted"]
    assert stdout.count("retraining") == 1  # the command is not started a second time
    assert not (searched / "runs" / "ctrlc" / "metrics.json").exists()
