"""Bad input: one clear line on stderr, a non-zero exit, no traceback, storage untouched."""

import gzip
import hashlib

import optuna
import pytest
import torch
from optuna.trial import TrialState

from objectives.budget import INFEASIBLE_STREAK
from tests.conftest import make_synthetic_root, run_cli, run_main, searched_folder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def existing_db(tmp_path_factory, synthetic_root):
    return searched_folder(tmp_path_factory.mktemp("existing"), synthetic_root, 1, 1) / "k.db"


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_one_line_error(result, *fragments):
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


DB = "{db}"  # replaced by the existing study's storage URL
START = ["start", "--storage", DB, "--space", "mlp_regularisation"]
BAD_INPUTS = [
    (["start", "--storage", DB, "--space", "nope"], ["unknown space 'nope'", "mlp_regularisation"]),
    ([*START, "--trials", "0"], ["--trials", "at least 1"]),
    ([*START, "--trials", "-3"], ["--trials", "at least 1"]),
    ([*START, "--trials", "many"],
     ["--trials", "not a whole number"]),
    ([*START, "--epochs", "0"], ["--epochs", "at least 1"]),
    ([*START, "--jobs", "0"], ["--jobs", "at least 1"]),
    ([*START, "--timeout", "0"], ["--timeout", "positive number"]),
    ([*START, "--timeout", "soon"], ["--timeout", "not a number"]),
    ([*START, "--timeout", "nan"], ["--timeout", "positive number"]),
    ([*START, "--val-fraction", "1.5"],
     ["--val-fraction", "between 0 and 1"]),
    ([*START, "--device", "tpu"],
     ["--device", "not auto, cpu or cuda"]),
    ([*START, "--pruner", "random"],
     ["--pruner", "invalid choice"]),
    ([*START, "--grace-period", "-1"],
     ["--grace-period", "at least 1"]),
    ([*START, "--precision", "fp16"], ["--precision", "invalid choice"]),
    ([*START, "--precision", "bf16"], ["trains in precision 'auto'", "--precision auto"]),
    (["worker", "--storage", DB, "--study", "mlp_regularisation", "--precision", "fp32"],
     ["trains in precision 'auto'", "--precision auto"]),
    (["start", "--storage", DB, "--space", "mlp_architecture", "--study", "mlp_regularisation"],
     ["created with space 'mlp_regularisation'", "--study"]),
    (["start", "--space", "mlp_regularisation", "--storage", "redis://x"], ["not supported", "sqlite:///"]),
    (["start", "--space", "mlp_regularisation", "--storage", "sqlite:///no/such/dir/k.db"],
     ["does not exist", "create it"]),
    (["start", "--space", "mlp_regularisation", "--storage", "postgresql://nobody@127.0.0.1:1/none"],
     ["cannot open storage"]),
    (["start", "--space", "mlp_regularisation", "--storage", "grpc://127.0.0.1"], ["not a proxy address",
                                                                                   "grpc://HOST:PORT"]),
    (["worker", "--study", "s", "--storage", "grpc://127.0.0.1:1"],
     ["no storage proxy answers at 127.0.0.1:1", "kmnist-search proxy"]),
    (["status", "--storage", "grpc://127.0.0.1:1"], ["no storage proxy answers"]),
    (["proxy", "--storage", "grpc://127.0.0.1:1"], ["a proxy serves a database", "postgresql://"]),
    ([*START, "--retry-for", "0"], ["--retry-for", "positive number"]),
    (["worker", "--storage", DB, "--study", "nope"], ["no study 'nope'", "kmnist-search start"]),
    (["status", "--storage", DB, "--study", "nope"], ["no study 'nope'"]),
    (["dashboard", "--storage", DB, "--port", "70000"], ["--port", "between 1 and 65535"]),
    (["replay", "--storage", DB, "--space", "nope"], ["unknown space 'nope'"]),
    (["replay", "--storage", DB], ["one of the arguments --space --all is required"]),
    (["replay", "--storage", DB, "--all", "--report", "7"], ["--report", "three-digit report number"]),
    (["replay", "--storage", DB, "--all", "--report", "007"],
     ["no documented experiment of report 007", "--report 000 / 001"]),
    (["replay", "--storage", DB, "--all", "--learning-curve", "--sizes", "500,five"],
     ["--sizes", "'five' is not a size of 10 or more images or 'all'"]),
    (["replay", "--storage", DB, "--all", "--learning-curve", "--curve-seeds", "1"],
     ["--curve-seeds", "at least 2"]),
    (["export", "--storage", DB, "--study", "mlp_regularisation", "--trial", "999"], ["no trial 999"]),
    (["export", "--storage", DB, "--study", "nope"], ["no study 'nope'"]),
    (["retrain", "missing.json"], ["missing.json not found", "kmnist-search export"]),
    # deployment budgets, the front and the pick
    ([*START, "--max-params", "0"], ["--max-params", "at least 1"]),
    ([*START, "--max-params", "-5"], ["--max-params", "at least 1"]),
    ([*START, "--max-params", "2.5"], ["--max-params", "not a whole number"]),
    ([*START, "--max-mflops", "0"], ["--max-mflops", "positive number"]),
    ([*START, "--max-mflops", "-1"], ["--max-mflops", "positive number"]),
    ([*START, "--max-mflops", "nan"], ["--max-mflops", "positive number"]),
    ([*START, "--max-latency-ms", "0"], ["--max-latency-ms", "positive number"]),
    ([*START, "--max-latency-ms", "inf"], ["--max-latency-ms", "positive number"]),
    ([*START, "--max-latency-ms", "fast"], ["--max-latency-ms", "not a number"]),
    ([*START, "--max-params", "1000000"],
     ["created with no budget, not --max-params 1000000", "leave out the budget options", "--study"]),
    (["worker", "--storage", DB, "--study", "mlp_regularisation", "--max-latency-ms", "2"],
     ["created with no budget, not --max-latency-ms 2.0"]),
    (["worker", "--storage", DB, "--study", "mlp_regularisation", "--max-params", "0"],
     ["--max-params", "at least 1"]),
    (["front", "--storage", DB, "--study", "nope"], ["no study 'nope'", "kmnist-search status"]),
    (["front", "--storage", DB, "--study", "mlp_regularisation", "--cost", "watts"],
     ["--cost", "invalid choice"]),
    (["front", "--storage", DB, "--study", "mlp_regularisation", "--within-points", "-1"],
     ["--within-points", "between 0 and 100"]),
    (["front", "--storage", DB, "--study", "mlp_regularisation", "--within-points", "much"],
     ["--within-points", "not a number"]),
    (["front", "--storage", DB, "--study", "mlp_regularisation", "-o", "no/such/dir/front.png"],
     ["does not exist", "-o"]),
    (["export", "--storage", DB, "--study", "mlp_regularisation", "--within-points", "1", "--trial", "0"],
     ["--within-points picks the trial itself", "leave out --trial"]),
    (["evaluate", "no-such-run"], ["holds no model.safetensors", "kmnist-search retrain"]),
    ([*START, "--device", "cuda:3"], ["no CUDA device", "--device cpu or auto"]),
    (["worker", "--storage", DB, "--study", "mlp_regularisation", "--device", "cuda:3"],
     ["no CUDA device", "--device cpu or auto"]),
    (["retrain", "missing.json", "--device", "cuda:3"], ["no CUDA device", "--device cpu or auto"]),
    (["evaluate", "no-such-run", "--device", "cuda:3"], ["no CUDA device", "--device cpu or auto"]),
    (["replay", "--storage", DB, "--all", "--device", "cuda:3"], ["no CUDA device", "--device cpu"]),
    *([([*START, "--device", "cuda"], ["no CUDA device on this machine for --device cuda"])]
      if not torch.cuda.is_available() else []),
    (["status", "--storage", "sqlite:///typo.db"], ["no storage at typo.db", "kmnist-search start"]),
    (["export", "--storage", "sqlite:///typo.db", "--study", "x"], ["no storage at typo.db"]),
    (["front", "--storage", "sqlite:///typo.db", "--study", "x"], ["no storage at typo.db"]),
]


# each command's first case, and an option's bad value, run as real processes; the others, and
# the tests below whose subject is what `start` checks rather than the process, call the same
# `main` in the test's process (a process costs seconds of imports)
IN_A_PROCESS = {tuple(args) for args in {args[0]: args for args, _ in reversed(BAD_INPUTS)}.values()} | {
    tuple(BAD_INPUTS[1][0])}


@pytest.mark.parametrize(("args", "fragments"), BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_gets_one_line_and_leaves_storage_unchanged(tmp_path, existing_db, args, fragments):
    assert len(BAD_INPUTS) >= 15
    before = digest(existing_db)
    argv = [f"sqlite:///{existing_db}" if a == DB else a for a in args]
    run = run_cli if tuple(args) in IN_A_PROCESS else run_main
    check_one_line_error(run(*argv, cwd=tmp_path), *fragments)
    assert digest(existing_db) == before


def corrupt_root(tmp_path, how):
    root = make_synthetic_root(tmp_path / "data", n_train=100, n_test=20)
    archive = root / "KMNIST" / "raw" / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(archive.read_bytes())
    if how == "truncated":
        archive.write_bytes(archive.read_bytes()[: len(archive.read_bytes()) // 2])
    else:  # wrong magic number
        archive.write_bytes(gzip.compress(b"\x00\x00\x09\x99" + raw[4:]))
    return root


@pytest.mark.parametrize(("how", "fragment"), [("truncated", "cannot decompress"),
                                               ("magic", "unreadable or corrupt")])
def test_broken_data_files(tmp_path, existing_db, how, fragment):
    before = digest(existing_db)
    root = corrupt_root(tmp_path, how)
    result = run_main("start", "--space", "mlp_regularisation", "--study", "fresh", "--storage",
                      f"sqlite:///{existing_db}", "--data-dir", str(root), cwd=tmp_path)
    check_one_line_error(result, fragment)
    assert digest(existing_db) == before


def test_a_failed_decompression_leaves_no_file_that_passes_for_complete(tmp_path):
    from objectives.data import load_raw
    from objectives.datasets import DataUnavailableError

    root = corrupt_root(tmp_path, "truncated")
    raw = root / "KMNIST" / "raw"
    with pytest.raises(DataUnavailableError, match="cannot decompress"):
        load_raw("kmnist", root, train=True, download=False)
    assert not (raw / "train-images-idx3-ubyte").exists()
    assert not list(raw.glob(".*.part"))
    # the same again: still the decompression error, not "unreadable or corrupt" from a half file
    with pytest.raises(DataUnavailableError, match="cannot decompress"):
        load_raw("kmnist", root, train=True, download=False)
    make_synthetic_root(tmp_path / "data", n_train=100, n_test=20)  # a good archive again
    images, labels = load_raw("kmnist", root, train=True, download=False)
    assert images.shape == (100, 28, 28) and len(labels) == 100


def test_processes_starting_together_on_a_fresh_root_read_only_complete_files(tmp_path):
    """Several threads decompress one fresh root at once while another reads whatever IDX
    file exists: every file it finds is complete (it appears only by a rename)."""
    import threading

    from objectives.data import _extract_local_archives

    root = make_synthetic_root(tmp_path / "data", n_train=6000, n_test=20)
    raw = root / "KMNIST" / "raw"
    sizes = {a.with_suffix("").name: len(gzip.decompress(a.read_bytes())) for a in raw.glob("*.gz")}
    seen: list[tuple[str, int]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for name in sizes:
                path = raw / name
                if path.exists():
                    seen.append((name, len(path.read_bytes())))

    watcher = threading.Thread(target=watch)
    watcher.start()
    workers = [threading.Thread(target=_extract_local_archives, args=(raw,)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    done.set()
    watcher.join()
    assert all(size == sizes[name] for name, size in seen)
    assert {p.name for p in raw.iterdir()} == {*sizes, *(f"{n}.gz" for n in sizes)}  # no .part left


def test_corrupt_storage_file(tmp_path, existing_db):
    broken = tmp_path / "broken.db"
    data = bytearray(existing_db.read_bytes())
    data[100:8192] = b"\xff" * (8192 - 100)  # keep the header, wreck the schema pages
    broken.write_bytes(bytes(data))
    before = digest(broken)
    result = run_cli("status", "--storage", f"sqlite:///{broken}", cwd=tmp_path)
    check_one_line_error(result, "unreadable")
    assert digest(broken) == before


def test_storage_file_that_is_not_a_database(tmp_path, synthetic_root):
    notes = tmp_path / "notes.db"
    notes.write_text("my precious notes\n")
    result = run_main("start", "--space", "mlp_regularisation", "--storage", f"sqlite:///{notes}",
                      "--data-dir", str(synthetic_root), cwd=tmp_path)
    check_one_line_error(result, "not a SQLite database")
    assert notes.read_text() == "my precious notes\n"


def test_missing_data_offline_names_the_files_and_the_folder(tmp_path, existing_db):
    before = digest(existing_db)
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_main("start", "--space", "mlp_regularisation", "--study", "fresh", "--trials", "2",
                      "--storage", f"sqlite:///{existing_db}", "--data-dir", str(empty), cwd=tmp_path)
    check_one_line_error(result, "download failed", "train-images-idx3-ubyte.gz",
                         str(empty / "KMNIST" / "raw"))
    assert digest(existing_db) == before  # no empty study was created


def test_study_created_for_another_dataset(tmp_path, existing_db, synthetic_root):
    before = digest(existing_db)
    result = run_main("start", "--space", "mlp_regularisation", "--trials", "3", "--dataset", "mnist",
                      "--storage", f"sqlite:///{existing_db}", "--data-dir", str(synthetic_root),
                      cwd=tmp_path)
    check_one_line_error(result, "created with dataset 'kmnist'", "--study")
    assert digest(existing_db) == before


@pytest.mark.parametrize(("space", "option", "value", "fragments"), [
    ("cnn_beyond", "--max-params", "10",
     ["no cnn_beyond model meets --max-params 10", "global_pool=True", "has 90 parameters",
      "raise --max-params to at least 90"]),
    ("mlp_beyond", "--max-latency-ms", "0.000001",
     ["no mlp_beyond model meets --max-latency-ms 1e-06", "width_1=64", "ms per image"]),
])
def test_budget_no_model_meets_stops_after_a_few_trials(tmp_path, existing_db, synthetic_root, space, option,
                                                       value, fragments):
    before = digest(existing_db)
    url = f"sqlite:///{tmp_path / 'k.db'}"
    result = run_main("start", "--space", space, "--trials", "50", option, value, "--threads", "1",
                      "--storage", url, "--data-dir", str(synthetic_root), cwd=tmp_path)
    check_one_line_error(result, *fragments)
    trials = optuna.load_study(study_name=space, storage=url).get_trials(states=(TrialState.PRUNED,))
    assert len(trials) == INFEASIBLE_STREAK  # pruned before training, then the search stopped
    assert all(not t.intermediate_values and t.user_attrs["pruned_reason"] for t in trials)
    assert digest(existing_db) == before
