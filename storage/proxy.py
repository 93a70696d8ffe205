"""`kmnist-search proxy`: one process holds the database, many workers talk to it over gRPC.

It serves the storage with Optuna's gRPC storage proxy and finds dead workers: Optuna's
proxy client has no heartbeats, so workers beat through it as a trial system attribute
(storage/resilient.py) and the reaper here, which reads the database directly, fails a
running trial whose beat has not changed for its grace period and requeues it with the same
parameters (the product's retry callback), so the retry resumes the trial's checkpoint.

Staleness is judged by the reaper's own clock, from when it last saw the beat change: the
workers' clocks need not agree with it. A trial is failed between `grace` and
`grace + 2 * poll` seconds after its last beat (defaults: 30-50 s).
"""

from __future__ import annotations

import sys
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import optuna
import sqlalchemy
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from storage.resilient import HEARTBEAT_ATTR, is_connection_error, retry_callback

SERVER_THREADS = 16


MAX_GRACE_S = 24 * 3600


def valid_beat(beat: object) -> bool:
    """A heartbeat as workers write it: a small mapping whose optional grace is 1 s to a day."""
    if not isinstance(beat, dict) or len(beat) > 8:
        return False
    grace = beat.get("grace_s")
    return grace is None or (isinstance(grace, (int, float)) and not isinstance(grace, bool)
                             and 1 <= grace <= MAX_GRACE_S)


class StaleTrialReaper:
    """Fails and requeues running trials whose heartbeat attribute stopped changing.

    A running trial with no beat at all (its worker died between starting it and its first
    beat) is reaped after `grace_period` too, unless it carries one of Optuna's own
    heartbeats (a worker on the database directly: Optuna reaps those itself).
    """

    def __init__(self, rdb: optuna.storages.RDBStorage, grace_period: float,
                 clock: Callable[[], float] = time.monotonic,
                 say: Callable[[str], None] = lambda line: print(f"kmnist-search proxy: {line}",
                                                                 file=sys.stderr, flush=True)) -> None:
        self.rdb, self.grace_period, self.clock = rdb, grace_period, clock
        self.storage = optuna.storages.get_storage(rdb)
        self.seen: dict[int, tuple[object, float]] = {}  # trial id -> (beat, when it last changed)
        self.reaped: list[int] = []
        self.warned: set[int] = set()  # trials whose malformed beat was reported
        self.say = say

    def sweep(self) -> list[int]:
        """One look at every study's running trials; returns the numbers of the trials failed."""
        now, running, failed = self.clock(), set(), []
        for frozen_study in self.storage.get_all_studies():
            # the running trials' rows only, not the whole study's
            running_now = self.rdb._get_trials(frozen_study._study_id, states=(TrialState.RUNNING,),
                                               included_trial_ids=set(), trial_id_greater_than=-1)
            for trial in running_now:
                running.add(trial._trial_id)
                try:  # one bad trial (a forged beat, a broken attribute) never stops the sweep
                    if self._check(frozen_study.study_name, trial, now):
                        failed.append(trial.number)
                except Exception as error:
                    if is_connection_error(error):
                        raise
                    self.say(f"skipped trial {trial.number} of study {frozen_study.study_name!r}: {error!r}")
        self.seen = {key: value for key, value in self.seen.items() if key in running}
        self.reaped += failed
        return failed

    def _check(self, study_name: str, trial: optuna.trial.FrozenTrial, now: float) -> bool:
        """Whether this sweep failed and requeued `trial`."""
        beat = trial.system_attrs.get(HEARTBEAT_ATTR)
        if beat is not None and not valid_beat(beat):
            if trial._trial_id not in self.warned:
                self.warned.add(trial._trial_id)
                self.say(f"trial {trial.number} of study {study_name!r} has a malformed heartbeat "
                         f"{str(beat)[:80]!r}: judged by the proxy's grace period")
            beat = {"bad": repr(beat)[:200]}  # still compared between sweeps, without its grace
        last = self.seen.get(trial._trial_id)
        if last is None or last[0] != beat:
            self.seen[trial._trial_id] = (beat, now)
            return False
        return self._stale(trial, beat, now - last[1]) and self._fail_and_requeue(study_name, trial._trial_id)

    def _stale(self, trial: optuna.trial.FrozenTrial, beat: dict | None, unchanged_s: float) -> bool:
        grace = beat.get("grace_s") if beat else None  # valid_beat checked it, or it is None
        grace = grace if isinstance(grace, (int, float)) else self.grace_period
        return unchanged_s > grace and (beat is not None or not self._has_native_heartbeat(trial))

    def forget(self) -> None:
        """After a failed sweep: workers could not beat meanwhile either, so start observing anew."""
        self.seen.clear()

    def _has_native_heartbeat(self, trial: optuna.trial.FrozenTrial) -> bool:
        with self.rdb.engine.connect() as connection:
            row = connection.execute(sqlalchemy.text("SELECT 1 FROM trial_heartbeats WHERE trial_id = :id"),
                                     {"id": trial._trial_id}).first()
        return row is not None

    def _fail_and_requeue(self, study_name: str, trial_id: int) -> bool:
        try:
            if not self.storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                return False
        except UpdateFinishedTrialError:  # it finished (or another proxy reaped it) meanwhile
            return False
        study = optuna.load_study(study_name=study_name, storage=self.storage)
        retry_callback()(study, self.storage.get_trial(trial_id))
        return True


def reap_forever(reaper: StaleTrialReaper, poll_s: float, stop: threading.Event) -> None:
    while not stop.wait(poll_s):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                reaper.sweep()
        except Exception as error:
            reaper.forget()
            if not is_connection_error(error):  # keep serving; say why this sweep failed
                print(f"kmnist-search proxy: checking for dead workers failed: {error!r}", file=sys.stderr)


def proxy_service(rdb: optuna.storages.RDBStorage):
    """Optuna's proxy service over Optuna's trial cache, answering GetTrials in time that does
    not grow with the study.

    A client asks for its unfinished trials and those newer than it has seen. Optuna's service
    lists and sorts every trial of the study in Python for each such call, the load test's
    growth with study size. Here the cache reads the new and unfinished rows as before, and
    the answer is picked by trial number (numbers follow trial ids within a study).
    """
    import grpc

    from storage.optuna_private import grpc_messages, grpc_servicer

    servicer, api_pb2 = grpc_servicer(), grpc_messages()
    cache = optuna.storages.get_storage(rdb)  # Optuna's docs: serve the cached storage

    class IncrementalTrialsService(servicer.OptunaStorageProxyService):
        def GetTrials(self, request, context):  # noqa: N802 (the gRPC method's name)
            try:
                cache._read_trials_from_remote_storage(request.study_id)
            except KeyError as error:
                context.abort(code=grpc.StatusCode.NOT_FOUND, details=str(error))
            with cache._lock:
                trials = cache._studies[request.study_id].trials
                numbers = cache._trial_id_to_study_id_and_number
                newer = numbers.get(request.trial_id_greater_than, (None, -1))[1] + 1
                if request.trial_id_greater_than >= 0 and newer == 0:  # not cached: pick by id
                    chosen = [t for t in trials.values() if t._trial_id > request.trial_id_greater_than]
                else:
                    chosen = [trials[n] for n in range(newer, len(trials)) if n in trials]
                chosen += [trials[numbers[i][1]] for i in request.included_trial_ids
                           if i <= request.trial_id_greater_than and i in numbers]
                return api_pb2.GetTrialsReply(trials=[servicer._to_proto_trial(t) for t in chosen])

    return IncrementalTrialsService(cache)


def serve_proxy(rdb: optuna.storages.RDBStorage, host: str, port: int, grace_period: float,
                poll_s: float) -> None:
    """Serve `rdb` on host:port until interrupted, reaping dead workers' trials meanwhile."""
    import grpc

    from storage.optuna_private import grpc_service_registration

    server = grpc.server(ThreadPoolExecutor(SERVER_THREADS))
    grpc_service_registration().add_StorageServiceServicer_to_server(proxy_service(rdb), server)
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise RuntimeError("the port is taken or the address is not this machine's")
    stop = threading.Event()
    reaper = threading.Thread(target=reap_forever, daemon=True, name="reaper",
                              args=(StaleTrialReaper(rdb, grace_period), poll_s, stop))
    reaper.start()
    server.start()
    try:
        server.wait_for_termination()
    finally:
        stop.set()
        server.stop(grace=None)
