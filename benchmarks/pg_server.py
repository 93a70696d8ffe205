"""A throwaway PostgreSQL server (Debian's postgresql package) for the fleet benchmark and
the tests (tests/pg_server.py loads this file).

Kept free of torch and numpy so that the fleet benchmark's stand-in workers stay small; the
product never starts a server, so the package is no home for it.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    """The server binaries are missing or cannot be run here; the message says why."""


@dataclass(frozen=True)
class PostgresServer:
    url: str
    log: Path
    port: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def postgres_server(max_connections: int = 100, settings: dict[str, str] | None = None
                    ) -> Iterator[PostgresServer]:
    """A server on a loopback port, trust authentication, user postgres; removed afterwards."""
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not binaries:
        raise PostgresUnavailable("PostgreSQL server binaries not installed (Debian package postgresql)")
    bin_dir = Path(binaries[-1])
    # not under pytest's tmp folder: that is private to root, and the server runs as postgres
    folder = Path(tempfile.mkdtemp(prefix="kmnist-search-pg-"))
    data, sockets = folder / "data", folder / "sockets"
    sockets.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        if shutil.which("runuser") is None:
            raise PostgresUnavailable("running as root without runuser: cannot start PostgreSQL")
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(folder, "postgres")
        shutil.chown(sockets, "postgres")
    port = free_port()
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c max_connections={max_connections}"
    for key, value in (settings or {}).items():
        options += f" -c {key}={value}"
    subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres",
                    "--auth=trust"], check=True, capture_output=True)
    subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w",
                    "-o", options, "start"], check=True, capture_output=True)
    try:
        yield PostgresServer(f"postgresql://postgres@127.0.0.1:{port}/postgres", folder / "log", port)
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
