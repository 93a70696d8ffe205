"""The private names of Optuna and optuna-dashboard that kmnist-search relies on, in one place.

Checked against optuna 5.0.0 and optuna-dashboard 0.21.0 (CHECKED_AGAINST). Neither library
promises these names; tests/test_optuna_private.py fails, naming the private module, when an
upgrade moves or changes one. Nothing public does the same job:
- notes: optuna-dashboard's public get_note/save_note take a live Trial; appending to a
  finished trial's note needs the note's version and body from the study's system attributes.
- heartbeats: Optuna has no public way to ask whether a storage keeps heartbeats.
- the gRPC proxy: `kmnist-search proxy` serves Optuna's own service with a faster GetTrials,
  which needs the service class, its trial converter and the generated protobuf modules.

storage/proxy.py also reads the trial cache's internals (optuna.storages._cached_storage:
_read_trials_from_remote_storage, _lock, _studies, _trial_id_to_study_id_and_number); the
test checks those too.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from optuna.storages import BaseStorage
from optuna.storages._heartbeat import BaseHeartbeat  # loaded with optuna.storages anyway

CHECKED_AGAINST = {"optuna": "5.0.0", "optuna-dashboard": "0.21.0"}

__all__ = ["CHECKED_AGAINST", "BaseHeartbeat", "get_note_from_system_attrs", "grpc_messages",
           "grpc_servicer", "grpc_service_registration", "save_note_with_version"]


# optuna_dashboard is imported on first use: it imports scikit-learn (seconds), and workers
# and the proxy import this module through storage.resilient

def get_note_from_system_attrs(system_attrs: dict[str, Any], trial_id: int | None) -> dict[str, Any]:
    """A note's {"version": int, "body": str} from its study's system attributes (trial_id None:
    the study's own note); version 0 and an empty body where there is none."""
    from optuna_dashboard._note import get_note_from_system_attrs as private

    return private(system_attrs, trial_id)


def save_note_with_version(storage: BaseStorage, study_id: int, trial_id: int | None, version: int,
                           body: str) -> None:
    """Write a note as `version`; the dashboard shows the highest version's body."""
    from optuna_dashboard._note import save_note_with_version as private

    private(storage, study_id, trial_id, version, body)


# grpcio is optional (the postgresql extra): these import on use

def grpc_servicer() -> ModuleType:
    """optuna.storages._grpc.servicer: OptunaStorageProxyService and _to_proto_trial."""
    from optuna.storages._grpc import servicer

    return servicer


def grpc_messages() -> ModuleType:
    """optuna.storages._grpc.auto_generated.api_pb2: the proxy's protobuf messages."""
    from optuna.storages._grpc.auto_generated import api_pb2

    return api_pb2


def grpc_service_registration() -> ModuleType:
    """optuna.storages._grpc.auto_generated.api_pb2_grpc: add_StorageServiceServicer_to_server."""
    from optuna.storages._grpc.auto_generated import api_pb2_grpc

    return api_pb2_grpc
