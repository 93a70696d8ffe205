"""Many workers, crashed workers and Ctrl-C: exact totals, nothing lost, nothing locked."""

import collections
import os
import signal
import socket
import subprocess
import threading
import time

import optuna
import pytest

from search.study import FINISHED, SurplusTrialError, TrialGuard, run_until
from storage.resilient import retry_callback
from storage.urls import open_storage, storage_lock
from tests.conftest import CLI, default_sigint, make_synthetic_root, offline_env, run_cli, unfolded
from tests.pg_server import free_port

pytestmark = pytest.mark.slow


def trials_of(url, name):
    storage = open_storage(url)
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials()
    finally:
        storage.engine.dispose()  # no pooled connection outlives a worker that is killed


def study_names(url):
    # open_storage takes the same lock as the workers, so polling never races their table creation
    storage = open_storage(url)
    try:
        return optuna.study.get_all_study_names(storage)
    finally:
        storage.engine.dispose()


def assert_exact_and_unique(trials, target):
    finished = [t for t in trials if t.state in FINISHED]
    assert len(finished) == target
    documented = collections.Counter(t.user_attrs.get("documented_experiment") for t in finished)
    documented.pop(None, None)
    assert all(count == 1 for count in documented.values()), documented  # none run twice
    # not even a "surplus" trial: with the storage's lock no worker starts a trial past the target
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert not failed, [(t.user_attrs, t.system_attrs.get("fail_reason")) for t in failed]


def test_four_processes_on_sqlite_reach_the_exact_target(tmp_path, synthetic_root):
    storage = f"sqlite:///{tmp_path / 'k.db'}"
    result = run_cli("start", "--space", "cnn_regularisation", "--trials", "10", "--epochs", "1",
                     "--jobs", "4", "--storage", storage, "--data-dir", str(synthetic_root), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "locked" not in result.stdout + result.stderr
    assert "4 worker(s) x 1 thread(s)" in result.stdout
    assert_exact_and_unique(trials_of(storage, "cnn_regularisation"), 10)


def test_a_worker_checks_the_target_under_the_storage_lock(tmp_path):
    """A worker that would have started the last trial while another worker was starting it
    waits for the lock, then sees the target reached and creates no trial at all."""
    url = f"sqlite:///{tmp_path / 'k.db'}"
    study = optuna.create_study(study_name="s", storage=open_storage(url), direction="maximize")
    ran = []

    def objective(trial):
        ran.append(trial.number)
        return 1.0

    worker_study = optuna.load_study(study_name="s", storage=open_storage(url))
    worker = threading.Thread(target=run_until, args=(worker_study, objective, 1))
    with storage_lock(url):  # another worker is between its check and its trial
        worker.start()
        time.sleep(1.0)  # the worker reaches the lock and waits
        other = study.ask()
        study.tell(other, 0.5)
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert [t.state for t in study.get_trials()] == [optuna.trial.TrialState.COMPLETE]
    assert ran == []


def popen_cli(*args, cwd, log):
    return subprocess.Popen([str(CLI), *args], cwd=cwd, env=offline_env(), stdout=log,
                            stderr=subprocess.STDOUT, text=True, preexec_fn=default_sigint)


def test_four_workers_on_postgresql_reach_the_exact_target(tmp_path, synthetic_root, postgres_url):
    common = ["--storage", postgres_url, "--data-dir", str(synthetic_root)]
    with open(tmp_path / "log.txt", "w") as log:
        start = popen_cli("start", "--space", "mlp_regularisation", "--study", "pg", "--trials", "12",
                          "--epochs", "1", "--jobs", "2", *common, cwd=tmp_path, log=log)
        deadline = time.time() + 120
        while "pg" not in study_names(postgres_url) or "search_settings" not in \
                optuna.load_study(study_name="pg", storage=open_storage(postgres_url)).user_attrs:
            assert time.time() < deadline and start.poll() is None, (tmp_path / "log.txt").read_text()
            time.sleep(0.3)
        workers = [popen_cli("worker", "--study", "pg", "--quiet", "--threads", "1", *common,
                             cwd=tmp_path, log=log) for _ in range(2)]
        codes = [p.wait(timeout=300) for p in (start, *workers)]
    assert codes == [0, 0, 0], (tmp_path / "log.txt").read_text()
    assert_exact_and_unique(trials_of(postgres_url, "pg"), 12)


def wait_for_running_trial_with_epochs(storage, name, epochs, process, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, "the worker ended before it could be stopped"
        if name in study_names(storage):
            for trial in trials_of(storage, name):
                running = trial.state == optuna.trial.TrialState.RUNNING
                if running and len(trial.intermediate_values) >= epochs:
                    return trial
        time.sleep(0.1)
    raise AssertionError("no trial reached the epoch in time")


@pytest.fixture(scope="module")
def slow_root(tmp_path_factory):
    # enough images that an epoch takes a moment, so a worker can be caught mid-trial
    return make_synthetic_root(tmp_path_factory.mktemp("slow"), n_train=40000, n_test=100)


# enough epochs that a trial is caught with epochs still to run after the one it is stopped at
EPOCHS = 5


def start_args(storage, root, *extra):
    return ["start", "--space", "mlp_regularisation", "--trials", "1", "--epochs", str(EPOCHS), "--no-replay",
            "--storage", storage, "--data-dir", str(root), "--heartbeat-interval", "1",
            "--grace-period", "3", "--threads", "1", *extra]


def test_killed_worker_trial_is_retried_and_resumes_from_its_checkpoint(tmp_path, slow_root):
    storage = f"sqlite:///{tmp_path / 'k.db'}"
    with open(tmp_path / "first.txt", "w") as log:
        first = popen_cli(*start_args(storage, slow_root), cwd=tmp_path, log=log)
        victim = wait_for_running_trial_with_epochs(storage, "mlp_regularisation", 2, first)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    folder = tmp_path / "k-artifacts" / "checkpoints" / "mlp_regularisation"
    checkpoints = list(folder.glob("*.safetensors"))
    assert checkpoints, "no epoch checkpoint was written"

    second = run_cli(*start_args(storage, slow_root), cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    trials = trials_of(storage, "mlp_regularisation")
    stale = next(t for t in trials if t.number == victim.number)
    assert stale.state == optuna.trial.TrialState.FAIL
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == victim.number)
    assert retry.state == optuna.trial.TrialState.COMPLETE
    assert retry.params == stale.params
    assert retry.user_attrs["resumed_from_epoch"] >= 2
    assert sorted(retry.intermediate_values) == list(range(1, EPOCHS + 1))  # continuous curve
    for epoch, value in stale.intermediate_values.items():
        assert retry.intermediate_values[epoch] == value  # the restored epochs are the same epochs
    assert len([t for t in trials if t.state in FINISHED]) == 1


def test_ctrl_c_marks_the_trial_interrupted_and_the_next_start_resumes_it(tmp_path, slow_root):
    storage = f"sqlite:///{tmp_path / 'k.db'}"
    with open(tmp_path / "first.txt", "w") as log:
        first = popen_cli(*start_args(storage, slow_root), cwd=tmp_path, log=log)
        victim = wait_for_running_trial_with_epochs(storage, "mlp_regularisation", 1, first)
        first.send_signal(signal.SIGINT)
        assert first.wait(timeout=60) == 130
    output = (tmp_path / "first.txt").read_text()
    assert "kmnist-search start: interrupted; run the same command again to resume" in output
    assert "Traceback" not in output
    stopped = next(t for t in trials_of(storage, "mlp_regularisation") if t.number == victim.number)
    assert stopped.state == optuna.trial.TrialState.FAIL and stopped.user_attrs["interrupted"]

    again = run_cli(*start_args(storage, slow_root), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "1 interrupted trials resumed" in unfolded(again.stdout)
    trials = trials_of(storage, "mlp_regularisation")
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == victim.number)
    assert retry.state == optuna.trial.TrialState.COMPLETE
    assert retry.user_attrs["resumed_from_epoch"] >= 1
    assert len([t for t in trials if t.state in FINISHED]) == 1


def wait_for_port(port, process, timeout=60):
    """Until `process` (a proxy) accepts connections: a worker stops at once if nothing answers."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, "the proxy exited"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError("the proxy did not start")


def test_a_worker_killed_behind_the_proxy_is_failed_by_the_proxy_and_resumed(tmp_path, slow_root,
                                                                               postgres_url, spawned):
    port = free_port()
    proxy_url, study = f"grpc://127.0.0.1:{port}", "behind_proxy"
    common = ["--study", study, "--artifact-dir", str(tmp_path / "artifacts")]
    with open(tmp_path / "log.txt", "w") as log:
        proxy = popen_cli("proxy", "--storage", postgres_url, "--port", str(port), "--check-every", "1",
                          cwd=tmp_path, log=log)
        spawned.append(proxy)
        wait_for_port(port, proxy)
        first = popen_cli(*start_args(proxy_url, slow_root, *common), cwd=tmp_path, log=log)
        victim = wait_for_running_trial_with_epochs(postgres_url, study, 2, first)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        # no worker is left: the proxy itself notices the stopped heartbeat and requeues the trial
        deadline = time.time() + 60
        while next(t for t in trials_of(postgres_url, study) if t.number == victim.number).state \
                == optuna.trial.TrialState.RUNNING:
            assert time.time() < deadline and proxy.poll() is None, (tmp_path / "log.txt").read_text()
            time.sleep(0.5)
        second = run_cli("worker", "--storage", proxy_url, "--data-dir", str(slow_root), "--quiet",
                         "--threads", "1", "--heartbeat-interval", "1", "--grace-period", "3", *common,
                         cwd=tmp_path)
        proxy.send_signal(signal.SIGINT)
        assert proxy.wait(timeout=30) == 0
    assert second.returncode == 0, second.stderr
    trials = trials_of(postgres_url, study)
    stale = next(t for t in trials if t.number == victim.number)
    assert stale.state == optuna.trial.TrialState.FAIL
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == victim.number)
    assert retry.state == optuna.trial.TrialState.COMPLETE and retry.params == stale.params
    assert retry.user_attrs["resumed_from_epoch"] >= 2
    assert sorted(retry.intermediate_values) == list(range(1, EPOCHS + 1))
    assert len([t for t in trials if t.state in FINISHED]) == 1


def test_a_worker_whose_proxy_goes_away_for_good_stops_with_one_line(tmp_path, slow_root, postgres_url,
                                                                     spawned):
    port = free_port()
    proxy_url = f"grpc://127.0.0.1:{port}"
    with open(tmp_path / "proxy.txt", "w") as proxy_log, open(tmp_path / "start.txt", "w") as log:
        proxy = popen_cli("proxy", "--storage", postgres_url, "--port", str(port), cwd=tmp_path,
                          log=proxy_log)
        spawned.append(proxy)
        wait_for_port(port, proxy)
        command = [str(CLI), *start_args(proxy_url, slow_root, "--study", "proxy_gone", "--retry-for", "3")]
        first = subprocess.Popen(command, cwd=tmp_path, env=offline_env(), stdout=log, stderr=subprocess.PIPE,
                                 text=True)
        spawned.append(first)
        wait_for_running_trial_with_epochs(postgres_url, "proxy_gone", 1, first)
        proxy.kill()
        proxy.wait()
        _, stderr = first.communicate(timeout=120)
    assert first.returncode == 2, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()[-2:]
    assert lines[0].startswith(f"kmnist-search start: storage {proxy_url} unreachable (")
    assert lines[0].endswith("retrying for up to 3 s")
    assert lines[1] == (f"kmnist-search start: error: storage {proxy_url} unreachable for 3 s: bring it "
                        "back and run the same command again")


def test_a_retry_that_finds_the_target_reached_stays_queued_with_its_parameters(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'k.db'}", direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    dead = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    study.tell(dead, state=optuna.trial.TrialState.FAIL)
    retry_callback()(study, study.trials[-1])  # as the heartbeat check does for a dead worker
    with pytest.raises(SurplusTrialError):  # two trials finished already: the target of 2 is reached
        study.optimize(TrialGuard(study, 2, lambda t: 0.0), n_trials=1)
    (queued,) = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert queued.params == study.trials[dead.number].params
    assert queued.system_attrs["failed_trial"] == dead.number
