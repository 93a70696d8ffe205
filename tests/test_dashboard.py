"""The dashboard as users open it: a real search, a real server, a real browser.

Each test runs `kmnist-search start` as a subprocess on a SQLite file, serves that file
with `kmnist-search dashboard` (and the plain `optuna-dashboard` console script), and
reads what the server really serves: the rendered page in headless Chromium, the JSON API,
the artifact URLs.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.study import FINISHED
from tests.conftest import CLI, REPO, offline_env, run_main

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
OPTUNA_DASHBOARD = CLI.parent / "optuna-dashboard"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LOCK_ERRORS = ("database is locked", "OperationalError")
SPACE = "mlp_regularisation"
SERVER_START_S = 60
ALL_LOADED = """prefix => [...document.querySelectorAll(`img[src*="${prefix}"]`)]
                          .every(img => img.complete && img.naturalWidth > 0)"""

# loopback only, and never through a proxy that the environment may name
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 30) -> tuple[int, str, bytes]:
    """(status, content type, body) of a GET; HTTP errors are answers, not exceptions."""
    try:
        with _NO_PROXY.open(url, timeout=timeout) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), error.read()


def get_json(url: str) -> dict:
    status, _, body = http_get(url)
    assert status == 200, f"GET {url} answered {status}: {body[:300]!r}"
    return json.loads(body)


@contextmanager
def serve(command: Sequence[str], port: int, cwd: Path, log: Path) -> Iterator[str]:
    """Run a dashboard server until it answers on `port`; yields its base URL, then stops it."""
    base = f"http://127.0.0.1:{port}"
    with open(log, "w") as out:
        server = subprocess.Popen([str(c) for c in command], cwd=cwd, env=offline_env(),
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if server.poll() is not None:
                pytest.fail(f"{command[0]} exited with {server.returncode}:\n{log.read_text()}")
            try:
                if http_get(f"{base}/api/meta", timeout=5)[0] == 200:
                    break
            except OSError:  # not listening yet
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{command[0]} did not answer on {base} in {SERVER_START_S} s:\n"
                            f"{log.read_text()}")
            time.sleep(0.2)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def study_summary(base: str, name: str) -> dict | None:
    summaries = get_json(f"{base}/api/studies")["study_summaries"]
    return next((s for s in summaries if s["study_name"] == name), None)


def check_served(base: str, study: optuna.Study, replayed: optuna.trial.FrozenTrial) -> str:
    """The JSON API serves the study, all its trials, the replayed trial's note and PNGs;
    returns the URL of the replayed trial's learning curve."""
    summary = study_summary(base, study.study_name)
    assert summary is not None and summary["study_id"] == study._study_id
    detail = get_json(f"{base}/api/studies/{study._study_id}")
    assert len(detail["trials"]) == len(study.trials)
    served = next(t for t in detail["trials"] if t["number"] == replayed.number)
    assert replayed.user_attrs["report"] in served["note"]["body"]
    assert replayed.user_attrs["experiment"] in served["note"]["body"]
    assert "report claims" in served["note"]["body"]
    files = {a["filename"]: a for a in served["artifacts"]}
    assert {"learning_curve.png", "confusion_matrix.png", "confusion_matrix.csv"} <= set(files)
    curve = (f"{base}/artifacts/{study._study_id}/{replayed._trial_id}/"
             f"{files['learning_curve.png']['artifact_id']}")
    status, content_type, body = http_get(curve)
    assert (status, content_type) == (200, "image/png")
    assert body.startswith(PNG_MAGIC)
    return curve


def replayed_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    return next(t for t in study.get_trials(states=FINISHED) if "report" in t.user_attrs)


def check_in_browser(base: str, study: optuna.Study, replayed: optuna.trial.FrozenTrial) -> None:
    """What a person sees: the study, its trial count, the replayed trial's note and plots."""
    from playwright.sync_api import expect, sync_playwright

    study_id, note = study._study_id, replayed.user_attrs
    artifact_responses: list[tuple[str, int, str]] = []

    def record(response) -> None:
        if "/artifacts/" in response.url:
            artifact_responses.append((response.url, response.status,
                                       response.headers.get("content-type", "")))

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2400})
            page.on("response", record)

            page.goto(f"{base}/dashboard")
            page.get_by_text(study.study_name).first.click()
            page.wait_for_url(re.compile(rf"/dashboard/studies/{study_id}$"))
            expect(page.get_by_text(f"{study.study_name} (id={study_id})")).to_be_visible()

            page.get_by_role("link", name="Trials (List)").click()
            page.wait_for_url(re.compile(rf"/dashboard/studies/{study_id}/trials"))
            entry = page.get_by_text(f"Trial {replayed.number}", exact=True)
            expect(entry).to_be_visible()  # the header reads "0 Trials" until the trials arrive
            shown = page.get_by_text(re.compile(r"^\d+ Trials$")).inner_text()
            assert int(shown.split()[0]) == len(study.trials), shown

            entry.click()
            expect(page.get_by_text(f"Trial {replayed.number} (trial_id={replayed._trial_id})")
                   ).to_be_visible()
            heading = f"Trial {replayed.number}: report {note['report'].split('_')[0]}, {note['experiment']}"
            expect(page.get_by_text(heading, exact=True)).to_be_visible()
            expect(page.get_by_text("report claims")).to_be_visible()

            prefix = f"/artifacts/{study_id}/{replayed._trial_id}/"
            images = page.locator(f'img[src*="{prefix}"]')
            expect(images).to_have_count(2)  # learning curve and confusion matrix
            page.wait_for_function(ALL_LOADED, arg=prefix, timeout=15_000)
            for src in images.evaluate_all("imgs => imgs.map(i => i.src)"):
                response = page.request.get(src)
                assert (response.status, response.headers["content-type"]) == (200, "image/png")
            loaded = [(status, kind) for url, status, kind in artifact_responses if prefix in url]
            assert loaded and all(r == (200, "image/png") for r in loaded), artifact_responses
        finally:
            browser.close()


@pytest.mark.browser
def test_dashboard_shows_the_study_notes_and_artifacts_in_a_browser(tmp_path, synthetic_root):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: run `bash .ci/install-system-packages` (Debian's chromium)")
    pytest.importorskip("playwright.sync_api", reason="playwright cannot be imported: "
                        "pip install -e '.[test]'")
    db = tmp_path / "kmnist-search.db"
    url = f"sqlite:///{db}"
    # the search through `start`'s `main` in this process; the dashboards below are real processes
    result = run_main("start", "--space", SPACE, "--trials", "3", "--epochs", "2", "--storage", url,
                      "--data-dir", str(synthetic_root), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "kmnist-search-artifacts").is_dir()
    study = optuna.load_study(study_name=SPACE, storage=url)
    replayed = replayed_trial(study)
    assert len(study.trials) > 3  # the documented experiments not yet run wait in the queue

    dashboard = [CLI, "dashboard", "--storage", url, "--port", str(port := free_port())]
    with serve(dashboard, port, tmp_path, tmp_path / "dashboard.log") as base:
        via_ours = check_served(base, study, replayed)
        check_in_browser(base, study, replayed)

    # the README's plain command, run where `start` ran, serves the same
    plain = [OPTUNA_DASHBOARD, "sqlite:///kmnist-search.db", "--artifact-dir", "kmnist-search-artifacts",
             "--host", "127.0.0.1", "--port", str(port := free_port())]
    with serve(plain, port, tmp_path, tmp_path / "optuna-dashboard.log") as base:
        via_plain = check_served(base, study, replayed)
    assert via_plain.split("/artifacts/")[1] == via_ours.split("/artifacts/")[1]


def test_dashboard_reads_while_two_workers_write(tmp_path, synthetic_root):
    db, target, name = tmp_path / "shared.db", 8, "two-workers"
    url = f"sqlite:///{db}"
    worker = [str(CLI), "start", "--space", SPACE, "--study", name, "--trials", str(target),
              "--epochs", "1", "--storage", url, "--data-dir", str(synthetic_root)]
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    workers = []
    for log in logs:
        with open(log, "w") as out:
            workers.append(subprocess.Popen(worker, cwd=tmp_path, env=offline_env(),
                                            stdout=out, stderr=subprocess.STDOUT))
    polls: list[tuple[str, int]] = []
    finished_seen: list[int] = []
    try:
        # the dashboard only reads: it refuses a storage file the workers have not created yet
        created_by = time.monotonic() + 120
        while not (db.exists() and db.stat().st_size > 0):
            assert time.monotonic() < created_by, "no worker created the storage within 120 s"
            assert any(w.poll() is None for w in workers), "the workers exited before creating the storage"
            time.sleep(0.1)
        dashboard = [CLI, "dashboard", "--storage", url, "--port", str(port := free_port())]
        dashboard_log = tmp_path / "dashboard.log"
        with serve(dashboard, port, tmp_path, dashboard_log) as base:
            deadline = time.monotonic() + 240
            study_id = None
            while any(w.poll() is None for w in workers):
                assert time.monotonic() < deadline, "workers still running after 240 s"
                status, _, body = http_get(f"{base}/api/studies")
                polls.append(("/api/studies", status))
                if status == 200 and study_id is None:
                    summary = next((s for s in json.loads(body)["study_summaries"]
                                    if s["study_name"] == name), None)
                    study_id = summary and summary["study_id"]
                if study_id is not None:
                    status, _, body = http_get(f"{base}/api/studies/{study_id}")
                    polls.append((f"/api/studies/{study_id}", status))
                    if status == 200:
                        states = [t["state"] for t in json.loads(body)["trials"]]
                        finished_seen.append(sum(s in ("Complete", "Pruned") for s in states))
                time.sleep(0.2)
            if study_id is not None:  # and once more after the last write
                polls.append(("after", http_get(f"{base}/api/studies/{study_id}")[0]))
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()

    outputs = [log.read_text() for log in logs]
    for w, out in zip(workers, outputs, strict=True):
        assert w.returncode == 0, out
    for label, text in [*zip(("worker 0", "worker 1"), outputs, strict=True),
                        ("dashboard", dashboard_log.read_text())]:
        for error in LOCK_ERRORS:
            assert error not in text, f"{label}: {error}\n{text}"
    assert polls and all(status == 200 for _, status in polls), [p for p in polls if p[1] != 200]
    assert any(0 < n < target for n in finished_seen), \
        f"the dashboard never saw the study mid-search: {finished_seen}"
    study = optuna.load_study(study_name=name, storage=url)
    assert not study.get_trials(states=(TrialState.FAIL,))
    documented = [t.user_attrs["documented_experiment"] for t in study.trials
                  if "documented_experiment" in t.user_attrs]
    assert len(documented) == len(set(documented)), "a documented experiment was enqueued twice"
    assert len(study.get_trials(states=FINISHED)) == target


def test_processes_opening_a_new_storage_together_all_succeed(tmp_path):
    # several `start` commands launched together on a file that does not exist yet (only
    # `start` creates a storage: read-only commands and workers refuse a missing file)
    url = f"sqlite:///{tmp_path / 'new.db'}"
    opener = f"from storage.urls import open_storage; open_storage({url!r})"
    openers = [subprocess.Popen([sys.executable, "-c", opener], cwd=REPO, env=offline_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for _ in range(3)]
    outputs = [opener.communicate(timeout=120)[0] for opener in openers]
    for opener, output in zip(openers, outputs, strict=True):
        assert opener.returncode == 0, output
    assert optuna.study.get_all_study_names(url) == []  # a sound, empty Optuna storage


def test_front_figure_is_attached_to_the_study_and_served_by_the_dashboard(tmp_path, synthetic_root):
    url = f"sqlite:///{tmp_path / 'k.db'}"
    # `start` and `front` through their `main` in this process; the dashboard is a real process
    result = run_main("start", "--space", SPACE, "--trials", "3", "--epochs", "1", "--max-params", "600000",
                      "--storage", url, "--data-dir", str(synthetic_root), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    result = run_main("front", "--study", SPACE, "--storage", url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name=SPACE, storage=url)
    complete = len(study.get_trials(states=(TrialState.COMPLETE,)))
    fronts = [a for a in optuna.artifacts.get_all_artifact_meta(study)
              if a.filename == f"front-params-{complete}-trials.png"]
    assert len(fronts) == 1 and fronts[0].mimetype == "image/png"
    stored = (tmp_path / "k-artifacts" / fronts[0].artifact_id).read_bytes()
    assert stored.startswith(PNG_MAGIC)

    dashboard = [CLI, "dashboard", "--storage", url, "--port", str(port := free_port())]
    with serve(dashboard, port, tmp_path, tmp_path / "dashboard.log") as base:
        listed = get_json(f"{base}/api/studies/{study._study_id}")["artifacts"]
        assert fronts[0].artifact_id in {a["artifact_id"] for a in listed}
        status, content_type, body = http_get(f"{base}/artifacts/{study._study_id}/{fronts[0].artifact_id}")
    assert (status, content_type) == (200, "image/png")
    assert body == stored
