"""Fleet load test: many workers on one study, directly on PostgreSQL and through the proxy.

MEASURES COORDINATION ONLY. The workers run the product's study-driving code (the worker
storage with outage retries and heartbeats, `run_until` with its target guard, the median
pruner, the retry of dead workers' trials, `CheckpointPaths` resume) around a STAND-IN
objective that sleeps instead of training (EPOCHS x EPOCH_S per trial), reports each epoch,
keeps a JSON epoch checkpoint, and fails now and then. No torch is imported (a worker checks),
so 64 workers fit this machine. The sampler is random: TPE's own cost per trial, which grows
with the trials in the study, is the sampler's, not coordination.

Per configuration (workers N, direct or through `kmnist-search proxy`, trials already in the
study) it starts from a copy of a pre-populated study, runs until `prepopulated + new`
trials are finished, SIGKILLs a quarter of the workers while they are inside a trial, and
reports: exact totals, every killed trial retried and resumed, connection errors (refused
connections in the server log, outage lines of the workers, workers that gave up), the
coordination overhead per trial (a worker's time outside the stand-in's sleeps), and
database transactions per trial (pg_stat_database, the round trips that commit).

The server allows --max-connections (30) so that fleet effects show on one machine.
"""

from __future__ import annotations

import argparse
import atexit
import json
import multiprocessing
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import optuna
import sqlalchemy
from common import cpuinfo, usable_cores
from optuna.trial import TrialState
from pg_server import free_port, postgres_server

from search.study import FINISHED, CheckpointPaths, make_pruner, run_until
from storage.resilient import open_resilient_storage, retry_callback

CLI = Path(sys.executable).parent / "kmnist-search"
STUDY = "fleet"
EPOCHS = 3
EPOCH_S = 0.4
FAIL_RATE = 0.03  # the stand-in raises in this share of trials (they fail and are not retried)
HEARTBEAT_S, GRACE_S, CHECK_EVERY_S = 1, 3, 1.0
ENQUEUED = 8  # fixed-parameter trials (like replayed experiments): each must finish exactly once
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Configuration:
    workers: int
    via: str  # "postgresql" or "proxy"
    prepopulated: int
    new_trials: int
    retry_for: float = 60.0
    limit_s: float = 180.0


# ---- the stand-in worker (a forked process; never imports torch) ----

class StandInObjective:
    """Sleeps EPOCHS x EPOCH_S, reports every epoch, checkpoints like the real objective."""

    def __init__(self, checkpoints: CheckpointPaths, timing: dict) -> None:
        self.checkpoints, self.timing = checkpoints, timing

    def __call__(self, trial: optuna.Trial) -> float:
        entered = time.perf_counter()
        self.timing["gaps"].append(entered - self.timing["left"])
        slept = 0.0
        try:
            base = trial.suggest_float("base", 0.80, 0.95)
            trial.suggest_float("lr", 1e-4, 1e-1, log=True)
            trial.suggest_int("width", 32, 512)
            trial.set_user_attr("worker_pid", os.getpid())
            path = self.checkpoints(trial)
            # only fresh sampled trials fail: documented ones must each finish once, and a killed
            # trial's retry (its checkpoint is its original's) is measured on its own
            fresh = path.stem == f"trial-{trial.number}" and "documented_experiment" not in trial.user_attrs
            done: list[float] = json.loads(path.read_text()) if path.exists() else []
            if done:
                trial.set_user_attr("resumed_from_epoch", len(done))
            for epoch in range(1, EPOCHS + 1):
                if epoch <= len(done):
                    value = done[epoch - 1]  # restored, as the real loop replays saved epochs
                else:
                    time.sleep(EPOCH_S)
                    slept += EPOCH_S
                    if fresh and random.random() < FAIL_RATE / EPOCHS:
                        trial.set_user_attr("stand_in_failure", True)
                        raise RuntimeError("stand-in failure")
                    value = base + 0.01 * epoch
                    done.append(value)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(json.dumps(done))
                trial.report(value, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after epoch {epoch}")
            return value
        finally:
            left = time.perf_counter()
            self.timing["inside"].append(left - entered - slept)
            self.timing["left"] = left


def worker_main(url: str, target: int, folder: str, retry_for: float, index: int) -> None:
    log = open(Path(folder) / f"worker-{index}.log", "w", buffering=1)  # noqa: SIM115 (lives as long as the process)
    os.dup2(log.fileno(), 2)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the orchestrator's handler
    assert "torch" not in sys.modules, "a stand-in worker must not import torch"
    random.seed(os.getpid())
    started = time.perf_counter()
    timing: dict = {"gaps": [], "inside": [], "left": started}
    code = 0
    try:
        storage = open_resilient_storage(url, retry_for, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                                         stale_trial_callback=retry_callback(),
                                         say=lambda line: print(f"worker: {line}", file=log))
        with_warnings_off()
        study = optuna.load_study(study_name=STUDY, storage=storage,
                                  sampler=optuna.samplers.RandomSampler(seed=os.getpid()),
                                  pruner=make_pruner("median", EPOCHS, warmup_epochs=1))
        checkpoints = CheckpointPaths(Path(folder) / "checkpoints", study)
        run_until(study, StandInObjective(checkpoints, timing), target,
                  callbacks=[checkpoints.discard_finished])
    except Exception as error:  # the product's CLI prints one line too
        print(f"worker: error: {error}", file=log)
        code = 1
    summary = {"index": index, "pid": os.getpid(), "wall_s": time.perf_counter() - started,
               "cpu_s": time.process_time(),
               "join_s": timing["gaps"][0] if timing["gaps"] else None, "gaps": timing["gaps"][1:],
               "inside": timing["inside"], "code": code}
    (Path(folder) / f"worker-{index}.json").write_text(json.dumps(summary))
    os._exit(code)


def with_warnings_off() -> None:
    import warnings

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.ERROR)


# ---- the orchestrator ----

def database_url(server_url: str, name: str) -> str:
    return server_url.rsplit("/", 1)[0] + "/" + name


def admin(server_url: str, sql: str) -> None:
    engine = sqlalchemy.create_engine(server_url, isolation_level="AUTOCOMMIT",
                                      poolclass=sqlalchemy.pool.NullPool)
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text(sql))
    engine.dispose()


SEED_TRIALS = 200  # added through Optuna; the rest are SQL copies of them (Optuna adds ~20 per second here)


def prepopulate(server_url: str, name: str, count: int, template: str | None = None,
                already: int = 0) -> None:
    """Database `name` holding study STUDY with `count` finished trials (copied from `template`
    holding `already`), each with the stand-in's parameters and epoch values."""
    admin(server_url, f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
    url = database_url(server_url, name)
    storage = optuna.storages.RDBStorage(url)
    study = optuna.create_study(study_name=STUDY, storage=storage, direction="maximize", load_if_exists=True)
    rng = random.Random(count)
    distributions = {"base": optuna.distributions.FloatDistribution(0.80, 0.95),
                     "lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
                     "width": optuna.distributions.IntDistribution(32, 512)}
    for _ in range(max(0, min(count, SEED_TRIALS) - already)):
        base = rng.uniform(0.80, 0.95)
        params = {"base": base, "lr": 10 ** rng.uniform(-4, -1), "width": rng.randint(32, 512)}
        values = {epoch: base + 0.01 * epoch for epoch in range(1, EPOCHS + 1)}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions,
                                                  value=values[EPOCHS], intermediate_values=values))
    with storage.engine.begin() as connection:
        have = max(already, min(count, SEED_TRIALS))
        while have < count:
            copy_trials(connection, min(have, count - have), have)
            have += min(have, count - have)
    storage.engine.dispose()


def copy_trials(connection: sqlalchemy.engine.Connection, chunk: int, have: int) -> None:
    """Copy trials numbered below `chunk` as trials numbered from `have`, with their children."""
    run = lambda sql: connection.execute(sqlalchemy.text(sql), {"chunk": chunk, "have": have})  # noqa: E731
    offset = run("SELECT max(trial_id) + 1 - min(trial_id) FROM trials").scalar()
    chosen = f"SELECT trial_id FROM trials WHERE number < {chunk}"
    run(f"INSERT INTO trials (trial_id, number, study_id, state, datetime_start, datetime_complete) "
        f"SELECT trial_id + {offset}, number + :have, study_id, state, datetime_start, datetime_complete "
        f"FROM trials WHERE number < :chunk")
    run(f"INSERT INTO trial_params (trial_id, param_name, param_value, distribution_json) SELECT "
        f"trial_id + {offset}, param_name, param_value, distribution_json FROM trial_params "
        f"WHERE trial_id IN ({chosen})")
    run(f"INSERT INTO trial_values (trial_id, objective, value, value_type) SELECT trial_id + {offset}, "
        f"objective, value, value_type FROM trial_values WHERE trial_id IN ({chosen})")
    run(f"INSERT INTO trial_intermediate_values (trial_id, step, intermediate_value, "
        f"intermediate_value_type) SELECT trial_id + {offset}, step, intermediate_value, "
        f"intermediate_value_type FROM trial_intermediate_values WHERE trial_id IN ({chosen})")
    run("SELECT setval(pg_get_serial_sequence('trials', 'trial_id'), (SELECT max(trial_id) FROM trials))")


def transactions(server_url: str, name: str) -> int:
    engine = sqlalchemy.create_engine(server_url, poolclass=sqlalchemy.pool.NullPool)
    with engine.connect() as connection:
        row = connection.execute(sqlalchemy.text("SELECT xact_commit + xact_rollback FROM pg_stat_database "
                                                 "WHERE datname = :n"), {"n": name}).first()
    engine.dispose()
    return int(row[0]) if row else 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def refusals(server) -> int | None:
    return server.log.read_text().count("too many clients") if server.log else None


def wait_for_proxy(port: int, process: subprocess.Popen, timeout: float = 60) -> None:
    import socket

    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the proxy exited with {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError("the proxy did not start")


def default_sigint() -> None:
    """In the proxy's process before exec: it is stopped with SIGINT, which a run started in
    the background (`... &`) would otherwise pass on to it as ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_proxy(db_url: str, folder: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    log = open(folder / "proxy.log", "w")  # noqa: SIM115 (closed with the process)
    proxy = subprocess.Popen([str(CLI), "proxy", "--storage", db_url, "--port", str(port), "--grace-period",
                              str(GRACE_S), "--check-every", str(CHECK_EVERY_S)], stdout=log,
                             stderr=subprocess.STDOUT, preexec_fn=default_sigint)
    atexit.register(proxy.kill)  # should the orchestrator fail (a no-op once it has ended)
    wait_for_proxy(port, proxy)
    return proxy, port


def workers_mid_trial(poll: sqlalchemy.engine.Connection, alive: set[int]) -> list[int]:
    """PIDs of workers inside a trial of the stand-in that has a checkpoint (one epoch or more
    reported) and an epoch still to run, and that the stand-in has not itself failed."""
    rows = poll.execute(sqlalchemy.text(
        "SELECT a.value_json, "
        "(SELECT count(*) FROM trial_intermediate_values v WHERE v.trial_id = t.trial_id), "
        "(SELECT count(*) FROM trial_user_attributes f WHERE f.trial_id = t.trial_id "
        " AND f.key = 'stand_in_failure') "
        "FROM trials t JOIN trial_user_attributes a ON a.trial_id = t.trial_id "
        "WHERE t.state = 'RUNNING' AND a.key = 'worker_pid'")).all()
    return [int(pid) for pid, epochs, failing in rows
            if int(pid) in alive and 1 <= epochs < EPOCHS and not failing]


def kill_mid_trial(poll: sqlalchemy.engine.Connection, pid: int) -> bool:
    """SIGKILL worker `pid` only while it is inside a trial. The worker is frozen first and its
    state read again once its last request has landed: between the first query and the kill a
    loaded machine could let the trial end (pruned, say), and the kill would hit no trial."""
    os.kill(pid, signal.SIGSTOP)
    time.sleep(0.3)  # a request already sent (through the proxy, say) is written meanwhile
    poll.commit()  # a fresh snapshot
    if pid in workers_mid_trial(poll, {pid}):
        os.kill(pid, signal.SIGKILL)
        return True
    os.kill(pid, signal.SIGCONT)
    return False


def finished_now(poll: sqlalchemy.engine.Connection) -> int:
    return poll.execute(sqlalchemy.text(
        "SELECT count(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED')")).scalar()


def run_configuration(server, config: Configuration, template: str, run_name: str) -> dict:
    admin(server.url, f"CREATE DATABASE {run_name} TEMPLATE {template}")
    db_url = database_url(server.url, run_name)
    folder = Path(tempfile.mkdtemp(prefix=f"fleet-{run_name}-"))
    target = config.prepopulated + ENQUEUED + config.new_trials
    rdb = optuna.storages.RDBStorage(db_url)
    setup = optuna.load_study(study_name=STUDY, storage=rdb)
    for k in range(ENQUEUED):  # like the documented experiments `start` enqueues
        setup.enqueue_trial({"base": 0.9, "lr": 0.01, "width": 64 + k},
                            user_attrs={"documented_experiment": f"e{k}"})
    rdb.engine.dispose()
    proxy, port = start_proxy(db_url, folder) if config.via == "proxy" else (None, None)
    url = f"grpc://127.0.0.1:{port}" if proxy else db_url
    refused_before = refusals(server)
    xacts_before = transactions(server.url, run_name)
    started = time.perf_counter()
    # the orchestrator's own connection is taken before the workers compete for the rest
    poll_engine = sqlalchemy.create_engine(db_url, poolclass=sqlalchemy.pool.NullPool)
    poll = poll_engine.connect()
    poll.commit()
    context = multiprocessing.get_context("fork")
    workers = {}
    for index in range(config.workers):
        process = context.Process(target=worker_main, daemon=True,  # ended with the orchestrator
                                  args=(url, target, str(folder), config.retry_for, index))
        process.start()
        workers[process.pid] = process
    killed: list[int] = []
    kill_times: dict[int, float] = {}
    steady_from = None
    polls = 1  # the driver's first connection runs its set-up queries
    kill_at = config.prepopulated + ENQUEUED + int(0.4 * config.new_trials)
    to_kill, killed_at = max(1, config.workers // 4), None
    while any(p.is_alive() for p in workers.values()) and time.perf_counter() - started < config.limit_s:
        if len(killed) < to_kill:
            polls += 1
            if finished_now(poll) >= kill_at:
                alive = {pid for pid, p in workers.items() if p.is_alive()} - set(killed)
                for pid in workers_mid_trial(poll, alive)[:to_kill - len(killed)]:
                    if kill_mid_trial(poll, pid):
                        killed.append(pid)
                        kill_times[pid] = time.time()
                if killed and steady_from is None:  # every worker has joined: steady state from here
                    steady_from = (cpu_seconds(proxy.pid) if proxy else None, finished_now(poll))
                    killed_at = killed_at or time.perf_counter() - started
            poll.commit()
        time.sleep(0.1)
    poll.close()
    wall = time.perf_counter() - started
    timed_out = [pid for pid, p in workers.items() if p.is_alive()]
    for pid in timed_out:
        os.kill(pid, signal.SIGKILL)
    for process in workers.values():
        process.join()
    proxy_cpu = cpu_seconds(proxy.pid) if proxy is not None else None
    if proxy is not None:
        proxy.send_signal(signal.SIGINT)
        proxy.wait(timeout=30)
    poll_engine.dispose()
    time.sleep(1.5)  # closed backends flush their statistics
    xacts = transactions(server.url, run_name) - xacts_before - polls - 1
    refused = None if refused_before is None else refusals(server) - refused_before
    result = summarise(config, db_url, folder, target, kill_times, wall, xacts, refused, timed_out)
    result["killed_after_s"] = round(killed_at, 1) if killed_at else None
    new_finished = result["finished"] - config.prepopulated
    result["proxy_cpu_s_per_finished_trial"] = round(proxy_cpu / new_finished, 4) \
        if proxy_cpu and new_finished else None
    if proxy_cpu and steady_from and result["finished"] > steady_from[1]:  # after the joins, with the kills
        result["proxy_cpu_s_per_trial_after_joins"] = round(
            (proxy_cpu - steady_from[0]) / (result["finished"] - steady_from[1]), 4)
    if not os.environ.get("FLEET_KEEP"):  # FLEET_KEEP=1 keeps the database and the workers' logs
        admin(server.url, f"DROP DATABASE {run_name} WITH (FORCE)")
        shutil.rmtree(folder)
    return result


def summarise(config: Configuration, db_url: str, folder: Path, target: int, kill_times: dict[int, float],
              wall: float, xacts: int, refused: int | None, timed_out: list[int]) -> dict:
    killed = list(kill_times)
    storage = optuna.storages.RDBStorage(db_url)
    trials = optuna.load_study(study_name=STUDY, storage=storage).get_trials(deepcopy=False)
    storage.engine.dispose()
    new = [t for t in trials if t.number >= config.prepopulated]
    finished = [t for t in trials if t.state in FINISHED]
    documented = [t.user_attrs["documented_experiment"] for t in finished
                  if "documented_experiment" in t.user_attrs]
    # a trial of a killed worker, failed by the stale-heartbeat check (not by the stand-in, not surplus)
    victims = [t for t in new if t.user_attrs.get("worker_pid") in killed and t.state == TrialState.FAIL
               and not {"stand_in_failure", "surplus"} & set(t.user_attrs)]
    # the finished trial that retried each failed one (a retry of a retry lists both); a retry
    # can also be left waiting when trials started before it reached the target
    retries = {number: t for t in new if t.state in FINISHED
               for number in t.system_attrs.get("retry_history", [])}
    queued = {number for t in new if t.state == TrialState.WAITING
              for number in t.system_attrs.get("retry_history", [])}
    resumed = [v.number for v in victims if v.number in retries and
               (not v.intermediate_values or retries[v.number].user_attrs.get("resumed_from_epoch", 0) >= 1)]
    summaries = [json.loads(p.read_text()) for p in sorted(folder.glob("worker-*.json"))]
    logs = [p.read_text() for p in sorted(folder.glob("worker-*.log"))]
    # a trial's overhead: its time inside the objective but not asleep, plus the time from leaving
    # it to entering the next (tell, callbacks, the loop's counts, ask, the target guard)
    overheads = [inside + gap for s in summaries for inside, gap in zip(s["inside"], s["gaps"], strict=False)]
    joins = [s["join_s"] for s in summaries if s["join_s"] is not None]
    run_trials = len([t for t in new if t.state in (*FINISHED, TrialState.FAIL)])
    new_finished = len(finished) - config.prepopulated
    return {
        **asdict(config),
        "target_finished": target,
        "finished": len(finished),
        "exact_total": len(finished) == target,
        "documented_each_once": sorted(documented) == [f"e{k}" for k in range(ENQUEUED)],
        "left_running": sum(t.state == TrialState.RUNNING for t in trials),
        "failed_by_stand_in": sum("stand_in_failure" in t.user_attrs for t in new),
        "surplus_not_run": sum("surplus" in t.user_attrs for t in new),
        # a live worker's trial failed as dead (its heartbeats were late): none expected
        "failed_while_alive": sum(t.state == TrialState.FAIL and t.user_attrs.get("worker_pid") not in killed
                                  and not {"stand_in_failure", "surplus"} & set(t.user_attrs) for t in new),
        "killed_workers": len(killed),
        "killed_trials": [v.number for v in victims],
        "killed_trials_retried": sum(v.number in retries for v in victims),
        "killed_trials_still_queued": sum(v.number in queued and v.number not in retries for v in victims),
        "killed_trials_resumed": len(resumed),
        # from the SIGKILL to the trial's FAIL (written by the proxy, or directly by a worker's check)
        "seconds_to_detect_dead_worker": sorted(
            round(v.datetime_complete.timestamp() - kill_times[v.user_attrs["worker_pid"]], 1)
            for v in victims),
        "connection_refusals_in_server_log": refused,
        "worker_outage_lines": sum(log.count("unreachable (") for log in logs),
        "workers_gave_up": sum(s["code"] != 0 for s in summaries),
        "workers_cut_at_limit": len(timed_out),
        "wall_s": round(wall, 1),
        "trials_run": run_trials,
        "overhead_per_trial_s": {"median": round(statistics.median(overheads), 4) if overheads else None,
                                 "p90": round(quantile(overheads, 0.9), 4) if overheads else None,
                                 "samples": len(overheads)},
        "join_s_median": round(statistics.median(joins), 3) if joins else None,
        "worker_cpu_s_per_finished_trial": round(sum(s["cpu_s"] for s in summaries) / new_finished, 4)
        if new_finished else None,
        "db_transactions": xacts,
        "db_transactions_per_finished_trial": round(xacts / new_finished, 1) if new_finished else None,
        "worker_log_examples": sorted({line for log in logs for line in log.splitlines()})[:6],
    }


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", default="4,16,64", help="comma-separated worker counts")
    p.add_argument("--prepopulated", default="1000,5000", help="comma-separated trials already in the study")
    p.add_argument("--via", default="postgresql,proxy")
    p.add_argument("--trials-per-worker", type=int, default=4,
                   help="new trials per worker (at least 40 in all)")
    p.add_argument("--max-connections", type=int, default=30)
    p.add_argument("--new-trials", type=int, default=None, help="new trials per configuration (overrides "
                   "--trials-per-worker)")
    p.add_argument("--server", default=None,
                   help="use this running server's postgresql:// URL instead of starting one (the tests)")
    p.add_argument("--append", action="store_true",
                   help="add to the configurations already in the results file")
    p.add_argument("--out", type=Path, default=None, help="results file (default results/fleet.json)")
    p.add_argument("--quick", action="store_true",
                   help="4 workers, 200 trials in the study; writes results/fleet.quick.tmp")
    args = p.parse_args()
    # stopped: still stop the server, the proxy and the workers (finally blocks, atexit)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.quick:
        args.workers, args.prepopulated = "4", "200"
    with_warnings_off()
    counts = [int(n) for n in args.workers.split(",")]
    sizes = sorted(int(n) for n in args.prepopulated.split(","))
    tag = f"f{os.getpid()}"  # database names of this run
    results = []
    with (nullcontext(Server(args.server, None)) if args.server else
          postgres_server(args.max_connections, {"log_connections": "off"})) as server:
        populated = 0
        for size in sizes:
            begun = time.perf_counter()
            prepopulate(server.url, f"{tag}_pre{size}", size,
                        template=f"{tag}_pre{populated}" if populated else None, already=populated)
            print(f"pre-populated {size} trials in {time.perf_counter() - begun:.0f} s", flush=True)
            populated = size
        for size in sizes:
            for via in args.via.split(","):
                for n in counts:
                    new = args.new_trials or max(40, args.trials_per_worker * n)
                    config = Configuration(n, via, size, new)
                    result = run_configuration(server, config, f"{tag}_pre{size}", f"{tag}_{via}_{n}_{size}")
                    results.append(result)
                    brief = {k: v for k, v in result.items() if k != "worker_log_examples"}
                    print(json.dumps(brief), flush=True)
        for size in sizes:
            admin(server.url, f"DROP DATABASE {tag}_pre{size} WITH (FORCE)")
    out = {"what": "coordination only: stand-in objective (sleeps), no training",
           "stand_in": {"epochs": EPOCHS, "epoch_s": EPOCH_S, "fail_rate": FAIL_RATE, "sampler": "random",
                        "pruner": "median (the product's)"},
           "heartbeat_s": HEARTBEAT_S, "grace_s": GRACE_S, "proxy_check_every_s": CHECK_EVERY_S,
           "max_connections": None if args.server else args.max_connections, "machine": machine(),
           "configurations": results}
    path = args.out or RESULTS / ("fleet.quick.tmp" if args.quick else "fleet.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    if args.append and path.exists():  # a further run's configurations beside the earlier ones
        earlier = json.loads(path.read_text())
        out["configurations"] = earlier["configurations"] + results
        out["runs"] = [*earlier.get("runs", [earlier["machine"]]), out["machine"]]
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")
    print(markdown_table(results))


def markdown_table(results: list[dict]) -> str:
    """The BENCHMARKS.md table of a run's configurations."""
    rows = ["| via | workers | trials before | finished / target "
            "| killed workers / their trials: retried, resumed | detect s "
            "| refused conn. | workers gave up | overhead s/trial (median, p90) | join s | DB xacts/trial "
            "| proxy CPU s/trial after joins | wall s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        overhead = r["overhead_per_trial_s"]
        detect = r["seconds_to_detect_dead_worker"]
        rows.append(
            f"| {r['via']} | {r['workers']} | {r['prepopulated']:,} "
            f"| {r['finished']:,} / {r['target_finished']:,}{'' if r['exact_total'] else ' (not reached)'} "
            f"| {r['killed_workers']} / {len(r['killed_trials'])}: "
            f"{r['killed_trials_retried']}, {r['killed_trials_resumed']}"
            f"{f' ({q} still queued)' if (q := r['killed_trials_still_queued']) else ''} "
            f"| {f'{min(detect):g}-{max(detect):g}' if detect else '-'} "
            f"| {r['connection_refusals_in_server_log']} | {r['workers_gave_up']} "
            f"| {overhead['median'] if overhead['median'] is not None else '-'}, "
            f"{overhead['p90'] if overhead['p90'] is not None else '-'} | {r['join_s_median'] or '-'} "
            f"| {r['db_transactions_per_finished_trial'] or '-'} "
            f"| {r.get('proxy_cpu_s_per_trial_after_joins') or '-'} "
            f"| {r['wall_s']} |")
    return "\n".join(rows)


@dataclass(frozen=True)
class Server:
    url: str
    log: Path | None  # None: refused connections are not counted


def machine() -> dict:
    return {"cpu_model": cpuinfo().get("model name"), "usable_cores": usable_cores(),
            "load_average_1m": round(os.getloadavg()[0], 2), "python": sys.version.split()[0],
            "optuna": optuna.__version__, "shared_loaded_machine": True}


if __name__ == "__main__":
    main()
