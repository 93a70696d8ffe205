"""A worker's view of its storage: rides out outages, and beats through a storage proxy.

`ResilientStorage` wraps the storage a worker searches on. A call that fails because the
database or the proxy cannot be reached (connection refused, too many clients, server
restarting) is retried with backoff for `retry_for` seconds; one line says the storage is
unreachable and one that it is back. A finished trial's result is therefore written once the
storage returns; a storage that stays down raises StorageUnavailableError.

Optuna's gRPC proxy client has no heartbeat interface. Through it, the wrapper writes each
running trial's heartbeat as the trial system attribute HEARTBEAT_ATTR (through the same
proxy), and `kmnist-search proxy`, which holds the database, fails and retries trials whose
heartbeat stops changing (storage/proxy.py). On an RDB storage Optuna's own heartbeats are used.
"""

from __future__ import annotations

import abc
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from storage.optuna_private import BaseHeartbeat
from storage.urls import StorageError, open_proxy_storage, open_storage, proxy_address, storage_lock

HEARTBEAT_ATTR = "kmnist_search:heartbeat"
MAX_RETRIES = 3  # times a dead worker's trial is requeued
FIRST_DELAY_S = 0.5
MAX_DELAY_S = 15.0
DEFAULT_RETRY_FOR_S = 300

# PostgreSQL SQLSTATEs of a server that cannot take us now: class 08 (connection exceptions),
# too many connections, admin shutdown / crash shutdown / starting up
_TRANSIENT_SQLSTATES = ("53300", "57P01", "57P02", "57P03")
_TRANSIENT_FATALS = ("too many clients", "starting up", "shutting down", "in recovery mode",
                     "terminating connection", "remaining connection slots")
_TRANSIENT_GRPC_CODES = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED")
# what the proxy passes on (status UNKNOWN) when its own database connection fails
_PROXY_DATABASE_ERRORS = ("OperationalError", "An exception is raised during the commit", "connection")


class StorageUnavailableError(StorageError):
    """The storage stayed unreachable longer than the worker's retry time."""


def _causes(error: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    while error is not None and error not in chain:
        chain.append(error)
        orig = getattr(error, "orig", None)  # sqlalchemy's DBAPIError keeps the driver's error
        if orig is not None and orig not in chain:
            chain.append(orig)
        error = error.__cause__ or error.__context__
    return chain


def retry_callback() -> RetryHeartbeatStaleTrialCallback:
    """Requeues a trial whose worker died (stale heartbeat) with the same parameters."""
    return RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)


BUSY, DOWN = "busy", "down"


def connection_trouble(error: BaseException) -> str | None:
    """BUSY: the server is there but cannot take us now (too many clients, starting up);
    DOWN: nothing answers or the connection broke; None: not a connection problem (a bad
    request, a missing study or database, a refused login, SQLite, whose busy timeout
    already covers locks)."""
    for cause in _causes(error):
        if isinstance(cause, ConnectionError):  # sockets, and the proxy client's wait for its server
            return DOWN
        code = getattr(cause, "code", None)
        if callable(code) and type(cause).__module__.startswith("grpc"):
            name = getattr(code(), "name", "")
            details = cause.details() if callable(getattr(cause, "details", None)) else ""
            if name in _TRANSIENT_GRPC_CODES:
                return DOWN
            from_database = any(text in (details or "") for text in _PROXY_DATABASE_ERRORS)
            return BUSY if name == "UNKNOWN" and from_database else None
        module = type(cause).__module__
        if module.startswith("sqlite3"):
            return None
        if type(cause).__name__ in ("OperationalError", "InterfaceError") and not module.startswith(
                "sqlalchemy"):
            sqlstate = getattr(cause, "sqlstate", None)
            if sqlstate is not None:
                return BUSY if sqlstate.startswith("08") or sqlstate in _TRANSIENT_SQLSTATES else None
            # refused at connection time, where the driver gives no SQLSTATE: the server's
            # FATAL message says whether it is busy (worth waiting) or refuses us for good
            text = str(cause)
            if "FATAL:" not in text:
                return DOWN
            return BUSY if any(marker in text for marker in _TRANSIENT_FATALS) else None
    return None


def is_connection_error(error: BaseException) -> bool:
    """Whether `error` means the storage cannot be reached now (worth retrying)."""
    return connection_trouble(error) is not None


_STORAGE_METHODS = sorted(
    name for name, member in vars(BaseStorage).items() if callable(member) and not name.startswith("_")
)


def _delegate(name: str) -> Callable:
    def method(self: ResilientStorage, *args: Any, **kwargs: Any) -> Any:
        return self._call(name, *args, **kwargs)

    method.__name__ = name
    return method


class OutageRetry:
    """Runs storage calls, retrying connection failures with backoff for `retry_for` seconds.

    Shared by a worker's threads: one line when the storage goes away, one when it is back;
    once it has given up, every later call fails at once. Before the storage has answered
    once, only a busy server is waited for: a worker pointed at a wrong address stops at once."""

    def __init__(self, url: str, retry_for: float, say: Callable[[str], None]) -> None:
        self.url, self.retry_for, self._say = url, retry_for, say
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._gave_up = False
        self.reached = False  # answered once: from now on, a storage that does not answer is an outage

    def __call__(self, work: Callable[[], Any], written_anyway: Callable[[], bool] | None = None) -> Any:
        """`work()`; `written_anyway()` tells whether a write that raised UpdateFinishedTrialError
        on a retry had in fact been committed by the attempt that lost its connection."""
        delay, waited = FIRST_DELAY_S, False
        while True:
            if self._gave_up:
                raise self.unavailable()
            try:
                result = work()
            except UpdateFinishedTrialError:
                if waited and written_anyway is not None and written_anyway():
                    return True
                raise
            except Exception as error:
                trouble = connection_trouble(error)
                # nothing answering at the first contact is likelier a wrong address than an outage
                if trouble is None or (trouble == DOWN and not self.reached):
                    raise
                waited = True
                self._outage(error)
                if not self._gave_up:
                    time.sleep(delay)
                    delay = min(2 * delay, MAX_DELAY_S)
                continue
            self.reached = True
            if waited:
                self._recovered()
            return result

    def unavailable(self) -> StorageUnavailableError | None:
        """The error to end with once retrying has given up (None before)."""
        if not self._gave_up:
            return None
        return StorageUnavailableError(f"storage {self.url} unreachable for {self.retry_for:g} s: "
                                       "bring it back and run the same command again")

    def _outage(self, error: BaseException) -> None:
        with self._lock:
            now = time.monotonic()
            if self._down_since is None:
                self._down_since = now
                text = str(error).strip()
                reason = text.splitlines()[0][:160] if text else type(error).__name__
                self._say(f"storage {self.url} unreachable ({reason}): retrying for up to "
                          f"{self.retry_for:g} s")
            elif now - self._down_since >= self.retry_for:
                self._gave_up = True

    def _recovered(self) -> None:
        with self._lock:
            if self._down_since is not None and not self._gave_up:
                seconds = time.monotonic() - self._down_since
                self._say(f"storage {self.url} reachable again after {seconds:.0f} s")
                self._down_since = None


def open_resilient_storage(url: str, retry_for: float = DEFAULT_RETRY_FOR_S,
                           heartbeat_interval: int | None = None, grace_period: int | None = None,
                           stale_trial_callback: Callable | None = None,
                           say: Callable[[str], None] = print, must_exist: bool = False) -> ResilientStorage:
    """A worker's storage: opening it is retried like every later call."""
    retry = OutageRetry(url, retry_for, say)
    if proxy_address(url) is not None:  # a short wait per attempt: the retries wait the rest
        inner = retry(lambda: open_proxy_storage(url, timeout=1.0))
    else:
        inner = retry(lambda: open_storage(url, heartbeat_interval, grace_period, stale_trial_callback,
                                           must_exist=must_exist))
    return ResilientStorage(inner, retry, heartbeat_interval, grace_period)


class ResilientStorage(BaseStorage, BaseHeartbeat):
    """`inner` with outage retries; heartbeats as system attributes where it has none."""

    def __init__(self, inner: BaseStorage, retry: OutageRetry, heartbeat_interval: int | None = None,
                 grace_period: int | None = None) -> None:
        # an RDBStorage gets Optuna's in-process trial cache, as optuna.load_study would give it
        self._inner = optuna.storages.get_storage(inner)
        self._native_heartbeat = isinstance(self._inner, BaseHeartbeat)
        self._retry, self._interval, self._grace = retry, heartbeat_interval, grace_period

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        method = getattr(self._inner, name)
        return self._retry(lambda: method(*args, **kwargs))

    def unavailable(self) -> StorageUnavailableError | None:
        return self._retry.unavailable()

    @contextmanager
    def lock(self) -> Iterator[None]:
        """storage.urls.storage_lock of this storage, its taking retried like any call (a
        proxy's storage has none: the proxy's clients cannot lock its database)."""
        def take() -> ExitStack:
            held = ExitStack()
            held.enter_context(storage_lock(self._retry.url))
            return held

        with self._retry(take):
            yield

    for _name in _STORAGE_METHODS:
        locals()[_name] = _delegate(_name)
    del _name

    def set_trial_state_values(self, trial_id: int, state: TrialState,
                               values: Sequence[float] | None = None) -> bool:
        # the tell of a finished trial: retried until written, never lost to a dropped reply
        return self._retry(lambda: self._inner.set_trial_state_values(trial_id, state=state, values=values),
                           lambda: self._inner.get_trial(trial_id).state == state)

    # heartbeats: Optuna's own on an RDB storage, a system attribute through the proxy

    def get_heartbeat_interval(self) -> int | None:
        return self._inner.get_heartbeat_interval() if self._native_heartbeat else self._interval

    def record_heartbeat(self, trial_id: int) -> None:
        # one attempt per beat, no backoff: after an outage the next beat goes out at once
        try:
            if self._native_heartbeat:
                self._inner.record_heartbeat(trial_id)
            else:
                self._inner.set_trial_system_attr(trial_id, HEARTBEAT_ATTR,
                                                  {"at": time.time(), "grace_s": self._grace})
        except UpdateFinishedTrialError:
            pass  # a finished trial needs no beat
        except Exception as error:
            if connection_trouble(error) is None:
                raise  # the main thread reports outages

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        # through the proxy, the proxy process finds stale trials (storage/proxy.py)
        return self._call("_get_stale_trial_ids", study_id) if self._native_heartbeat else []

    def get_heartbeat_stale_trial_callback(self) -> Callable | None:
        return self._inner.get_heartbeat_stale_trial_callback() if self._native_heartbeat else None


abc.update_abstractmethods(ResilientStorage)
