"""The validation-to-test transfer benchmark (benchmarks/val_test_transfer.py): its sampling,
its analysis from run files alone, and its real training loop on synthetic data."""

import json
import shutil
from pathlib import Path

import pytest

from tests.benchmark_scripts import load_benchmark
from tests.conftest import REPO, make_synthetic_root

transfer = load_benchmark("val_test_transfer")
MACHINE = {"cpu_model": "Test CPU", "cpu_family_model_stepping": ["6", "143", "8"], "logical_cores": 2}


def row(index: int, val_best: float, val_last: float, test: float) -> dict:
    return {"index": index, "val_best": val_best, "val_last": val_last, "test": test, "seconds": 10.0,
            "machine": MACHINE}


def test_the_same_seed_samples_the_same_configurations_from_the_space() -> None:
    first = transfer.sampled_configs("cnn_regularisation", 6, seed=3)
    assert first == transfer.sampled_configs("cnn_regularisation", 6, seed=3)
    assert first != transfer.sampled_configs("cnn_regularisation", 6, seed=4)
    assert len({json.dumps(c, sort_keys=True) for c in first}) == 6
    for config in first:  # the space's fixed CNN with its four knobs drawn
        assert {"conv_blocks", "dropout", "learning_rate", "batch_size"} <= set(config)
        assert 1e-4 <= config["learning_rate"] <= 3e-2 and config["batch_size"] in (16, 32, 64, 128, 256)


def test_the_analysis_ranks_and_prices_the_pick_by_validation() -> None:
    # validation ranks 0 > 1 > 2 > 3 > 4 > 5; the test set ranks 1 > 0 > 2 > 3 > 5 > 4
    rows = [row(0, 0.95, 0.94, 0.88), row(1, 0.94, 0.95, 0.90), row(2, 0.90, 0.90, 0.85),
            row(3, 0.85, 0.84, 0.80), row(4, 0.80, 0.80, 0.70), row(5, 0.75, 0.70, 0.72),
            {"index": 6, "skipped": "no model", "machine": MACHINE}]
    result = transfer.analyse_rows(rows)
    assert (result["configurations"], result["skipped"]) == (6, 1)
    assert result["spearman_best_epoch"] == pytest.approx(1 - 6 * (1 + 1 + 1 + 1) / (6 * 35))
    assert result["spearman_last_epoch"] == pytest.approx(1 - 6 * 2 / (6 * 35))
    assert result["picked_by_validation"] == {"index": 0, "val_best": 0.95, "test": 0.88}
    assert result["best_on_test"] == 0.90
    assert result["pick_below_best_points"] == pytest.approx(2.0)
    assert result["top_overlap"] == 4  # top 5 by validation: 0-4; by test: 0, 1, 2, 3, 5
    assert result["val_minus_test_points"]["median"] == pytest.approx(5.0)
    assert result["learned"] == 6 and result["spearman_best_epoch_learned"] == result["spearman_best_epoch"]
    # two configurations stuck at chance tie at the bottom of both rankings: counted apart
    stuck = transfer.analyse_rows([*rows, row(7, 0.11, 0.11, 0.10), row(8, 0.11, 0.11, 0.10)])
    assert stuck["learned"] == 6 and stuck["spearman_best_epoch"] > stuck["spearman_best_epoch_learned"]
    # a constant column has no rank correlation: None, not NaN in the JSON
    flat = transfer.analyse_rows([row(i, 0.5, 0.5, 0.1 * i) for i in range(4)])
    assert flat["spearman_best_epoch"] is None
    assert "| - | - | - (4) |" in transfer.markdown({"runs": {"x": flat}, "machines": []})
    assert "spearman_best_epoch" not in transfer.analyse_rows(rows[:2])  # too few to rank


def test_a_tiny_real_run_resumes_and_is_analysed_from_its_file(tmp_path: Path) -> None:
    root = make_synthetic_root(tmp_path / "root")
    out = tmp_path / "val_test_transfer"
    path = transfer.run("cnn_regularisation", 3, 1, 0, root, out)
    rows = transfer.load_rows(path)
    assert [r["index"] for r in rows] == [0, 1, 2]
    for r in rows:
        assert r["test_images"] == 200 and r["epochs"] == 1 and len(r["val_per_epoch"]) == 1
        assert r["val_best"] == r["val_last"] == r["val_per_epoch"][0]
        assert 0 <= r["test"] <= 1 and r["machine"]["logical_cores"] >= 1
    transfer.run("cnn_regularisation", 4, 1, 0, root, out)  # one more: the first three are kept
    again = transfer.load_rows(path)
    assert again[:3] == rows and [r["index"] for r in again] == [0, 1, 2, 3]
    written = json.loads(transfer.write_analysis(out).read_text())
    assert written["runs"]["cnn_regularisation-1epochs"]["configurations"] == 4
    assert (tmp_path / "val_test_transfer.png").stat().st_size > 10_000


def test_the_committed_tables_rebuild_from_the_committed_run_files(tmp_path: Path) -> None:
    committed = REPO / "benchmarks" / "results"
    shutil.copytree(committed / "val_test_transfer", tmp_path / "val_test_transfer")
    rebuilt = transfer.write_analysis(tmp_path / "val_test_transfer")
    assert json.loads(rebuilt.read_text()) == json.loads((committed / "val_test_transfer.json").read_text())
    assert rebuilt.with_suffix(".md").read_text() == (committed / "val_test_transfer.md").read_text()
