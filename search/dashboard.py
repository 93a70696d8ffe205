"""optuna-dashboard as `kmnist-search dashboard` serves it: its own app, except that
hyperparameter importance waits until a study has enough completed trials to mean something.

optuna-dashboard draws importance on every study page and has no option to switch it off or
defer it, so its public WSGI app is wrapped: below the threshold the importance request is
answered with the reason, which the page shows in place of bars.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import Any

import optuna
from optuna.trial import TrialState

# the dashboard's evaluator (PED-ANOVA) compares the best 10% of trials with the rest and needs
# two trials there: below 20 completed trials its bars rank noise
IMPORTANCE_MIN_TRIALS = 20
IMPORTANCE_PATH = re.compile(r"^/api/studies/(\d+)/param_importances/?$")

WSGIApp = Callable[[dict[str, Any], Callable], Iterable[bytes]]


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


def dashboard_app(storage: optuna.storages.BaseStorage, artifact_store: Any) -> WSGIApp:
    from optuna_dashboard import wsgi

    return importance_deferred(wsgi(storage, artifact_store=artifact_store), storage)


def serve_dashboard(storage: optuna.storages.BaseStorage, host: str, port: int, artifact_store: Any) -> None:
    """Serve until interrupted, on the same server optuna-dashboard's run_server uses."""
    from bottle import run

    run(dashboard_app(storage, artifact_store), host=host, port=port)
