"""Storage URLs: validate them, and open Optuna RDB storages safely.

SQLite is the embedded default. It is put in WAL mode with a long busy timeout so the
dashboard can read while workers write (optuna-dashboard#545: "database is locked").
`grpc://HOST:PORT` names a `kmnist-search proxy` (Optuna's gRPC storage proxy) in front of
a database, so that many workers share the proxy's few database connections.
"""

from __future__ import annotations

import fcntl
import re
import sqlite3
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, urlparse

import optuna
import sqlalchemy
import sqlalchemy.exc
from sqlalchemy.pool import NullPool

DEFAULT_STORAGE = "sqlite:///kmnist-search.db"
SQLITE_MAGIC = b"SQLite format 3\x00"
SUPPORTED_SCHEMES = ("sqlite", "postgresql", "mysql")
BUSY_TIMEOUT_S = 60
PROXY_PREFIX = "grpc://"
PROXY_CONNECT_TIMEOUT_S = 5.0


STORAGE_ENV = "KMNIST_SEARCH_STORAGE"  # a URL kept out of argv, shell history and `ps`
USERINFO_PASSWORD = re.compile(r"(//[^/@:]*):[^/@]*@")


class StorageError(RuntimeError):
    """A storage URL or file that cannot be used; the message says why and what to do."""


def redact_url(url: str) -> str:
    """`url` with any password replaced by ***: the form every message, file and log shows.

    The password belongs in PGPASSWORD or ~/.pgpass, not in a URL others may see."""
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except Exception:  # not a database URL (grpc://, a typo): mask what looks like a password
        return USERINFO_PASSWORD.sub(r"\1:***@", url)
    return parsed.render_as_string(hide_password=True) if parsed.password else url


def redact_text(text: str, url: str) -> str:
    """`text` with the password of `url` (if any) masked wherever it appears."""
    try:
        password = sqlalchemy.engine.make_url(url).password
    except Exception:
        match = USERINFO_PASSWORD.search(url)
        password = match.group(0)[len(match.group(1)) + 1:-1] if match else None
    text = text.replace(url, redact_url(url))
    for secret in {str(password), quote(str(password), safe="")} if password else ():
        text = text.replace(secret, "***")
    return text


def sqlite_path(url: str) -> Path | None:
    """The file behind a sqlite:/// URL, or None for other databases."""
    if not url.startswith("sqlite:///"):
        return None
    return Path(url[len("sqlite:///") :])


def proxy_address(url: str) -> tuple[str, int] | None:
    """(host, port) of a grpc://HOST:PORT proxy URL, or None for database URLs."""
    if not url.startswith(PROXY_PREFIX):
        return None
    parsed = urlparse(url)
    try:
        port = parsed.port
    except ValueError:
        port = None
    if not parsed.hostname or port is None or parsed.path not in ("", "/"):
        raise StorageError(f"storage URL {redact_url(url)!r} is not a proxy address: use grpc://HOST:PORT, "
                           "the address `kmnist-search proxy` prints")
    return parsed.hostname, port


def open_proxy_storage(url: str, timeout: float = PROXY_CONNECT_TIMEOUT_S) -> optuna.storages.BaseStorage:
    """Optuna's gRPC client for the `kmnist-search proxy` at `url`, once it answers."""
    address = proxy_address(url)
    assert address is not None
    try:
        import grpc  # noqa: F401  (GrpcStorageProxy imports it lazily, failing late)
    except ImportError:
        raise StorageError("grpc:// storage needs the grpcio package: "
                           "pip install -e '.[postgresql]'") from None
    host, port = address
    proxy = optuna.storages.GrpcStorageProxy(host=host, port=port)
    try:
        proxy.wait_server_ready(timeout=timeout)
    except ConnectionError as error:
        proxy.close()
        raise StorageError(f"no storage proxy answers at {host}:{port}: start one there with "
                           "`kmnist-search proxy --storage postgresql://...`") from error
    return proxy


def check_storage_url(url: str) -> None:
    if proxy_address(url) is not None:
        return
    scheme = urlparse(url).scheme.split("+")[0]
    if scheme not in SUPPORTED_SCHEMES or "://" not in url:
        raise StorageError(
            f"storage URL {redact_url(url)!r} is not supported: use sqlite:///FILE.db, "
            "postgresql://USER:PASSWORD@HOST/DB or grpc://HOST:PORT (a kmnist-search proxy)"
        )
    path = sqlite_path(url)
    if scheme == "sqlite" and (path is None or str(path) in ("", ":memory:")):
        raise StorageError(
            f"storage URL {redact_url(url)!r} names no file: use sqlite:///FILE.db (a path after three "
            "slashes)"
        )
    if path is not None:
        _check_sqlite_file(path)


def _check_sqlite_file(path: Path) -> None:
    if path.is_dir():
        raise StorageError(f"storage {path} is a directory: name a .db file inside it")
    if not path.parent.exists():
        raise StorageError(f"folder {path.parent} of storage {path} does not exist: create it first")
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb") as f:
        if f.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
            raise StorageError(
                f"storage {path} is not a SQLite database: point --storage at a .db file or a new path"
            )
    try:
        # not mode=ro: a read-only connection cannot rebuild a WAL index and then misreports
        # a healthy database as malformed
        with sqlite3.connect(path, timeout=BUSY_TIMEOUT_S) as connection:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    except sqlite3.DatabaseError as error:
        raise StorageError(f"storage {path} is unreadable ({error}): restore it from a backup "
                           "or use a new path") from None
    if tables and "studies" not in tables:
        raise StorageError(
            f"storage {path} is a SQLite database of another program: use a new path for Optuna"
        )


def _enable_wal(path: Path) -> None:
    # WAL is a property of the file: set once, every later connection reads and writes
    # concurrently without readers blocking the writer.
    with sqlite3.connect(path, timeout=BUSY_TIMEOUT_S) as connection:
        connection.execute("PRAGMA journal_mode=WAL")


@contextmanager
def storage_lock(url: str) -> Iterator[None]:
    """One process at a time, across every worker of a storage: a file lock beside a SQLite
    file, a session advisory lock in PostgreSQL, nothing elsewhere."""
    path = sqlite_path(url)
    if path is not None:
        with open(path.with_name(path.name + ".lock"), "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)  # released when the file closes
            yield
        return
    if not url.startswith("postgresql"):
        yield
        return
    key = zlib.crc32(b"kmnist-search")
    engine = sqlalchemy.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": key})
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
    finally:
        engine.dispose()


def open_storage(url: str, heartbeat_interval: int | None = None, grace_period: int | None = None,
                 stale_trial_callback: Callable | None = None,
                 must_exist: bool = False) -> optuna.storages.BaseStorage:
    """An RDB storage for `url`, creating the SQLite file if needed; with `must_exist` (the
    commands that only read or join a study) a missing SQLite file is an error, not created.
    For grpc:// the proxy's client."""
    if proxy_address(url) is not None:
        return open_proxy_storage(url)
    check_storage_url(url)
    path = sqlite_path(url)
    if must_exist and path is not None and (not path.exists() or path.stat().st_size == 0):
        raise StorageError(f"no storage at {path}: check --storage (a study's file is created by "
                           "`kmnist-search start`)")
    engine_kwargs: dict = {}
    if path is not None:
        try:
            _enable_wal(path)
        except sqlite3.Error as error:
            raise StorageError(f"cannot write storage {path} ({error}): check its permissions "
                               "or use another path") from None
        # no pooled idle connections: one that outlives a killed writer can read a stale WAL index
        engine_kwargs = {"connect_args": {"timeout": BUSY_TIMEOUT_S}, "poolclass": NullPool}
    else:
        engine_kwargs = {"pool_pre_ping": True}
    try:
        # RDBStorage creates tables and stamps the schema version in separate steps:
        # processes opening a new database together would race ("table already exists")
        with storage_lock(url):
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=stale_trial_callback,
            )
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError, RuntimeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise StorageError(redact_text(f"cannot open storage {url}: {first_line}", url)) from None
