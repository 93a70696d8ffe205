"""Many workers through `kmnist-search proxy`, and workers whose storage goes away."""

import json
import signal
import subprocess
import sys
import threading
import time

import optuna
import pytest
from optuna.trial import TrialState

from search.study import run_until
from storage.resilient import is_connection_error, open_resilient_storage
from tests.conftest import CLI, REPO, default_sigint, offline_env
from tests.pg_server import free_port

pytestmark = pytest.mark.slow


def start_proxy(database_url, port, log):
    proxy = subprocess.Popen([str(CLI), "proxy", "--storage", database_url, "--port", str(port),
                              "--check-every", "1", "--grace-period", "3"], env=offline_env(),
                             stdout=log, stderr=subprocess.STDOUT, text=True, preexec_fn=default_sigint)
    deadline = time.time() + 60
    while time.time() < deadline:
        assert proxy.poll() is None, "the proxy exited"
        try:
            open_resilient_storage(f"grpc://127.0.0.1:{port}", retry_for=0.1)
            return proxy
        except Exception:
            time.sleep(0.2)
    raise AssertionError("the proxy did not answer")


def stop(process):
    process.send_signal(signal.SIGINT)
    return process.wait(timeout=30)


def test_a_small_fleet_through_the_proxy_survives_a_sigkill(tmp_path, postgres_url):
    # the load test at CI size: 3 stand-in workers, the real proxy, one worker killed mid-trial.
    # The kill comes after 40 % of the new trials; the rest must outlast the 3-4 s it takes to
    # fail the dead worker's trial, or its retry is left queued behind the reached target: 20 new
    # trials leave the two survivors 7-8 s of work, enough on a loaded machine (12 left about 5)
    out = tmp_path / "fleet.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "fleet.py"), "--server", postgres_url, "--workers", "3",
         "--prepopulated", "60", "--via", "proxy", "--new-trials", "20", "--out", str(out)],
        env=offline_env(), capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    (run,) = json.loads(out.read_text())["configurations"]
    assert run["exact_total"] and run["finished"] == run["target_finished"] == 60 + 8 + 20, run
    assert run["documented_each_once"] and run["left_running"] == 0, run
    assert run["killed_workers"] == 1 and len(run["killed_trials"]) == 1, run
    assert run["killed_trials_retried"] == run["killed_trials_resumed"] == 1, run
    assert run["workers_gave_up"] == run["worker_outage_lines"] == 0, run


def test_a_storage_that_refuses_us_for_good_is_not_retried(postgres_url):
    missing = postgres_url.rsplit("/", 1)[0] + "/no_such_database"
    started = time.time()
    with pytest.raises(Exception) as error:
        open_resilient_storage(missing, retry_for=60)
    assert "no_such_database" in str(error.value) and not is_connection_error(error.value)
    assert time.time() - started < 30  # answered at once, not after the retry time


def test_a_trial_finishing_while_the_proxy_restarts_keeps_its_result(tmp_path, postgres_url, spawned):
    port = free_port()
    study = optuna.create_study(study_name="outage", storage=postgres_url, direction="maximize")
    study.enqueue_trial({"x": 0.5})
    lines = []
    with open(tmp_path / "proxy.log", "w") as log:
        proxy = start_proxy(postgres_url, port, log)
        spawned.append(proxy)
        # a grace period longer than the restart and gRPC's reconnect backoff: the trial is alive
        storage = open_resilient_storage(f"grpc://127.0.0.1:{port}", retry_for=60, heartbeat_interval=1,
                                         grace_period=30, say=lines.append)
        worker_study = optuna.load_study(study_name="outage", storage=storage)
        restarted = []

        def restart_proxy():
            proxy.kill()
            proxy.wait()
            time.sleep(3)
            restarted.append(start_proxy(postgres_url, port, log))
            spawned.append(restarted[0])

        def objective(trial):
            x = trial.suggest_float("x", 0, 1)
            for epoch in (1, 2, 3):
                time.sleep(1)
                trial.report(x, epoch)
                if epoch == 1:
                    threading.Thread(target=restart_proxy).start()  # down for the last epochs and the tell
            return x

        assert run_until(worker_study, objective, target=1)
        assert stop(restarted[0]) == 0
    (trial,) = optuna.load_study(study_name="outage", storage=postgres_url).get_trials()
    assert trial.state == TrialState.COMPLETE and trial.value == 0.5
    assert sorted(trial.intermediate_values) == [1, 2, 3]
    assert len(lines) == 2, lines
    assert "unreachable" in lines[0] and "retrying for up to 60 s" in lines[0]
    assert "reachable again after" in lines[1]


def test_the_proxy_answers_trial_reads_as_optunas_own_service_does(tmp_path):
    from storage.optuna_private import grpc_messages, grpc_servicer
    from storage.proxy import proxy_service

    api_pb2, OptunaStorageProxyService = grpc_messages(), grpc_servicer().OptunaStorageProxyService

    rdb = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'k.db'}")
    study = optuna.create_study(storage=rdb)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=6)
    running = [study.ask() for _ in range(2)]
    study.enqueue_trial({"x": 0.5})
    ours, optunas = proxy_service(rdb), OptunaStorageProxyService(optuna.storages.get_storage(rdb))
    ids = [t._trial_id for t in study.get_trials()]
    requests = [api_pb2.GetTrialsRequest(study_id=study._study_id, trial_id_greater_than=-1),
                api_pb2.GetTrialsRequest(study_id=study._study_id, trial_id_greater_than=ids[3],
                                         included_trial_ids=[running[0]._trial_id, ids[1]]),
                api_pb2.GetTrialsRequest(study_id=study._study_id, trial_id_greater_than=ids[-1])]
    for request in requests:
        answer = sorted(t.trial_id for t in ours.GetTrials(request, None).trials)
        assert answer == sorted(t.trial_id for t in optunas.GetTrials(request, None).trials)
    study.tell(running[1], 1.0)  # a change after the first reads is seen
    (changed,) = [t for t in ours.GetTrials(requests[1], None).trials if t.trial_id == running[1]._trial_id]
    assert changed.values == [1.0]


def proxy_stderr(database_url, host):
    """What `proxy --host HOST` wrote to stderr by the time it answered; then it is stopped."""
    port = free_port()
    proxy = subprocess.Popen([str(CLI), "proxy", "--storage", database_url, "--host", host, "--port",
                              str(port)], env=offline_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            assert proxy.poll() is None, proxy.communicate()[1]
            try:
                open_resilient_storage(f"grpc://127.0.0.1:{port}", retry_for=0.1)
                break
            except Exception:
                time.sleep(0.2)
    finally:
        proxy.terminate()
    return proxy.communicate(timeout=30)[1]


def test_the_proxy_warns_when_served_beyond_loopback(postgres_url):
    warnings = [line for line in proxy_stderr(postgres_url, "0.0.0.0").splitlines() if "warning" in line]
    assert warnings == ["kmnist-search proxy: warning: --host 0.0.0.0 serves beyond this machine, and the "
                        "gRPC storage proxy has no login or encryption: anyone who reaches the port can "
                        "read, change and delete every study; keep it on a private network"]
    assert "warning" not in proxy_stderr(postgres_url, "127.0.0.1")
