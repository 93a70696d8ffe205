"""The private names of Optuna and optuna-dashboard that storage/optuna_private.py wraps (and
storage/proxy.py reads) still exist and behave as the product expects.

A failure names the private module that changed: update storage/optuna_private.py for the
new version before widening the version range in pyproject.toml.
"""

from __future__ import annotations

import importlib
import inspect
import time
from importlib.metadata import version

import optuna
import optuna_dashboard
import pytest

from storage.optuna_private import (
    CHECKED_AGAINST,
    BaseHeartbeat,
    get_note_from_system_attrs,
    grpc_messages,
    grpc_servicer,
    save_note_with_version,
)

# (private module, name in it, the parameters we call it with; None: not called, only used)
RELIED_ON = [
    ("optuna_dashboard._note", "get_note_from_system_attrs", ["system_attrs", "trial_id"]),
    ("optuna_dashboard._note", "save_note_with_version", ["storage", "study_id", "trial_id", "ver", "body"]),
    ("optuna.storages._heartbeat", "BaseHeartbeat", None),
    ("optuna.storages._heartbeat", "BaseHeartbeat.record_heartbeat", ["self", "trial_id"]),
    ("optuna.storages._heartbeat", "BaseHeartbeat._get_stale_trial_ids", ["self", "study_id"]),
    ("optuna.storages._heartbeat", "BaseHeartbeat.get_heartbeat_interval", ["self"]),
    ("optuna.storages._heartbeat", "BaseHeartbeat.get_heartbeat_stale_trial_callback", ["self"]),
    ("optuna.storages._grpc.servicer", "OptunaStorageProxyService", ["storage"]),
    ("optuna.storages._grpc.servicer", "OptunaStorageProxyService.GetTrials", ["self", "request", "context"]),
    ("optuna.storages._grpc.servicer", "_to_proto_trial", ["trial"]),
    ("optuna.storages._grpc.auto_generated.api_pb2", "GetTrialsRequest", None),
    ("optuna.storages._grpc.auto_generated.api_pb2", "GetTrialsReply", None),
    ("optuna.storages._grpc.auto_generated.api_pb2_grpc", "add_StorageServiceServicer_to_server",
     ["servicer", "server"]),
    ("optuna.storages._cached_storage", "_CachedStorage._read_trials_from_remote_storage",
     ["self", "study_id"]),
]


NOTES = "optuna_dashboard._note"


def changed(module: str, what: str) -> str:
    installed = {name: version(name) for name in CHECKED_AGAINST}
    return (f"private API changed: {module}.{what} (checked against {CHECKED_AGAINST}, installed "
            f"{installed}); update storage/optuna_private.py")


@pytest.mark.parametrize(("module", "name", "parameters"), RELIED_ON,
                         ids=[f"{module}.{name}" for module, name, _ in RELIED_ON])
def test_each_private_name_still_exists_with_the_parameters_we_pass(module, name, parameters):
    try:
        found = importlib.import_module(module)
    except ImportError as error:
        pytest.fail(changed(module, f"(module cannot be imported: {error})"))
    for part in name.split("."):
        if not hasattr(found, part):
            pytest.fail(changed(module, f"{name} is gone"))
        found = getattr(found, part)
    if parameters is not None:
        actual = list(inspect.signature(found).parameters)
        assert actual == parameters, changed(module, f"{name} now takes {actual}, not {parameters}")


def test_a_note_written_with_a_version_reads_back_as_the_dashboard_reads_it(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'k.db'}")
    storage, study_id = study._storage, study._study_id
    study.tell(study.ask(), 1.0)
    trial_id = study.trials[0]._trial_id

    def note(trial_id):
        return get_note_from_system_attrs(storage.get_study_system_attrs(study_id), trial_id)

    assert note(trial_id) == {"version": 0, "body": ""}, changed(NOTES, "(no note)")
    long = "x" * 5000 + "end"  # more than one system attribute holds
    save_note_with_version(storage, study_id, trial_id, 1, long)
    assert note(trial_id) == {"version": 1, "body": long}, changed(NOTES, "(long note)")
    save_note_with_version(storage, study_id, trial_id, 2, "short")  # the longer body's pieces go
    assert note(trial_id) == {"version": 2, "body": "short"}, changed(NOTES, "(rewrite)")
    # the same notes as optuna-dashboard's public functions write and read them
    save_note_with_version(storage, study_id, None, 1, "the study's note")
    assert optuna_dashboard.get_note(study) == "the study's note", changed(NOTES, "(study)")
    live = study.ask()
    optuna_dashboard.save_note(live, "public")
    assert note(live._trial_id) == {"version": 1, "body": "public"}, changed(NOTES, "(public)")


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_heartbeat_storages_are_told_apart_and_report_their_stale_trials(tmp_path):
    rdb = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'k.db'}", heartbeat_interval=1, grace_period=1)
    assert isinstance(rdb, BaseHeartbeat), changed("optuna.storages._heartbeat", "BaseHeartbeat (RDBStorage)")
    # the wrapper beats by itself wherever a storage is not one
    assert not issubclass(optuna.storages.GrpcStorageProxy, BaseHeartbeat)
    assert not isinstance(optuna.storages.InMemoryStorage(), BaseHeartbeat)
    study = optuna.create_study(storage=rdb)
    trial = study.ask()
    rdb.record_heartbeat(trial._trial_id)
    assert rdb.get_heartbeat_interval() == 1
    assert rdb._get_stale_trial_ids(study._study_id) == [], changed("optuna.storages._heartbeat", "(fresh)")
    time.sleep(2.5)  # past the grace period
    assert rdb._get_stale_trial_ids(study._study_id) == [trial._trial_id], \
        changed("optuna.storages._heartbeat", "_get_stale_trial_ids (stale)")


def test_the_trial_cache_and_the_proxy_service_hold_what_the_proxy_reads(tmp_path):
    rdb = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'k.db'}")
    study = optuna.create_study(storage=rdb)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    cache = optuna.storages.get_storage(rdb)
    cache._read_trials_from_remote_storage(study._study_id)
    with cache._lock:
        cached = cache._studies[study._study_id].trials
        numbers = cache._trial_id_to_study_id_and_number
        assert sorted(cached) == [0, 1], changed("optuna.storages._cached_storage", "_studies[...].trials")
        assert all(numbers[t._trial_id] == (study._study_id, t.number) for t in cached.values()), \
            changed("optuna.storages._cached_storage", "_trial_id_to_study_id_and_number")
    servicer, api_pb2 = grpc_servicer(), grpc_messages()
    proto = servicer._to_proto_trial(cached[1])
    assert isinstance(proto, api_pb2.Trial) and proto.trial_id == cached[1]._trial_id, \
        changed("optuna.storages._grpc.servicer", "_to_proto_trial")
    request = api_pb2.GetTrialsRequest(study_id=study._study_id, trial_id_greater_than=cached[0]._trial_id)
    reply = servicer.OptunaStorageProxyService(cache).GetTrials(request, None)
    assert [t.trial_id for t in reply.trials] == [cached[1]._trial_id], \
        changed("optuna.storages._grpc.servicer", "OptunaStorageProxyService.GetTrials")
