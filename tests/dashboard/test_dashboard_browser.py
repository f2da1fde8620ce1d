"""`kartsim dashboard` end to end in a real headless browser (Debian's chromium + chromedriver, driven
by Selenium): a real `kartsim train` subprocess and a real `kartsim dashboard` subprocess.

Chromium is installed here when it is missing and we are root (``apt-get install chromium
chromium-driver``); otherwise these tests are skipped with the reason. Screenshots of every page go
to ``tmp/test-artifacts/dashboard/`` (git-ignored; ``KARTSIM_TEST_ARTIFACTS`` moves them).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(os.environ.get("KARTSIM_TEST_ARTIFACTS") or Path(__file__).resolve().parents[2] / "tmp" / "test-artifacts") / "dashboard"
RUN = "e2e"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # the first one may install chromium


def _install_chromium() -> str | None:
    """None when chromium and chromedriver are there (installing them with apt-get if we can), else
    the reason they are not."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return None
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("apt-get"):
        return "chromium/chromedriver missing and not root with apt-get: run `apt-get install chromium chromium-driver`"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium", "chromium-driver"]
    try:
        if subprocess.run(cmd, env=env, capture_output=True, timeout=900).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
            if done.returncode != 0:
                return f"apt-get install chromium chromium-driver failed: {done.stderr.strip().splitlines()[-1:]}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot install chromium: {exc}"
    return None if CHROMIUM.exists() and CHROMEDRIVER.exists() else "chromium installed but /usr/bin/chromium missing"


@pytest.fixture(scope="session")
def chromium():
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[dev]')")
    reason = _install_chromium()
    if reason:
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.loads(r.read())
    except (OSError, ValueError):
        return None


def _stop(proc: subprocess.Popen, sig=signal.SIGINT, wait: float = 15.0) -> None:
    """Stop a process we started: `sig` (Ctrl-C: training saves an _interrupted checkpoint), then
    SIGTERM, then SIGKILL."""
    for s, timeout in ((sig, wait), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        if proc.poll() is not None:
            return
        proc.send_signal(s)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            continue


def _default_sigint() -> None:
    """In the child: Ctrl-C back to its default (a shell may have started us with it ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="module")
def site(chromium, tmp_path_factory):
    """A runs folder with a training run going on and two lap CSVs, served by `kartsim dashboard`."""
    from kartsim.apps.compare import record_ai_laps

    root = tmp_path_factory.mktemp("dashboard_site")
    runs = root / "runs"
    (runs / "drives").mkdir(parents=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1", KARTSIM_LIVE="1")
    env.pop("KARTSIM_LIVE_HZ", None)
    env.pop("KARTSIM_RUNS_DIR", None)
    train_log = open(root / "train.log", "w")
    # a large total, stopped with Ctrl-C once the pages have been checked (it must still be running then)
    train = subprocess.Popen(
        [sys.executable, "-m", "kartsim", "train", "--timesteps", "5000000", "--save-name", RUN, "--vector-envs", "2",
         "--n-steps", "32", "--batch-size", "64", "--n-epochs", "1", "--tensorboard", "--checkpoint-freq", "2000",
         "--no-progress", "--seed", "0", "--device", "cpu", "--track-name", "oval.png",
         "--runs-dir", str(runs), "--models-dir", str(root / "models")],
        cwd=root, stdout=train_log, stderr=subprocess.STDOUT, env=env, preexec_fn=_default_sigint)
    port = _free_port()
    dash_log = open(root / "dashboard.log", "w")
    dash = subprocess.Popen([sys.executable, "-m", "kartsim", "dashboard", "--runs", str(runs), "--port", str(port),
                             "--no-jobs"], cwd=root, stdout=dash_log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        record_ai_laps(runs / "drives" / "ai_hard.csv", "oval.png", "hard", laps=1)
        record_ai_laps(runs / "drives" / "ai_easy.csv", "oval.png", "easy", laps=1, seed=1)
        end = time.monotonic() + 60
        while _get_json(url + "/api/runs") is None:
            assert dash.poll() is None, (root / "dashboard.log").read_text()
            assert time.monotonic() < end, "the dashboard did not answer within 60 s"
            time.sleep(0.3)
        yield {"url": url, "runs": runs, "train": train, "root": root}
    finally:
        _stop(train)
        _stop(dash, signal.SIGTERM, 10)
        train_log.close()
        dash_log.close()


@pytest.fixture(scope="module")
def browser(chromium):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="kartsim-chromium-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1400,1300"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def shot(browser, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    browser.save_screenshot(str(path))
    return path


def wait_for(browser, what: str, predicate, timeout: float = 120.0):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(browser, timeout, poll_frequency=0.3).until(lambda d: predicate(d))
    except TimeoutException:
        shot(browser, "failed_" + what.replace(" ", "_")[:40])
        raise AssertionError(f"timed out waiting for {what}") from None


def dataset(browser, key: str) -> str | None:
    return browser.execute_script(f"return document.body.dataset[{key!r}] || null")


def run_steps(browser) -> int | None:
    text = browser.execute_script(
        f"const r = document.querySelector('tr[data-run=\"{RUN}\"]'); return r ? r.dataset.steps : null")
    return int(text) if text else None


def test_runs_page_shows_the_training_run_with_rising_steps(browser, site):
    browser.get(site["url"] + "/")
    first = wait_for(browser, "the run in the runs list", lambda d: run_steps(d))
    assert site["train"].poll() is None, "the training run ended too early"
    wait_for(browser, "the step count to rise", lambda d: (run_steps(d) or 0) > first)
    row = browser.find_element("css selector", f'tr[data-run="{RUN}"]')
    assert row.get_attribute("data-state") == "running"
    assert "running" in row.text and "cpu" in row.text
    shot(browser, "runs")


def test_live_map_receives_kart_positions(browser, site):
    browser.get(site["url"] + f"/live?source=run/runs/{RUN}")
    wait_for(browser, "live frames", lambda d: int(dataset(d, "frames") or 0) >= 15)
    assert dataset(browser, "karts") == "2"  # the two vector envs
    x, y = float(dataset(browser, "x")), float(dataset(browser, "y"))
    from kartsim.sim.track import Track

    oval = Track.load("oval.png")
    height_m, width_m = (n * oval.scale for n in oval.surface.shape)
    assert 0 <= x <= width_m and 0 <= y <= height_m  # metres on the oval's image (256 m x 160 m)
    drawn = browser.execute_script(
        "const m = document.getElementById('map'); return m.data.map(t => (t.x || []).length)")
    assert drawn[0] >= 1 and drawn[1] == 1 and drawn[2] == 1  # the ego's trail, the other kart, the ego kart
    assert browser.execute_script("return document.getElementById('map').layout.images.length") == 1  # the track
    wait_for(browser, "more frames", lambda d: int(dataset(d, "frames") or 0) >= 30)
    trace_points = browser.execute_script("return document.getElementById('trace').data[0].x.length")
    assert trace_points >= 20
    shot(browser, "live")


def test_run_page_shows_learning_curves(browser, site):
    browser.get(site["url"] + f"/run/runs/{RUN}")
    wait_for(browser, "learning curves", lambda d: int(dataset(d, "curves") or 0) >= 3, timeout=150)
    keys = browser.execute_script("return [...document.querySelectorAll('.curve')].map(e => e.dataset.key)")
    assert "train/value_loss" in keys or "train/loss" in keys
    assert any(k.startswith("racing/") for k in keys)
    time.sleep(1.0)
    shot(browser, "run")


def test_lap_analysis_overlays_two_laps(browser, site):
    from selenium.webdriver.support.ui import Select

    browser.get(site["url"] + "/laps")
    wait_for(browser, "the CSV list", lambda d: len(d.find_elements("css selector", "#csv option")) >= 2, 30)
    csv = Select(browser.find_element("id", "csv"))
    for ref in ("runs/drives/ai_hard.csv", "runs/drives/ai_easy.csv"):
        csv.select_by_value(ref)
        box = wait_for(browser, f"the laps of {ref}", lambda d: d.find_elements(
            "css selector", f'input.pick[data-csv="{ref}"]'), 60)
        box[0].click()
    browser.find_element("id", "compare").click()
    wait_for(browser, "the comparison", lambda d: dataset(d, "compared") == "2" or dataset(d, "error"), 90)
    assert dataset(browser, "error") is None
    rows = browser.find_elements("css selector", "#sectors tbody tr")
    assert len(rows) == 2 and "ai_hard" in rows[0].text and "ai_easy" in rows[1].text
    kinds = browser.execute_script("return document.getElementById('fig-lines').data.map(t => t.type)")
    assert kinds[0] == "image" and kinds.count("scatter") == 4
    for fig in ("speed", "delta", "inputs", "gg"):
        assert browser.execute_script(f"return document.getElementById('fig-{fig}').data.length") >= 2
    time.sleep(1.0)
    shot(browser, "laps")


def test_pages_show_messages_for_malformed_csv_and_deleted_run(browser, site):
    runs = site["runs"]
    good = (runs / "drives" / "ai_hard.csv").read_text().splitlines()
    good[25] = "1,2,three"
    (runs / "drives" / "broken.csv").write_text("\n".join(good) + "\n")
    browser.get(site["url"] + "/laps?csv=runs/drives/broken.csv")
    wait_for(browser, "the malformed CSV message", lambda d: "malformed" in d.find_element("id", "csv-msg").text, 30)
    assert "line 26" in browser.find_element("id", "csv-msg").text
    shot(browser, "laps_malformed")

    doomed = runs / "doomed"
    (doomed / "checkpoints").mkdir(parents=True)
    (doomed / "config.json").write_text(json.dumps({"env": {"track": "oval.png"}, "train": {"timesteps": 1000}}))
    (doomed / "checkpoints" / "doomed_500_steps.zip").write_bytes(b"PK")
    browser.get(site["url"] + "/run/runs/doomed")
    wait_for(browser, "the run summary", lambda d: dataset(d, "steps") == "500", 30)
    shutil.rmtree(doomed)
    wait_for(browser, "the deleted-run message", lambda d: "no longer exists" in d.find_element("id", "msg").text, 30)
    assert "deleted" in browser.find_element("id", "state").text
    shot(browser, "run_deleted")


def test_training_still_ran_and_stops_cleanly(site):
    train = site["train"]
    assert train.poll() is None, (site["root"] / "train.log").read_text()[-2000:]
    _stop(train)
    assert "Training interrupted" in (site["root"] / "train.log").read_text()  # Ctrl-C, not killed
    from kartsim.telemetry.live import read_live

    live = read_live(site["runs"] / RUN / "live.feed")
    assert live["kind"] == "train" and live["progress"]["num_timesteps"] > 0
