"""The tests' throwaway PostgreSQL server: the one the fleet benchmark uses,
benchmarks/pg_server.py, loaded by path (benchmarks are scripts, not a package; they must
not import the tests, so the one copy lives there)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "benchmarks_pg_server", Path(__file__).resolve().parents[1] / "benchmarks" / "pg_server.py")
_module = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _module  # dataclasses look their module up there
_spec.loader.exec_module(_module)

PostgresUnavailable = _module.PostgresUnavailable
PostgresServer = _module.PostgresServer
free_port = _module.free_port
postgres_server = _module.postgres_server
