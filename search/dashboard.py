"""Serving optuna-dashboard on a study storage, behind a Host-header check.

optuna-dashboard has no login. Bound to loopback it is reachable only from this machine, but
a web page the user visits could still reach it through DNS rebinding (a name of the
attacker's that resolves to 127.0.0.1); such requests carry the attacker's name in their
Host header, so only the names this server is actually reached by are answered.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna
from optuna.artifacts import FileSystemArtifactStore

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def allowed_hosts(host: str, port: int) -> set[str] | None:
    """The Host headers to answer (with and without the port), or None to answer any: a server
    bound beyond loopback cannot know every name it is reached by."""
    if not is_loopback(host):
        return None
    names = {*LOOPBACK_NAMES, f"[{host}]" if ":" in host else host}
    return {name.lower() for name in names} | {f"{name}:{port}".lower() for name in names}


class HostCheck:
    """WSGI middleware: 403 for a request whose Host header is not one of `allowed`."""

    def __init__(self, app: Callable, allowed: Iterable[str] | None) -> None:
        self.app, self.allowed = app, None if allowed is None else set(allowed)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        host = environ.get("HTTP_HOST", "").lower()
        if self.allowed is None or host in self.allowed:
            return self.app(environ, start_response)
        body = b"kmnist-search dashboard: unknown Host header; open the address the server printed\n"
        start_response("403 Forbidden", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        pass  # one line per request would bury the command's own output


def serve_dashboard(storage: optuna.storages.BaseStorage, host: str, port: int,
                    artifact_store: FileSystemArtifactStore) -> None:
    """Serve until interrupted."""
    from optuna_dashboard import wsgi

    app = HostCheck(wsgi(storage, artifact_store=artifact_store), allowed_hosts(host, port))
    server_class = WSGIServer
    if ":" in host:  # an IPv6 address
        server_class = type("WSGIServer6", (WSGIServer,), {"address_family": socket.AF_INET6})
    with make_server(host, port, app, server_class=server_class, handler_class=QuietHandler) as server:
        server.serve_forever()
