"""Model and checkpoint files cannot run code: every load path refuses what `retrain` and the
training loop did not write, with one line, and leaves the files and the storage as they were."""

import hashlib
import json
import os
import re
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from objectives.errors import TensorFileError
from objectives.tensor_files import load_tensor_file, save_tensor_file
from storage.urls import open_storage
from tests.conftest import (
    CLI,
    REPO,
    _free_port,
    default_sigint,
    offline_env,
    run_cli,
    run_main,
    searched_folder,
    unfolded,
)

UNSAFE_LOADERS = re.compile(r"weights_only=False|pickle|yaml\.load\(")


def test_no_package_of_the_product_can_unpickle():
    hits = [f"{path.relative_to(REPO)}:{number}: {line.strip()}"
            for package in ("search", "objectives", "spaces", "storage")
            for path in sorted((REPO / package).rglob("*.py"))
            for number, line in enumerate(path.read_text().splitlines(), 1) if UNSAFE_LOADERS.search(line)]
    assert hits == []


def test_tensor_file_round_trip_is_exact(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    content = {"optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(),
               "history": [{"epoch": 1, "val_loss": float("nan"), "restored": False}], "none": None}
    save_tensor_file(tmp_path / "c.safetensors", "test/1", content)
    loaded = load_tensor_file(tmp_path / "c.safetensors", "test/1")
    assert set(loaded["optimizer"]["state"]) == {0, 1}  # parameter indices stay integers
    assert loaded["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)  # tuples stay tuples
    for index, state in optimizer.state_dict()["state"].items():
        for name, tensor in state.items():
            assert torch.equal(loaded["optimizer"]["state"][index][name], tensor)
            assert loaded["optimizer"]["state"][index][name].dtype == tensor.dtype
    assert torch.equal(loaded["rng"], content["rng"]) and loaded["none"] is None
    with pytest.raises(TensorFileError, match="has format 'test/1', expected 'test/2'"):
        load_tensor_file(tmp_path / "c.safetensors", "test/2")


class MarkerPayload:
    """Unpickling this runs a shell command that creates a file: what an attacker would ship."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def write_payload(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": "kmnist-search-model/1", "state_dict": {}, "extra": MarkerPayload(marker)}, path)


def folder_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line(result) -> str:
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def retrained(tmp_path_factory, synthetic_root):
    folder = searched_folder(tmp_path_factory.mktemp("safe"), synthetic_root, 2, 2)
    exported = run_main("export", "--study", "mlp_regularisation", "--storage",
                       f"sqlite:///{folder / 'k.db'}", "-o", "best.json", cwd=folder)
    assert exported.returncode == 0, exported.stderr
    result = run_main("retrain", "best.json", "--seeds", "1", "--out", "runs/good", "--data-dir",
                      str(synthetic_root), cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder


def copy_run(retrained: Path, name: str) -> Path:
    run = retrained / "runs" / name
    subprocess.run(["cp", "-r", str(retrained / "runs" / "good"), str(run)], check=True)
    return run


def rewrite_model(path: Path, change_tensors=None, change_metadata=None) -> None:
    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
        metadata = f.metadata()
    if change_tensors:
        change_tensors(tensors)
    if change_metadata:
        change_metadata(metadata)
    save_file(tensors, str(path), metadata=metadata)


def shrink_first_weight(tensors):
    key = next(k for k in tensors if k.endswith("weight"))
    tensors[key] = tensors[key][:-1].clone()


def other_version(metadata):
    metadata["format"] = "kmnist-search-model/9"


def damaged_content(metadata):
    metadata["content"] = metadata["content"][:40]


BAD_MODEL_FILES = {
    "pickle named .safetensors": (lambda p, marker: write_payload(p, marker), "not a readable safetensors"),
    "truncated": (lambda p, _: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
                  "not a readable safetensors"),
    "random bytes": (lambda p, _: p.write_bytes(os.urandom(4096)), "not a readable safetensors"),
    "other format version": (lambda p, _: rewrite_model(p, change_metadata=other_version),
                             "has format 'kmnist-search-model/9'"),
    "tampered metadata": (lambda p, _: rewrite_model(p, change_metadata=damaged_content),
                          "damaged metadata"),
    "weights that do not fit the config": (lambda p, _: rewrite_model(p, change_tensors=shrink_first_weight),
                                           "does not hold a model its configuration describes"),
}


@pytest.mark.slow
@pytest.mark.parametrize("damage", BAD_MODEL_FILES)
def test_evaluate_refuses_bad_model_files_with_one_line(retrained, tmp_path, damage):
    run = copy_run(retrained, f"bad-{damage.replace(' ', '-')}")
    marker = tmp_path / "code-ran"
    make_bad, fragment = BAD_MODEL_FILES[damage]
    make_bad(run / "model.safetensors", marker)
    before = folder_digest(run)
    # the pickle through a real process; the others through the same `main` in this one
    evaluate = run_cli if damage == "pickle named .safetensors" else run_main
    result = evaluate("evaluate", str(run), cwd=retrained)
    assert result.returncode == 2
    line = one_line(result)
    assert str(run / "model.safetensors") in line and fragment in line and "kmnist-search retrain" in line
    assert not marker.exists()
    assert folder_digest(run) == before


@pytest.mark.slow
def test_evaluate_refuses_a_model_pt_of_the_old_layout_without_loading_it(retrained, tmp_path):
    run = copy_run(retrained, "legacy")
    (run / "model.safetensors").unlink()
    marker = tmp_path / "code-ran"
    write_payload(run / "model.pt", marker)
    before = folder_digest(run)
    result = run_main("evaluate", str(run), cwd=retrained)
    assert result.returncode == 2
    line = one_line(result)
    assert "model.pt predates the safe model format" in line and "kmnist-search retrain" in line
    assert not marker.exists() and folder_digest(run) == before


@pytest.mark.slow
def test_retrain_over_an_old_run_never_loads_nor_deletes_its_files_and_names_them(retrained, synthetic_root,
                                                                                   tmp_path):
    run = retrained / "runs" / "old"
    marker = tmp_path / "code-ran"
    write_payload(run / "model.pt", marker)
    write_payload(run / "models" / "seed-0.pt", marker)
    (run / "metrics.json").write_text("{}")
    result = run_main("retrain", "best.json", "--seeds", "1", "--out", "runs/old", "--force",
                      "--data-dir", str(synthetic_root), cwd=retrained)
    assert result.returncode == 0, result.stderr
    assert not marker.exists()
    # files the product cannot prove it wrote are named for the user, never deleted
    assert (run / "model.pt").exists() and (run / "models" / "seed-0.pt").exists()
    assert f"note: {Path('runs/old/model.pt')} is a torch.save file" in result.stdout
    assert f"note: {Path('runs/old/models/seed-0.pt')} is a torch.save file" in result.stdout
    evaluated = run_main("evaluate", "runs/old", "--data-dir", str(synthetic_root), cwd=retrained)
    assert evaluated.returncode == 0 and "matches" in evaluated.stdout  # the new file, bit for bit


@pytest.mark.slow
def test_a_resumed_trial_refuses_unsafe_checkpoints_and_restarts_from_epoch_0(tmp_path, synthetic_root):
    folder, url = tmp_path, f"sqlite:///{tmp_path / 'k.db'}"
    common = ["--space", "mlp_regularisation", "--epochs", "2", "--no-replay", "--storage", url,
              "--data-dir", str(synthetic_root)]
    assert run_main("start", "--trials", "1", *common, cwd=folder).returncode == 0
    storage = open_storage(url)
    study = optuna.load_study(study_name="mlp_regularisation", storage=storage)
    done = study.trials[0]
    for _ in range(2):  # two trials a Ctrl-C interrupted, as `start` records them
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.FAIL, params=done.params, distributions=done.distributions,
            user_attrs={"interrupted": True}))
    first, second = (t.number for t in study.trials[1:])
    storage.engine.dispose()
    checkpoints = folder / "k-artifacts" / "checkpoints" / "mlp_regularisation"
    marker = tmp_path / "code-ran"
    write_payload(checkpoints / f"trial-{first}.pt", marker)  # the old layout's file name
    write_payload(checkpoints / f"trial-{second}.safetensors", marker)  # a payload under the new name
    result = run_main("start", "--trials", "3", *common, cwd=folder)
    assert result.returncode == 0, result.stderr
    assert not marker.exists()
    assert "2 interrupted trials resumed" in unfolded(result.stdout)
    trials = optuna.load_study(study_name="mlp_regularisation", storage=url).trials
    retries = {t.system_attrs["failed_trial"]: t for t in trials if "failed_trial" in t.system_attrs}
    assert retries[first].user_attrs["checkpoint_error"].endswith("the trial restarts from epoch 0")
    assert "predates the safe checkpoint format" in retries[first].user_attrs["checkpoint_error"]
    # a file the trial never wrote (no digest recorded on it) is not even parsed
    assert "is not the checkpoint this trial wrote" in retries[second].user_attrs["checkpoint_error"]
    for retry in retries.values():
        assert retry.state == optuna.trial.TrialState.COMPLETE
        assert "resumed_from_epoch" not in retry.user_attrs
        assert sorted(retry.intermediate_values) == [1, 2]  # trained from epoch 1, not restored
    assert result.stdout.count("checkpoint: ") == 2


READ_ONLY = [
    ["status"], ["export", "--study", "s"], ["dashboard", "--port", "1"], ["worker", "--study", "s"],
]


@pytest.mark.slow
@pytest.mark.parametrize("command", READ_ONLY, ids=[c[0] for c in READ_ONLY])
def test_read_only_commands_do_not_create_a_missing_storage(tmp_path, command):
    result = run_cli(*command, "--storage", "sqlite:///typo.db", cwd=tmp_path)
    assert result.returncode == 2
    assert one_line(result).endswith("no storage at typo.db: check --storage (a study's file is "
                                     "created by `kmnist-search start`)")
    assert list(tmp_path.iterdir()) == []  # neither typo.db nor typo.db.lock


def dashboard_first_lines(folder: Path, host: str) -> tuple[str, str]:
    """stderr and stdout of a dashboard on `host` once it announced itself; then stopped."""
    port = _free_port()
    process = subprocess.Popen([str(CLI), "dashboard", "--storage", f"sqlite:///{folder / 'k.db'}",
                                "--host", host, "--port", str(port)], cwd=folder, env=offline_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=default_sigint)
    try:
        deadline = time.time() + 60
        line = process.stdout.readline()
        assert "optuna-dashboard on" in line and time.time() < deadline, line
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    return stderr, line


@pytest.mark.slow
def test_dashboard_warns_when_served_beyond_loopback(retrained):
    stderr, _ = dashboard_first_lines(retrained, "0.0.0.0")
    warnings = [line for line in stderr.splitlines() if "warning" in line]
    assert warnings == ["kmnist-search dashboard: warning: --host 0.0.0.0 serves beyond this machine, and "
                        "optuna-dashboard has no login: anyone who reaches the port can edit notes and "
                        "delete studies"]
    stderr, _ = dashboard_first_lines(retrained, "127.0.0.1")
    assert "warning" not in stderr


@pytest.mark.slow
def test_model_file_carries_its_config_and_normalisation_as_json(retrained):
    with safe_open(str(retrained / "runs" / "good" / "model.safetensors"), "pt") as f:
        metadata = f.metadata()
    content = json.loads(metadata["content"])
    assert metadata["format"] == "kmnist-search-model/2"
    assert set(content) == {"config", "seed", "num_classes", "mean", "std", "class_names", "state_dict"}
    assert content["class_names"][0] == "お (o)" and len(content["class_names"]) == 10
