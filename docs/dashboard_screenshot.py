"""Screenshots of optuna-dashboard on a real kmnist-search study, taken in headless Chromium.

    kmnist-search build-root --source ../shared/data/kmnist --out /tmp/kmnist-real
    .venv/bin/python docs/dashboard_screenshot.py --data-dir /tmp/kmnist-real \\
        --storage sqlite:////tmp/kmnist-shot/kmnist-search.db --out /tmp/kmnist-shot/dashboard.png

It runs `kmnist-search start` (a no-op when the study already holds --trials finished
trials, a top-up when it holds fewer), serves the storage with `kmnist-search dashboard`,
and saves two PNGs: OUT (the study page) and OUT-trial.png (the best replayed documented
trial: its note with the report's claims, its learning curve and confusion matrix).
Needs Chromium (Debian: `bash .ci/install-system-packages`) and playwright (`pip install -e '.[test]'`).
"""

from __future__ import annotations

import argparse
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


def screenshot(base: str, study_id: int, trial_number: int, study_png: Path, trial_png: Path,
               chromium: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1500})
            page.goto(f"{base}/dashboard/studies/{study_id}")
            expect(page.get_by_text("Best Trial").first).to_be_visible(timeout=30_000)
            page.wait_for_load_state("networkidle")
            page.wait_for_timeout(1500)  # plotly animates its first draw
            page.screenshot(path=str(study_png))

            # the trial pane scrolls inside the page: a tall window shows note and plots at once
            page.set_viewport_size({"width": 1400, "height": 1400})
            page.goto(f"{base}/dashboard/studies/{study_id}/trials?numbers={trial_number}")
            expect(page.get_by_text("Artifacts", exact=True)).to_be_visible(timeout=30_000)
            page.wait_for_function(PLOTS_LOADED, timeout=30_000)
            page.get_by_text("Artifacts", exact=True).scroll_into_view_if_needed()
            page.screenshot(path=str(trial_png))
        finally:
            browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="KMNIST root (see build-root)")
    parser.add_argument("--storage", required=True, help="sqlite:///FILE.db: created, resumed or reused")
    parser.add_argument("--out", type=Path, required=True,
                        help="PNG of the study page; OUT-trial.png beside it")
    parser.add_argument("--space", default="mlp_regularisation")
    parser.add_argument("--study", help="study name (default: the space name)")
    parser.add_argument("--trials", type=int, default=4, help="finished trials the study should hold")
    parser.add_argument("--epochs", type=int, default=3)
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
    study_name = args.study or args.space
    search = subprocess.run([cli, "start", "--space", args.space, "--study", study_name,
                             "--trials", str(args.trials), "--epochs", str(args.epochs),
                             "--storage", args.storage, "--data-dir", str(args.data_dir)])
    if search.returncode != 0:
        return search.returncode  # kmnist-search has said why
    study_id, trial_number = trial_to_show(args.storage, study_name)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    trial_png = args.out.with_name(f"{args.out.stem}-trial.png")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "dashboard.log"
        with open(log, "w") as out:
            server = subprocess.Popen([cli, "dashboard", "--storage", args.storage, "--port", str(port)],
                                      stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_until_served(server, base, log)
            screenshot(base, study_id, trial_number, args.out, trial_png, args.chromium)
        finally:
            server.terminate()
            server.wait(timeout=10)
    print(f"wrote {args.out} (study {study_name!r}) and {trial_png} (trial {trial_number})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
