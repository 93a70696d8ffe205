"""A run folder of `retrain`: its name, its files, and the checks made before anything is trained
or loaded.

Light on purpose (no torch, no data): `retrain` and `evaluate` refuse a bad config, seed count or
folder in well under a second, before importing what training needs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from objectives.errors import TensorFileError
from objectives.schema import SchemaError, mapping, number
from search.export import checked_params
from spaces.base import UnknownSpaceError
from storage.artifacts import safe_slug
from storage.configs import ConfigError, read_config

MODEL_SUFFIX = ".safetensors"
MODEL_FILE, LEGACY_MODEL_FILE = f"model{MODEL_SUFFIX}", "model.pt"
RETRAIN_FIX = "retrain its configuration with `kmnist-search retrain CONFIG` to get a new model file"


def model_file(run: Path) -> Path:
    """The run folder's model file; TensorFileError for a folder of the torch.save era."""
    path = run / MODEL_FILE
    if not path.exists() and (run / LEGACY_MODEL_FILE).exists():
        raise TensorFileError(f"{run / LEGACY_MODEL_FILE} predates the safe model format (a torch.save "
                              f"file, which could run code if loaded) and is not loaded: {RETRAIN_FIX}")
    return path


def legacy_models(run: Path) -> list[Path]:
    """torch.save model files an older version left in a run folder. They are never loaded, and
    never deleted either: only the user can tell whether they are ours."""
    return [path for path in (run / LEGACY_MODEL_FILE, *sorted((run / "models").glob("seed-*.pt")))
            if path.is_file()]


def default_run_folder(config: dict[str, Any]) -> Path:
    """runs/<study>-trial<N> under the working folder, the study's name made a safe file name:
    a configuration received from someone else must not choose where files are written."""
    provenance = config.get("provenance") or {}
    trial = provenance.get("trial")
    name = safe_slug(str(provenance.get("study") or config["space"]))
    folder = f"{name}-trial{trial}" if isinstance(trial, int) and not isinstance(trial, bool) else name
    return Path("runs") / folder


MAX_RETRAIN_SEEDS = 100
MAX_METRICS_BYTES = 1_000_000


def prepare_run(config_path: Path, out: Path | None, seeds: int,
                force: bool) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """The checked configuration, its parameters and the run folder (created), before any
    training: ConfigError for a bad file, too many seeds or a folder that holds a run."""
    config = read_config(config_path)
    try:
        _, params = checked_params(config)
    except (ConfigError, UnknownSpaceError) as error:
        raise ConfigError(f"{config_path}: {error}") from None
    if seeds > MAX_RETRAIN_SEEDS:
        raise ConfigError(f"--seeds {seeds} is over {MAX_RETRAIN_SEEDS}: retrain fewer seeds")
    out = out or default_run_folder(config)  # a path from the user, or a safe name under ./runs
    if (out / "metrics.json").exists() and not force:
        raise ConfigError(f"{out} already holds a retrained run: pass --force or choose another -o")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot create {out} ({error.strerror}): choose a writable -o") from None
    return config, params, out


def checked_run(run: Path) -> tuple[Path, Path]:
    """The model file and metrics.json of a folder `retrain` wrote; ConfigError otherwise."""
    metrics_path = run / "metrics.json"
    model_path = model_file(run)
    if not model_path.exists() or not metrics_path.exists():
        raise ConfigError(f"{run} holds no {model_path.name} and metrics.json: give a folder "
                          "written by `kmnist-search retrain`")
    return model_path, metrics_path


def recorded_accuracy(metrics_path: Path, seed: int) -> float:
    """The test accuracy a run's metrics.json records for `seed`, checked before it is used."""
    try:
        if metrics_path.stat().st_size > MAX_METRICS_BYTES:
            raise ValueError(f"over {MAX_METRICS_BYTES:,} bytes")
        recorded = json.loads(metrics_path.read_text())
        accuracy = mapping(mapping(recorded, "metrics")["test_accuracy"], "test_accuracy")
        per_seed = mapping(accuracy["per_seed"], "test_accuracy.per_seed", max_keys=1000)
        return number(per_seed[str(seed)], f"test_accuracy.per_seed.{seed}", 0, 1)
    except (KeyError, TypeError, SchemaError):
        raise ConfigError(f"{metrics_path} lacks seed {seed}'s test accuracy (a number from 0 to 1): "
                          "retrain to write a new run") from None
    except (OSError, ValueError, RecursionError) as error:
        raise ConfigError(f"cannot read {metrics_path} ({error}): retrain to write a new run") from None
