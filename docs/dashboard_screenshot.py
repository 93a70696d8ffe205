"""The pictures in docs/screenshots/, from a real small run: dashboard pages and retrain figures.

    cp -r ../shared/data/kmnist-7k /tmp/kmnist-7k
    .venv/bin/python docs/dashboard_screenshot.py --data-dir /tmp/kmnist-7k      # or: make screenshots

It runs `kmnist-search start` on WORK/kmnist-search.db (a no-op when the study already holds
--trials finished trials, a top-up when it holds fewer), exports the best trial and retrains
it over --seeds seeds (once: delete WORK to start over), serves the storage with
`kmnist-search dashboard`, and writes to OUT_DIR: dashboard-study.png (the study page),
dashboard-trial.png (the best replayed documented trial: its note with the report's claims,
its learning curve and confusion matrix), retrain-learning_curve.png and
retrain-confusion_matrix.png, and the shown trial's trial-learning_curve.png and
trial-confusion_matrix.png at full size. About two minutes of one CPU core on kmnist-7k. It fails when
the note shows a number in scientific notation.
Needs Chromium (Debian: `bash .ci/install-system-packages`) and playwright (`pip install -e '.[test]'`).
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SERVER_START_S = 60
PLOTS_LOADED = """() => { const imgs = [...document.querySelectorAll('img[src*="/artifacts/"]')];
                          return imgs.length > 0 && imgs.every(img => img.naturalWidth > 0); }"""
NOTE_METRICS = ("param_count", "test_accuracy", "val_accuracy", "test_loss", "val_loss")
NO_NOTICES = "() => document.querySelectorAll('.notistack-MuiContent').length === 0"
SCIENTIFIC = re.compile(r"\d\.\d+e[+-]\d+")  # 1.33377e+06: how a note must not show a number
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the server is on loopback


def kmnist_search() -> str:
    beside = Path(sys.executable).parent / "kmnist-search"  # the same virtualenv as this python
    found = str(beside) if beside.exists() else shutil.which("kmnist-search")
    if found is None:
        sys.exit("dashboard_screenshot: kmnist-search not found: run this with .venv/bin/python")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_served(server: subprocess.Popen, base: str, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"dashboard_screenshot: the dashboard exited with {server.returncode}:\n"
                     f"{log.read_text()}")
        try:
            with _NO_PROXY.open(f"{base}/api/meta", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:  # not listening yet
            pass
        time.sleep(0.2)
    sys.exit(f"dashboard_screenshot: the dashboard did not answer on {base} in {SERVER_START_S} s")


def trial_to_show(storage: str, study_name: str) -> tuple[int, int]:
    """(study id, trial number): the best replayed documented trial, else the best trial."""
    import optuna
    from optuna.trial import TrialState

    study = optuna.load_study(study_name=study_name, storage=storage)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    if not complete:
        sys.exit(f"dashboard_screenshot: study {study_name!r} has no complete trial to show")
    replayed = [t for t in complete if "report" in t.user_attrs] or complete
    return study._study_id, max(replayed, key=lambda t: t.value).number


def copy_trial_figures(storage: str, study_name: str, trial_number: int, out_dir: Path) -> None:
    """The shown trial's own PNG artifacts at full size, as trial-NAME.png (the page has thumbnails)."""
    import optuna
    from optuna.artifacts import download_artifact, get_all_artifact_meta

    from storage.artifacts import artifact_dir, open_artifact_store

    study = optuna.load_study(study_name=study_name, storage=storage)
    trial = next(t for t in study.get_trials() if t.number == trial_number)
    store = open_artifact_store(artifact_dir(storage))
    for meta in get_all_artifact_meta(trial, storage=study._storage):
        target = out_dir / f"trial-{meta.filename}"
        if meta.filename.endswith(".png"):
            target.unlink(missing_ok=True)
            download_artifact(artifact_store=store, artifact_id=meta.artifact_id, file_path=str(target))


def screenshot(base: str, study_id: int, trial_number: int, study_png: Path, trial_png: Path,
               chromium: Path) -> str:
    """Saves both pages; returns the trial page's text."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1500})
            page.goto(f"{base}/dashboard/studies/{study_id}")
            expect(page.get_by_text("Best Trial").first).to_be_visible(timeout=30_000)
            page.wait_for_load_state("networkidle")
            page.wait_for_timeout(1500)  # plotly animates its first draw
            # notices (importance deferred below search/dashboard.py's threshold) hide after 5 s
            page.wait_for_function(NO_NOTICES, timeout=30_000)
            page.screenshot(path=str(study_png))

            # the trial pane scrolls inside the page: a tall window shows note and plots at once
            page.set_viewport_size({"width": 1400, "height": 1700})
            page.goto(f"{base}/dashboard/studies/{study_id}/trials?numbers={trial_number}")
            expect(page.get_by_text("Artifacts", exact=True)).to_be_visible(timeout=30_000)
            page.wait_for_function(PLOTS_LOADED, timeout=30_000)
            page.get_by_text("Artifacts", exact=True).scroll_into_view_if_needed()
            page.screenshot(path=str(trial_png))
            return page.inner_text("body")
        finally:
            browser.close()


def run(*command: str) -> None:
    result = subprocess.run(command)
    if result.returncode != 0:
        sys.exit(result.returncode)  # kmnist-search has said why


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="a copy of kmnist-7k (KMNIST root)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "kmnist-search-shots",
                        help="folder for the study, its artifacts and the retrained run (kept for reuse)")
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "screenshots")
    parser.add_argument("--space", default="mlp_regularisation")
    parser.add_argument("--trials", type=int, default=6, help="finished trials the study should hold")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=3, help="retrain seeds")
    parser.add_argument("--chromium", type=Path, default=Path("/usr/bin/chromium"))
    args = parser.parse_args()
    if not args.chromium.exists():
        sys.exit(f"dashboard_screenshot: {args.chromium} not found: install chromium "
                 "(bash .ci/install-system-packages) or pass --chromium PATH")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        sys.exit("dashboard_screenshot: playwright is missing: pip install -e '.[test]'")

    cli = kmnist_search()
    args.work.mkdir(parents=True, exist_ok=True)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    storage, study_name, data = f"sqlite:///{args.work / 'kmnist-search.db'}", args.space, str(args.data_dir)
    run(cli, "start", "--space", args.space, "--trials", str(args.trials), "--epochs", str(args.epochs),
        "--storage", storage, "--data-dir", data, "--threads", "1")
    best, retrained = args.work / "best.json", args.work / "retrained"
    if not (retrained / "metrics.json").exists():  # a second retrain would note the trial twice
        run(cli, "export", "--study", study_name, "--storage", storage, "-o", str(best), "--force")
        run(cli, "retrain", str(best), "--seeds", str(args.seeds), "--out", str(retrained),
            "--data-dir", data, "--threads", "1", "--storage", storage)
    for name in ("learning_curve.png", "confusion_matrix.png"):
        shutil.copyfile(retrained / name, args.out_dir / f"retrain-{name}")
    study_id, trial_number = trial_to_show(storage, study_name)
    copy_trial_figures(storage, study_name, trial_number, args.out_dir)

    study_png, trial_png = args.out_dir / "dashboard-study.png", args.out_dir / "dashboard-trial.png"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "dashboard.log"
        with open(log, "w") as out:
            server = subprocess.Popen([cli, "dashboard", "--storage", storage, "--port", str(port)],
                                      stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_until_served(server, base, log)
            text = screenshot(base, study_id, trial_number, study_png, trial_png, args.chromium)
        finally:
            server.terminate()
            server.wait(timeout=10)
    (args.work / "trial-page.txt").write_text(text)
    rows = [line for line in text.splitlines() if line.split("\t")[0].strip() in NOTE_METRICS]
    unreadable = [row for row in rows if SCIENTIFIC.search(row)]
    if not rows or unreadable:
        problem = f"shows {unreadable!r}" if rows else "is missing"
        sys.exit(f"dashboard_screenshot: the trial note {problem} (page text in "
                 f"{args.work / 'trial-page.txt'}): numbers should read as 1,333,770 / 91.23% / 0.3124")
    print(f"wrote {study_png} (study {study_name!r}), {trial_png} (trial {trial_number}) and "
          f"{args.out_dir}/retrain-*.png (run {retrained}), trial-*.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
