"""What the product reads back (exported configs, run folders, model files, checkpoints, study
and trial attributes, storage URLs) may come from someone else: none of it can choose a path,
allocate without bound, run code, leak a password or stop recovery."""

import http.client
import json
import os
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch
from optuna.trial import FixedTrial, TrialState
from safetensors import safe_open
from safetensors.torch import save_file

from objectives.data import load_raw
from objectives.datasets import DataUnavailableError
from objectives.errors import TensorFileError
from objectives.models import build_model, model_config
from objectives.tensor_files import load_tensor_file, save_tensor_file
from objectives.training import (
    CHECKPOINT_FORMAT,
    Checkpoint,
    CheckpointReadError,
    TrainSettings,
    file_sha256,
    load_checkpoint,
    make_optimizer,
    train,
)
from search import cli, worker
from search.dashboard import HostCheck, allowed_hosts
from search.export import as_plain, checked_params
from search.retrain import SavedModelInfo, load_saved_model, redacted, save_model
from search.run_folder import default_run_folder
from search.study import CheckpointPaths, SearchSettings, StudyMismatchError
from spaces import get_space
from storage.configs import FORMAT, ConfigError, read_config
from storage.proxy import StaleTrialReaper
from storage.resilient import HEARTBEAT_ATTR
from storage.urls import STORAGE_ENV, open_storage, redact_text, redact_url
from tests.conftest import CLI, make_synthetic_root, offline_env, run_cli
from tests.pg_server import free_port

SECRET = "S3cretPassw0rd"


def valid_config(space_name: str = "mlp_regularisation", **provenance) -> dict:
    """An exported configuration of the space's first documented experiment, 1 epoch."""
    space = get_space(space_name)
    params = space.suggest(FixedTrial(space.trial_params(space.experiments[0].config)))
    return {"format": FORMAT, "space": space.name, "family": space.family, "dataset": "kmnist",
            "params": as_plain(params), "epochs": 1, "seed": 0, "val_fraction": 1 / 6,
            "provenance": {"study": space.name, "trial": 0, **provenance}}


def write(path: Path, config: dict) -> Path:
    path.write_text(json.dumps(config))
    return path


def one_line(result) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# --- exported configurations -------------------------------------------------------------

BAD_FIELDS = [
    (("epochs",), 10**15, "epochs must be a whole number from 1 to 1000"),
    (("epochs",), True, "epochs must be a whole number"),
    (("seed",), -1, "seed must be a whole number from 0"),
    (("val_fraction",), 1.5, "val_fraction must be a number between 0 and 1"),
    (("val_fraction",), float("nan"), "val_fraction must be a number"),
    (("dataset",), "../../etc", "dataset must be one of kmnist"),
    (("family",), "rnn", "family must be one of mlp, cnn"),
    (("provenance", "trial"), "../../x", "provenance.trial must be a whole number"),
    (("provenance", "study"), "a\nb", "provenance.study must be text"),
    (("provenance", "extra"), 1, "provenance must be a mapping of"),
]


@pytest.mark.parametrize("field,value,fragment", BAD_FIELDS,
                         ids=[f"{'.'.join(f)}={v!r}" for f, v, _ in BAD_FIELDS])
def test_a_config_field_outside_its_schema_names_the_file_and_the_field(tmp_path, field, value, fragment):
    config = valid_config()
    target = config
    for key in field[:-1]:
        target = target[key]
    target[field[-1]] = value
    path = write(tmp_path / "best.json", config)
    with pytest.raises(ConfigError) as caught:
        read_config(path)
    assert str(path) in str(caught.value) and fragment in str(caught.value)


def test_oversized_and_deeply_nested_configs_are_refused(tmp_path):
    big = tmp_path / "big.json"
    big.write_text(json.dumps({**valid_config(), "provenance": {"source": "x" * 2_000_000}}))
    with pytest.raises(ConfigError, match="too large"):
        read_config(big)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConfigError, match="nests too deeply|not valid JSON"):
        read_config(deep)


@pytest.mark.parametrize("space,params,fragment", [
    ("cnn_regularisation", {"max_shift": 1_000_000}, "max_shift are not parameters of space"),
    ("cnn_regularisation", {"label_smoothing": 7.5}, "label_smoothing are not parameters"),
    ("cnn_regularisation", {"convs_per_block": 10**9}, "convs_per_block are not parameters"),
    ("cnn_beyond", {"convs_per_block": 10**9}, "convs_per_block=1000000000 outside 1 .. 2"),
    ("cnn_beyond", {"convs_per_block": True}, "convs_per_block=True outside"),
    ("mlp_regularisation", {"hidden_layers": 5}, "hidden_layers=5 outside"),
    ("mlp_regularisation", {"dropout": float("inf")}, "dropout=inf outside"),
])
def test_params_the_space_does_not_declare_or_outside_its_ranges_are_refused(space, params, fragment):
    config = valid_config("cnn_beyond" if space == "cnn_beyond" else space)
    if space == "cnn_beyond":
        config["params"]["conv_blocks"] = [{"channels": 8, "kernel_size": 3, "padding": 1, "pool": "max",
                                            "pool_kernel": 2, "pool_stride": 2}]
    config["params"].update(params)
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(".", r"\.")):
        checked_params(config)


def test_a_conv_block_with_an_unknown_key_is_refused():
    config = valid_config("cnn_beyond")
    config["params"]["conv_blocks"] = [{"channels": 8, "kernel_size": 3, "padding": 1, "pool": "none",
                                        "dilation": 1000}]
    with pytest.raises(ConfigError, match="conv_blocks"):
        checked_params(config)


def test_the_default_run_folder_is_a_safe_name_under_runs():
    for study in ("/some/where/home", "../../../etc", "x/../../y", "", ".."):
        folder = default_run_folder(valid_config(study=study, trial=3))
        assert folder.parts[0] == "runs" and len(folder.parts) == 2, folder
        assert folder.name.endswith("-trial3") and "/" not in folder.name and not folder.name.startswith(".")
    assert default_run_folder(valid_config(study="mlp_regularisation", trial=4)) == \
        Path("runs/mlp_regularisation-trial4")


@pytest.mark.slow
def test_retrain_writes_only_under_the_working_folder_and_deletes_nothing(tmp_path, synthetic_root):
    victim = tmp_path / "victim" / "home"
    for name in ("model.pt", "models/seed-0.pt"):
        (victim.parent / f"home-trial1/{name}").parent.mkdir(parents=True, exist_ok=True)
        (victim.parent / f"home-trial1/{name}").write_text("not ours")
    work = tmp_path / "work"
    work.mkdir()
    write(work / "bad.json", {**valid_config(study=str(victim), trial=1), "dataset": "nope"})
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    result = run_cli("retrain", "bad.json", "--data-dir", str(synthetic_root), cwd=work)
    assert result.returncode == 2 and "dataset must be one of" in one_line(result)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written

    write(work / "good.json", valid_config(study=str(victim), trial=1))
    result = run_cli("retrain", "good.json", "--seeds", "1", "--data-dir", str(synthetic_root), cwd=work)
    assert result.returncode == 0, result.stderr
    runs = list((work / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "model.safetensors").exists()
    assert (victim.parent / "home-trial1" / "model.pt").read_text() == "not ours"
    assert (victim.parent / "home-trial1" / "models" / "seed-0.pt").read_text() == "not ours"
    assert "not linked" in result.stdout  # no study of that name in the default storage


@pytest.mark.slow
def test_too_many_retrain_seeds_are_refused(tmp_path):
    write(tmp_path / "good.json", valid_config())
    result = run_cli("retrain", "good.json", "--seeds", "1000", cwd=tmp_path)
    assert result.returncode == 2 and "--seeds 1000 is over 100" in one_line(result)


# --- model files ----------------------------------------------------------------------------

@pytest.fixture
def model_file(tmp_path) -> Path:
    config = valid_config()
    _, params = checked_params(config)
    model = build_model(model_config("mlp", params, 10))
    path = tmp_path / "model.safetensors"
    save_model(path, model, SavedModelInfo(config, 0, 10, 0.2, 0.3, [str(i) for i in range(10)]))
    return path


def rewrite(path: Path, tensors=None, content=None) -> None:
    with safe_open(str(path), "pt") as f:
        stored = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
        metadata = f.metadata()
    if tensors:
        tensors(stored)
    if content:
        skeleton = json.loads(metadata["content"])
        content(skeleton)
        metadata["content"] = json.dumps(skeleton)
    save_file(stored, str(path), metadata=metadata)


def first_weight(tensors) -> str:
    return next(k for k in tensors if k.endswith("weight"))


MODEL_TAMPERING = {
    "13 trillion classes": (None, lambda c: c.update(num_classes=10**13), "num_classes must be one of 10"),
    "40 million classes": (None, lambda c: c.update(num_classes=4 * 10**7), "num_classes must be one of 10"),
    "float64 weights": (lambda t: t.update({first_weight(t): t[first_weight(t)].double()}), None,
                        "the model needs"),
    "an unreferenced tensor": (lambda t: t.update(extra=torch.zeros(3)), None, "damaged metadata"),
    "an unknown dataset": (None, lambda c: c["config"].update(dataset="secret"), "dataset must be one of"),
    "a param the space lacks": (None, lambda c: c["config"]["params"].update(max_shift=10**6),
                                "are not parameters of space"),
    "infinite normalisation": (None, lambda c: c.update(std=float("inf")), "std must be a number"),
}


@pytest.mark.parametrize("how", MODEL_TAMPERING)
def test_model_metadata_is_checked_before_any_weight_is_read(model_file, how):
    tensors, content, fragment = MODEL_TAMPERING[how]
    rewrite(model_file, tensors, content)
    started = time.perf_counter()
    with pytest.raises(TensorFileError) as caught:
        load_saved_model(model_file, torch.device("cpu"))
    assert fragment in str(caught.value) and str(model_file) in str(caught.value)
    assert "\n" not in str(caught.value)
    assert time.perf_counter() - started < 30  # nothing of the claimed size was allocated


def test_the_untampered_model_file_loads(model_file):
    model, info = load_saved_model(model_file, torch.device("cpu"))
    assert info.num_classes == 10 and sum(p.numel() for p in model.parameters()) > 0


def test_malformed_tensor_file_metadata_is_one_error_not_a_crash(tmp_path):
    save_tensor_file(tmp_path / "c.safetensors", "test/1", {"state": {0: torch.zeros(2)}})
    with safe_open(str(tmp_path / "c.safetensors"), "pt") as f:
        tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118
    for content in ('{"state": {"__int_keys__": [[Infinity, {"__tensor__": "content.state.0"}]]}}',
                    '{"state": {"__int_keys__": [[1.5, {"__tensor__": "content.state.0"}]]}}',
                    "[" * 100_000 + "]" * 100_000):
        save_file(tensors, str(tmp_path / "bad.safetensors"), metadata={**metadata, "content": content})
        with pytest.raises(TensorFileError, match="damaged metadata"):
            load_tensor_file(tmp_path / "bad.safetensors", "test/1")


# --- checkpoints ------------------------------------------------------------------------------

def test_checkpoint_paths_ignore_forged_attributes_and_study_names(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'k.db'}")
    for name in ("../../../evil", "/abs/olute", "x[/]"):
        study = optuna.create_study(study_name=name, storage=storage)
        paths = CheckpointPaths(tmp_path / "checkpoints", study)
        for forged in ("x/../../../../victim/model", -1, 10**9, True, 1.5):
            trial = study.ask()
            storage.set_trial_system_attr(trial._trial_id, "failed_trial", forged)
            path = paths(trial)
            assert path.parent.parent == (tmp_path / "checkpoints").resolve()
            assert path.name == f"trial-{trial.number}.safetensors"
    study = optuna.create_study(study_name="plain", storage=storage)
    first, retry = study.ask(), study.ask()
    storage.set_trial_system_attr(retry._trial_id, "failed_trial", first.number)
    assert CheckpointPaths(tmp_path / "checkpoints", study)(retry).name == f"trial-{first.number}.safetensors"


def test_a_checkpoint_with_a_forged_history_is_refused(tmp_path):
    model = build_model(model_config("mlp", checked_params(valid_config())[1], 10))
    settings = TrainSettings(epochs=2, batch_size=50, learning_rate=1e-3)
    optimizer = make_optimizer(model, settings, torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    good = {"epoch": 1, "train_loss": 1.0, "val_loss": 1.0, "val_accuracy": 0.5, "seconds": 1.0,
            "restored": False}
    histories = {"longer than the run": [good, {**good, "epoch": 2}, {**good, "epoch": 3}],
                 "an impossible accuracy": [{**good, "val_accuracy": 7.0}],
                 "a non-finite loss": [{**good, "train_loss": float("inf")}],
                 "skipped epochs": [{**good, "epoch": 2}],
                 "an unknown field": [{**good, "value": 1.0}]}
    for history in histories.values():
        save_tensor_file(tmp_path / "c.safetensors", CHECKPOINT_FORMAT, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": None,
            "global_rng": torch.get_rng_state(), "cuda_rng": None, "generator": generator.get_state(),
            "history": history})
        with pytest.raises(CheckpointReadError, match="valid epoch history"):
            load_checkpoint(tmp_path / "c.safetensors", model, optimizer, generator, max_epochs=2)


def test_a_checkpoint_whose_digest_differs_is_not_loaded(tmp_path):
    data = make_synthetic_root(tmp_path / "data", n_train=100, n_test=20)
    images, labels = load_raw("kmnist", data, train=True)
    from objectives.data import pixel_stats, to_device

    split = to_device(images, labels, *pixel_stats(images), torch.device("cpu"))
    settings = TrainSettings(epochs=2, batch_size=50, learning_rate=1e-3)
    model = build_model(model_config("mlp", checked_params(valid_config())[1], 10))
    digests, errors = [], []
    train(model, split, split, settings, checkpoint=Checkpoint(tmp_path / "c.safetensors",
                                                               on_saved=digests.append))
    assert digests == [digests[0], file_sha256(tmp_path / "c.safetensors")]
    forged = Checkpoint(tmp_path / "c.safetensors", "0" * 64)
    resumed = train(model, split, split, settings, checkpoint=forged, on_checkpoint_error=errors.append)
    assert [r.restored for r in resumed] == [False, False]
    assert "is not the checkpoint this trial wrote" in str(errors[0])


# --- run folders and data ---------------------------------------------------------------------

def test_reading_data_never_loads_torchvisions_processed_pickles(tmp_path):
    root = make_synthetic_root(tmp_path / "root", n_train=50, n_test=20)
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    processed = root / "KMNIST" / "processed"
    processed.mkdir(parents=True)
    for name in ("training.pt", "test.pt"):
        torch.save(Payload(), processed / name)
    images, _ = load_raw("kmnist", root, train=False)
    assert len(images) == 20 and not marker.exists()


def test_reading_without_download_names_the_missing_files_and_creates_nothing(tmp_path):
    with pytest.raises(DataUnavailableError, match="t10k-images-idx3-ubyte.gz") as caught:
        load_raw("kmnist", tmp_path / "nowhere", train=False, download=False)
    assert "download failed" not in str(caught.value) and not (tmp_path / "nowhere").exists()


# --- study attributes ---------------------------------------------------------------------------

def test_damaged_search_settings_are_named(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'k.db'}")
    study = optuna.create_study(study_name="s", storage=storage)
    good = {"val_fraction": 0.2, "seed": 0, "split_hash": "ab", "epochs": 3, "pruner": "median",
            "target": 10, "precision": "fp32"}
    study.set_user_attr("search_settings", good)
    assert SearchSettings.load(study) == SearchSettings(**good)
    for field, value in (("epochs", 10**15), ("val_fraction", "x"), ("precision", "fp8"), ("seed", None)):
        study.set_user_attr("search_settings", {**good, field: value})
        with pytest.raises(StudyMismatchError, match=f"{field} must be"):
            SearchSettings.load(study)
    study.set_user_attr("search_settings", "not a mapping")
    with pytest.raises(StudyMismatchError, match="damaged search settings"):
        SearchSettings.load(study)


def test_a_bad_heartbeat_is_skipped_and_never_stops_recovery(tmp_path):
    rdb = open_storage(f"sqlite:///{tmp_path / 'k.db'}")
    study = optuna.create_study(study_name="s", storage=rdb)
    beats = {"a string": "garbage", "a huge grace": {"at": 1.0, "grace_s": 1e300},
             "a bool grace": {"at": 1.0, "grace_s": True}, "valid": {"at": 1.0, "grace_s": 5}}
    trials = {}
    for what, beat in beats.items():
        trial = study.ask()
        rdb.set_trial_system_attr(trial._trial_id, HEARTBEAT_ATTR, beat)
        trials[what] = trial.number
    now, said = [0.0], []
    reaper = StaleTrialReaper(rdb, grace_period=10, clock=lambda: now[0], say=said.append)
    assert reaper.sweep() == []  # first look: every beat is new
    now[0] = 6.0
    assert reaper.sweep() == [trials["valid"]]  # its own grace of 5 s passed
    now[0] = 11.0
    assert sorted(reaper.sweep()) == sorted(trials[w] for w in ("a string", "a huge grace", "a bool grace"))
    assert len([line for line in said if "malformed heartbeat" in line]) == 3
    states = {t.number: t.state for t in study.get_trials()}
    assert all(states[n] == TrialState.FAIL for n in trials.values())
    assert sum(state == TrialState.WAITING for state in states.values()) == 4  # all requeued


# --- passwords, markup, unexpected errors --------------------------------------------------------

def test_passwords_are_redacted_in_urls_and_messages():
    url = f"postgresql://alice:{SECRET}@db.example/optuna"
    assert redact_url(url) == "postgresql://alice:***@db.example/optuna"
    assert SECRET not in redact_text(f"cannot open storage {url}: password {SECRET} rejected", url)
    assert redact_url("sqlite:///k.db") == "sqlite:///k.db"
    assert redact_url(f"grpc://bob:{SECRET}@h:13000") == "grpc://bob:***@h:13000"
    config = redacted(valid_config(storage=url))
    assert config["provenance"]["storage"] == "postgresql://alice:***@db.example/optuna"


@pytest.mark.slow
def test_status_never_echoes_a_password(tmp_path):
    port = free_port()  # nothing listens: the connection is refused at once
    result = run_cli("status", "--storage", f"postgresql://alice:{SECRET}@127.0.0.1:{port}/db", cwd=tmp_path)
    assert result.returncode == 2
    line = one_line(result)
    assert SECRET not in line and "alice:***@" in line


def test_spawned_workers_get_the_url_in_their_environment_and_run_isolated(tmp_path, monkeypatch):
    started = []

    class FakePopen:
        def __init__(self, command, **kwargs):
            started.append((command, kwargs["env"]))

    monkeypatch.setattr(worker, "subprocess", SimpleNamespace(Popen=FakePopen, DEVNULL=subprocess.DEVNULL,
                                                              PIPE=subprocess.PIPE))
    url = f"postgresql://alice:{SECRET}@db.example/optuna"
    worker.spawn_workers(2, "s", url, 10, 1, tmp_path, "cpu", tmp_path, 10, 30)
    assert len(started) == 2
    for command, env in started:
        assert SECRET not in " ".join(command) and "--storage" not in command
        assert env[STORAGE_ENV] == url and command[1] == "-I"
    # a search/ package in the working folder does not replace ours under -I
    trap = tmp_path / "trap"
    (trap / "search").mkdir(parents=True)
    (trap / "search" / "__init__.py").write_text("")
    (trap / "search" / "cli.py").write_text(f"open({str(tmp_path / 'code-ran')!r}, 'w')\n")
    command = started[0][0]
    ran = subprocess.run([*command[:4], "spaces"], cwd=trap, capture_output=True, text=True,
                         env=offline_env(), timeout=120)
    assert ran.returncode == 0 and "mlp_regularisation" in ran.stdout
    assert not (tmp_path / "code-ran").exists()


@pytest.mark.slow
def test_rich_markup_in_a_study_name_is_printed_as_text(tmp_path):
    url = f"sqlite:///{tmp_path / 'k.db'}"
    storage = open_storage(url)
    for name in ("x[/]", "[bold red]boom[/]"):
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
        study.tell(study.ask({"dropout": optuna.distributions.FloatDistribution(0, 1)}), 0.5)
    storage.engine.dispose()
    result = run_cli("status", "--storage", url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "study x[/]" in result.stdout and "study [bold red]boom[/]" in result.stdout


def test_an_unexpected_error_is_one_line_unless_debugging(monkeypatch, capsys):
    def broken(console):
        raise RuntimeError(f"something nobody foresaw\nsecond line postgresql://a:{SECRET}@h/d")

    monkeypatch.setattr(cli, "cmd_spaces", broken)
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    assert cli.main(["spaces"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["kmnist-search spaces: unexpected error: RuntimeError: something nobody foresaw "
                   "(set KMNIST_SEARCH_DEBUG=1 for the traceback)"]
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(RuntimeError, match="nobody foresaw"):
        cli.main(["spaces"])


# --- the dashboard --------------------------------------------------------------------------------

def test_the_host_check_answers_only_the_names_of_a_loopback_server():
    def app(environ, start_response):
        start_response("200 OK", [])
        return [b"ok"]

    checked = HostCheck(app, allowed_hosts("127.0.0.1", 8080))
    statuses = []

    def call(host):
        body = checked({"HTTP_HOST": host}, lambda status, headers: statuses.append(status))
        return statuses[-1], b"".join(body)

    for host in ("127.0.0.1:8080", "localhost:8080", "LOCALHOST:8080", "[::1]:8080"):
        assert call(host) == ("200 OK", b"ok")
    for host in ("evil.example:8080", "127.0.0.1.evil.example:8080", ""):
        assert call(host)[0] == "403 Forbidden"
    assert allowed_hosts("0.0.0.0", 8080) is None  # beyond loopback: warned about instead


@pytest.mark.slow
def test_the_dashboard_refuses_a_rebound_host_name(tmp_path):
    url = f"sqlite:///{tmp_path / 'k.db'}"
    storage = open_storage(url)
    optuna.create_study(study_name="s", storage=storage)
    storage.engine.dispose()
    port = free_port()
    server = subprocess.Popen([str(CLI), "dashboard", "--storage", url, "--port", str(port)], cwd=tmp_path,
                              env=offline_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def status(host: str) -> int:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.putrequest("GET", "/api/studies", skip_host=True)
            connection.putheader("Host", host)
            connection.endheaders()
            return connection.getresponse().status

        deadline = time.time() + 60
        while True:
            try:
                assert status(f"127.0.0.1:{port}") == 200
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, "the dashboard did not start"
                time.sleep(0.3)
        assert status(f"attacker.example:{port}") == 403
        assert status(f"localhost:{port}") == 200
    finally:
        server.terminate()
        server.wait(timeout=10)
