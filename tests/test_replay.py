"""`kmnist-search replay` as a real subprocess."""

import csv

import optuna
import pytest

from spaces.documented import ALL_EXPERIMENTS
from tests.conftest import make_synthetic_root, run_cli

pytestmark = pytest.mark.slow


def read_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_replay_all_on_synthetic_data_writes_one_row_per_experiment(tmp_path):
    root = tmp_path / "data"
    for source in ("kmnist", "mnist"):
        make_synthetic_root(root, source, n_train=300, n_test=100)
    db = tmp_path / "r.db"
    result = run_cli("replay", "--all", "--max-epochs", "1", "--storage", f"sqlite:///{db}",
                     "--data-dir", str(root), "--out", str(tmp_path / "audit"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = read_rows(tmp_path / "audit" / "replay.csv")
    assert sorted((r["report"], r["experiment"]) for r in rows) == sorted(
        (e.report, e.name) for e in ALL_EXPERIMENTS)
    assert all(r["verdict"] in ("reproduced", "not reproduced", "not comparable") for r in rows)
    assert all(r["reproduced"] != "" for r in rows)  # every experiment ran and was measured
    claims = read_rows(tmp_path / "audit" / "claims.csv")
    assert len(claims) == sum(len(e.claims) for e in ALL_EXPERIMENTS)
    counts = [c for c in claims if c["metric"] == "param_count"]
    assert counts and all(c["verdict"] == "reproduced" for c in counts)
    assert "| report | experiment |" in (tmp_path / "audit" / "replay.md").read_text()
    # replays are trials of studies, so the dashboard shows them
    names = optuna.study.get_all_study_names(f"sqlite:///{db}")
    assert "replay-cnn_regularisation-mnist-merged4" in names
    trials = [t for n in names for t in optuna.load_study(study_name=n, storage=f"sqlite:///{db}").trials]
    assert len(trials) == len(ALL_EXPERIMENTS)
    assert all("test_accuracy" in t.user_attrs for t in trials)


def test_replay_on_real_kmnist_marks_missing_mnist_as_not_run(tmp_path, real_kmnist_root):
    result = run_cli("replay", "--all", "--max-epochs", "2", "--storage", f"sqlite:///{tmp_path / 'r.db'}",
                     "--data-dir", str(real_kmnist_root), "--out", str(tmp_path / "audit"), cwd=tmp_path,
                     timeout=900)
    assert result.returncode == 0, result.stderr
    rows = read_rows(tmp_path / "audit" / "replay.csv")
    assert len(rows) == len(ALL_EXPERIMENTS)
    kmnist = [r for r in rows if r["dataset"] == "kmnist"]
    assert kmnist and all(float(r["reproduced"]) > 0.5 for r in kmnist if r["metric"].endswith("accuracy"))
    assert all("capped at 2" in r["reason"] or r["verdict"] != "not comparable" for r in kmnist)
    mnist = [r for r in rows if r["dataset"].startswith("mnist")]
    assert len(mnist) == 2 and all(r["epochs"] == "not run" for r in mnist)
