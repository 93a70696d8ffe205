"""The tests' throwaway PostgreSQL server: the one the fleet benchmark uses,
benchmarks/pg_server.py, loaded by path (benchmarks are scripts, not a package; they must
not import the tests, so the one copy lives there)."""

from __future__ import annotations

from tests.benchmark_scripts import load_benchmark

_module = load_benchmark("pg_server")

PostgresUnavailable = _module.PostgresUnavailable
PostgresServer = _module.PostgresServer
free_port = _module.free_port
postgres_server = _module.postgres_server
