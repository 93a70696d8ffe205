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

from search.study import retry_callback
from storage.resilient import HEARTBEAT_ATTR, is_connection_error

SERVER_THREADS = 16


class StaleTrialReaper:
    """Fails and requeues running trials whose heartbeat attribute stopped changing.

    A running trial with no beat at all (its worker died between starting it and its first
    beat) is reaped after `grace_period` too, unless it carries one of Optuna's own
    heartbeats (a worker on the database directly: Optuna reaps those itself).
    """

    def __init__(self, rdb: optuna.storages.RDBStorage, grace_period: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rdb, self.grace_period, self.clock = rdb, grace_period, clock
        self.storage = optuna.storages.get_storage(rdb)  # cached: reads only unfinished and new trials
        self.seen: dict[int, tuple[object, float]] = {}  # trial id -> (beat, when it last changed)
        self.reaped: list[int] = []

    def sweep(self) -> list[int]:
        """One look at every study's running trials; returns the numbers of the trials failed."""
        now, running, failed = self.clock(), set(), []
        for frozen_study in self.storage.get_all_studies():
            study_id = frozen_study._study_id
            for trial in self.storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
                running.add(trial._trial_id)
                beat = trial.system_attrs.get(HEARTBEAT_ATTR)
                last = self.seen.get(trial._trial_id)
                if last is None or last[0] != beat:
                    self.seen[trial._trial_id] = (beat, now)
                    continue
                if self._stale(trial, beat, now - last[1]) and \
                        self._fail_and_requeue(frozen_study.study_name, trial._trial_id):
                    failed.append(trial.number)
        self.seen = {key: value for key, value in self.seen.items() if key in running}
        self.reaped += failed
        return failed

    def _stale(self, trial: optuna.trial.FrozenTrial, beat: dict | None, unchanged_s: float) -> bool:
        grace = beat.get("grace_s") or self.grace_period if beat else self.grace_period
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


def serve_proxy(rdb: optuna.storages.RDBStorage, host: str, port: int, grace_period: float,
                poll_s: float) -> None:
    """Serve `rdb` on host:port until interrupted, reaping dead workers' trials meanwhile."""
    stop = threading.Event()
    reaper = threading.Thread(target=reap_forever, daemon=True, name="reaper",
                              args=(StaleTrialReaper(rdb, grace_period), poll_s, stop))
    reaper.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # Optuna's docs: serve the cached storage, as get_storage gives it
            optuna.storages.run_grpc_proxy_server(optuna.storages.get_storage(rdb), host=host, port=port,
                                                  thread_pool=ThreadPoolExecutor(SERVER_THREADS))
    finally:
        stop.set()
