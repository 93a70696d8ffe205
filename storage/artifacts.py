"""Where per-trial evidence (plots, CSVs) lives: an Optuna artifact store beside the storage.

For `sqlite:///DIR/NAME.db` the store is `DIR/NAME-artifacts/`, so
`optuna-dashboard sqlite:///DIR/NAME.db --artifact-dir DIR/NAME-artifacts` shows it.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore, upload_artifact

from storage.urls import sqlite_path

DEFAULT_ARTIFACT_DIR = Path("kmnist-search-artifacts")


def artifact_dir(storage_url: str, override: Path | None = None) -> Path:
    if override is not None:
        return Path(override)
    path = sqlite_path(storage_url)
    if path is None:
        return DEFAULT_ARTIFACT_DIR
    return path.with_name(f"{path.stem}-artifacts")


def open_artifact_store(folder: Path) -> FileSystemArtifactStore:
    folder.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(folder))


def attach(store: FileSystemArtifactStore, file_path: Path,
           target: optuna.Trial | optuna.Study) -> str:
    """Upload `file_path` to a running trial or to a study; returns the artifact id."""
    return upload_artifact(artifact_store=store, file_path=str(file_path), study_or_trial=target)


def safe_slug(name: str, always_hash: bool = False, max_length: int = 40) -> str:
    """`name` as one safe file-name component: letters, digits, '.', '_' and '-' only, never
    empty or dotted; a short hash of the whole name is appended when characters were changed
    or dropped (or always, where two names must never share a slug)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-")[:max_length] or "unnamed"
    if always_hash or slug != name:
        slug += "-" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return slug


def inside(folder: Path, *parts: str) -> Path:
    """folder/parts, resolved; ValueError if it would lie outside `folder`."""
    base = Path(folder).resolve()
    path = base.joinpath(*parts).resolve()
    if path != base and base not in path.parents:
        raise ValueError(f"{path} lies outside {base}")
    return path
