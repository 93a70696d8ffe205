"""Exported configurations: self-contained JSON or YAML files that `retrain` reads back.

Reading validates the file's shape only; whether the values fit a space is the caller's
check (spaces live upstream of storage).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

FORMAT = "kmnist-search-config/1"
REQUIRED_KEYS = ("format", "space", "family", "dataset", "params", "epochs", "seed", "val_fraction")
OPTIONAL_KEYS = ("provenance",)
FORMATS = ("json", "yaml")


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
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(
            f"{path} not found: export one with `kmnist-search export --study NAME -o {path}`"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read {path} ({error}): give a JSON or YAML configuration") from None
    try:
        config = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        first = str(error).splitlines()[0]
        raise ConfigError(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'} "
                          f"({first}): re-export it with `kmnist-search export`") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path} does not hold a configuration mapping: re-export it")
    unknown = sorted(set(config) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if unknown:
        raise ConfigError(f"{path} has unknown keys {', '.join(unknown)}: remove them "
                          f"(known: {', '.join(REQUIRED_KEYS + OPTIONAL_KEYS)})")
    missing = [k for k in REQUIRED_KEYS if k not in config]
    if missing:
        raise ConfigError(f"{path} lacks {', '.join(missing)}: re-export it with `kmnist-search export`")
    if config["format"] != FORMAT:
        raise ConfigError(f"{path} has format {config['format']!r}, expected {FORMAT!r}: re-export it")
    if not isinstance(config["params"], dict):
        raise ConfigError(f"{path}: params must be a mapping of parameter names to values")
    if not isinstance(config["epochs"], int) or config["epochs"] < 1:
        raise ConfigError(f"{path}: epochs must be a whole number of at least 1")
    return config
