"""Where per-trial evidence (plots, CSVs) lives: an Optuna artifact store beside the storage.

For `sqlite:///DIR/NAME.db` the store is `DIR/NAME-artifacts/`, so
`optuna-dashboard sqlite:///DIR/NAME.db --artifact-dir DIR/NAME-artifacts` shows it.
"""

from __future__ import annotations

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
