"""Bad input: one clear line on stderr, a non-zero exit, no traceback, storage untouched."""

import hashlib

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def existing_db(tmp_path_factory, synthetic_root):
    folder = tmp_path_factory.mktemp("existing")
    result = run_cli("start", "--space", "mlp_regularisation", "--trials", "1", "--epochs", "1",
                     "--storage", f"sqlite:///{folder / 'k.db'}", "--data-dir", str(synthetic_root),
                     cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder / "k.db"


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_one_line_error(result, *fragments):
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--space", "nope"], ["unknown space 'nope'", "mlp_regularisation"]),
        (["--space", "mlp_regularisation", "--trials", "0"], ["--trials", "at least 1"]),
        (["--space", "mlp_regularisation", "--trials", "-3"], ["--trials", "at least 1"]),
        (["--space", "mlp_regularisation", "--trials", "many"], ["--trials", "not a whole number"]),
        (["--space", "mlp_regularisation", "--val-fraction", "1.5"], ["--val-fraction", "between 0 and 1"]),
        (["--space", "mlp_regularisation", "--storage", "redis://x"], ["not supported", "sqlite:///"]),
        (["--space", "mlp_regularisation", "--storage", "sqlite:///no/such/dir/k.db"],
         ["does not exist", "create it"]),
        (["--space", "mlp_regularisation", "--dataset", "kmnist", "--study", "mlp_regularisation",
          "--pruner", "random"], ["--pruner", "invalid choice"]),
    ],
)
def test_bad_start_options(tmp_path, existing_db, args, fragments):
    before = digest(existing_db)
    result = run_cli("start", "--storage", f"sqlite:///{existing_db}", *args, cwd=tmp_path) \
        if "--storage" not in args else run_cli("start", *args, cwd=tmp_path)
    check_one_line_error(result, *fragments)
    assert digest(existing_db) == before


def test_storage_file_that_is_not_a_database(tmp_path, synthetic_root):
    notes = tmp_path / "notes.db"
    notes.write_text("my precious notes\n")
    result = run_cli("start", "--space", "mlp_regularisation", "--storage", f"sqlite:///{notes}",
                     "--data-dir", str(synthetic_root), cwd=tmp_path)
    check_one_line_error(result, "not a SQLite database")
    assert notes.read_text() == "my precious notes\n"


def test_missing_data_offline_names_the_files_and_the_folder(tmp_path, existing_db):
    before = digest(existing_db)
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("start", "--space", "mlp_regularisation", "--study", "fresh", "--trials", "2",
                     "--storage", f"sqlite:///{existing_db}", "--data-dir", str(empty), cwd=tmp_path)
    check_one_line_error(result, "download failed", "train-images-idx3-ubyte.gz",
                         str(empty / "KMNIST" / "raw"))
    assert digest(existing_db) == before  # no empty study was created


def test_study_created_for_another_dataset(tmp_path, existing_db, synthetic_root):
    before = digest(existing_db)
    result = run_cli("start", "--space", "mlp_regularisation", "--trials", "3", "--dataset", "mnist",
                     "--storage", f"sqlite:///{existing_db}", "--data-dir", str(synthetic_root),
                     cwd=tmp_path)
    check_one_line_error(result, "created with dataset 'kmnist'", "--study")
    assert digest(existing_db) == before
