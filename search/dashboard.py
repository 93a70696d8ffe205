"""optuna-dashboard as `kmnist-search dashboard` serves it: optuna-dashboard's own app behind
two wrappers.

- A Host-header check. optuna-dashboard has no login. Bound to loopback it is reachable only
  from this machine, but a web page the user visits could still reach it through DNS
  rebinding (a name of the attacker's that resolves to 127.0.0.1); such requests carry the
  attacker's name in their Host header, so only the names this server is reached by are
  answered.
- Hyperparameter importance waits until a study has enough completed trials to mean
  something. optuna-dashboard draws it on every study page and has no option to switch it off
  or defer it: below the threshold the importance request is answered with the reason, which
  the page shows in place of bars.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna
from optuna.trial import TrialState

# the dashboard's evaluator (PED-ANOVA) compares the best 10% of trials with the rest and needs
# two trials there: below 20 completed trials its bars rank noise
IMPORTANCE_MIN_TRIALS = 20
IMPORTANCE_PATH = re.compile(r"^/api/studies/(\d+)/param_importances/?$")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")

WSGIApp = Callable[[dict[str, Any], Callable], Iterable[bytes]]


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

    def __init__(self, app: WSGIApp, allowed: Iterable[str] | None) -> None:
        self.app, self.allowed = app, None if allowed is None else set(allowed)

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        host = environ.get("HTTP_HOST", "").lower()
        if self.allowed is None or host in self.allowed:
            return self.app(environ, start_response)
        body = b"kmnist-search dashboard: unknown Host header; open the address the server printed\n"
        start_response("403 Forbidden", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]


def importance_deferred(app: WSGIApp, storage: optuna.storages.BaseStorage,
                        min_trials: int = IMPORTANCE_MIN_TRIALS) -> WSGIApp:
    """`app` with importance requests of studies under `min_trials` completed trials refused,
    with the reason (the page reports it instead of drawing bars)."""
    def wrapped(environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        match = IMPORTANCE_PATH.match(environ.get("PATH_INFO", ""))
        if match:
            try:
                complete = len(storage.get_all_trials(int(match.group(1)), deepcopy=False,
                                                      states=(TrialState.COMPLETE,)))
            except KeyError:  # no such study: the dashboard answers that itself
                complete = min_trials
            if complete < min_trials:
                reason = (f"it needs {min_trials} completed trials to rank the parameters; this study has "
                          f"{complete} so far")
                body = json.dumps({"reason": reason}).encode()
                start_response("400 Bad Request", [("Content-Type", "application/json"),
                                                   ("Content-Length", str(len(body)))])
                return [body]
        return app(environ, start_response)

    return wrapped


def dashboard_app(storage: optuna.storages.BaseStorage, artifact_store: Any,
                  allowed: Iterable[str] | None = None) -> WSGIApp:
    from optuna_dashboard import wsgi

    return HostCheck(importance_deferred(wsgi(storage, artifact_store=artifact_store), storage), allowed)


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        pass  # one line per request would bury the command's own output


def serve_dashboard(storage: optuna.storages.BaseStorage, host: str, port: int, artifact_store: Any) -> None:
    """Serve until interrupted."""
    app = dashboard_app(storage, artifact_store, allowed_hosts(host, port))
    server_class = WSGIServer
    if ":" in host:  # an IPv6 address
        server_class = type("WSGIServer6", (WSGIServer,), {"address_family": socket.AF_INET6})
    with make_server(host, port, app, server_class=server_class, handler_class=QuietHandler) as server:
        server.serve_forever()
