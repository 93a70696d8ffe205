"""Exported configurations: self-contained JSON or YAML files that `retrain` reads back.

A configuration may come from someone else, so reading checks every field against a schema
(types, ranges, known keys, a size cap) before anything is built, trained or written.
Whether the parameters fit their space is the caller's check (`search.export.checked_params`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from objectives.datasets import DATASET_NAMES
from objectives.schema import MAX_EPOCHS, MAX_SEED, SchemaError, mapping, number, one_of, text, whole_number

FORMAT = "kmnist-search-config/1"
REQUIRED_KEYS = ("format", "space", "family", "dataset", "params", "epochs", "seed", "val_fraction")
OPTIONAL_KEYS = ("provenance",)
FORMATS = ("json", "yaml")
FAMILIES = ("mlp", "cnn")
MAX_CONFIG_BYTES = 1_000_000  # an exported config is a few kB
PROVENANCE_KEYS = ("study", "storage", "trial", "validation_accuracy", "split_hash", "source",
                   "exported_at", "versions")


class ConfigError(ValueError):
    """A configuration file that cannot be read or written; the message says what to do."""


def dumps(config: Mapping[str, Any], fmt: str) -> str:
    if fmt == "yaml":
        return yaml.safe_dump(dict(config), sort_keys=False)
    return json.dumps(config, indent=2) + "\n"


def write_config(config: Mapping[str, Any], path: Path, fmt: str, force: bool = False) -> Path:
    path = Path(path)
    if path.exists() and not force:
        raise ConfigError(f"{path} exists: pass --force to overwrite it or choose another -o path")
    if path.is_dir():
        raise ConfigError(f"{path} is a directory: give a file name with -o")
    try:
        path.write_text(dumps(config, fmt))
    except OSError as error:
        raise ConfigError(f"cannot write {path} ({error.strerror}): choose a writable -o path") from None
    return path


def read_config(path: Path) -> dict[str, Any]:
    """The configuration in `path`, checked against the schema; ConfigError (one line naming
    the file, the field and the allowed values) otherwise."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path} is over {MAX_CONFIG_BYTES:,} bytes, too large for an exported "
                              "configuration: re-export it with `kmnist-search export`")
        text_read = path.read_text()
    except FileNotFoundError:
        raise ConfigError(
            f"{path} not found: export one with `kmnist-search export --study NAME -o {path}`"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read {path} ({error}): give a JSON or YAML configuration") from None
    kind = "JSON" if path.suffix == ".json" else "YAML"
    try:
        config = json.loads(text_read) if path.suffix == ".json" else yaml.safe_load(text_read)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        first = str(error).splitlines()[0]
        raise ConfigError(f"{path} is not valid {kind} ({first}): re-export it with `kmnist-search export`"
                          ) from None
    except RecursionError:
        raise ConfigError(f"{path} nests too deeply to be a configuration: re-export it") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path} does not hold a configuration mapping: re-export it")
    unknown = sorted(map(str, set(config) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS)))
    if unknown:
        raise ConfigError(f"{path} has unknown keys {', '.join(unknown)}: remove them "
                          f"(known: {', '.join(REQUIRED_KEYS + OPTIONAL_KEYS)})")
    missing = [k for k in REQUIRED_KEYS if k not in config]
    if missing:
        raise ConfigError(f"{path} lacks {', '.join(missing)}: re-export it with `kmnist-search export`")
    if config["format"] != FORMAT:
        raise ConfigError(f"{path} has format {config['format']!r}, expected {FORMAT!r}: re-export it")
    try:
        check_fields(config)
    except SchemaError as error:
        raise ConfigError(f"{path}: {error}: fix the field or re-export the configuration") from None
    return config


def check_fields(config: Mapping[str, Any]) -> None:
    """SchemaError for the first field outside its type and range."""
    text(config["space"], "space", 64)
    one_of(config["family"], "family", FAMILIES)
    one_of(config["dataset"], "dataset", DATASET_NAMES)
    mapping(config["params"], "params")
    whole_number(config["epochs"], "epochs", 1, MAX_EPOCHS)
    whole_number(config["seed"], "seed", 0, MAX_SEED)
    number(config["val_fraction"], "val_fraction", 0, 1, open_interval=True)
    if "provenance" not in config:
        return
    provenance = mapping(config["provenance"], "provenance", PROVENANCE_KEYS)
    checks = {
        "study": lambda v, f: text(v, f),
        "storage": lambda v, f: text(v, f, 2048),
        "trial": lambda v, f: whole_number(v, f, 0, 10**9),
        "validation_accuracy": lambda v, f: number(v, f, 0, 1),
        "split_hash": lambda v, f: text(v, f, 128),
        "source": lambda v, f: text(v, f),
        "exported_at": lambda v, f: text(v, f, 64),
        "versions": lambda v, f: [text(x, f"{f}.{k}", 64) for k, x in mapping(v, f, max_keys=8).items()],
    }
    for key, value in provenance.items():
        if value is not None or key not in ("validation_accuracy", "split_hash"):
            checks[key](value, f"provenance.{key}")
