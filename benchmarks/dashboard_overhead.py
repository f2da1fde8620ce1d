"""How much does an open dashboard slow training down? (target: at most 5 %)

    python benchmarks/dashboard_overhead.py [--timesteps 327680] [--repeats 3] [--browser]

The same short `kartsim train` run (the project's default rays PPO: 64 karts, telemetry on) is
timed, interleaved, under each condition; steps/s is the rate `kartsim train` prints for its learn
loop:

* ``baseline``  - ``KARTSIM_LIVE=0``: no live feed, no dashboard;
* ``dashboard`` - the live feed on (``runs/<name>/live.feed`` at 20 Hz), ``kartsim dashboard`` serving
  the runs folder, a websocket client subscribed to the run's live feed (counting the frames it
  receives) and polling the runs list and the run's curves as the pages do;
* ``browser``   - (``--browser``) as ``dashboard`` but with headless Chromium showing the live page
  (Plotly redrawing the map and traces) instead of the bare websocket client.

It also measures the side channel itself: the cost of one frame in the memory-mapped feed file
the producers use, against a new file renamed over the old one and a UDP datagram to 127.0.0.1,
and the per-step cost of the rate check. Prints a Markdown table; ``--json`` writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

RATE_RE = re.compile(r"Trained ([\d,]+) steps in [\d.]+ s \(([\d,.]+) steps/s\)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------- side channel


def side_channel_costs(n: int = 3000) -> dict[str, float]:
    """Microseconds per frame of 64 karts: JSON encoding, and the transport alone for the feed file
    the producers use (memory-mapped, sequence lock), a new file renamed over the old one, and a UDP
    datagram to 127.0.0.1; plus the rate check that every step pays."""
    import numpy as np

    from kartsim.telemetry.live import LivePublisher

    rng = np.random.default_rng(0)
    karts = np.round(rng.uniform(0, 300, (64, 4)), 2).tolist()
    frame = {"track": {"name": "circuit", "path": "/x/circuit.png", "size_m": [320.0, 240.0]}, "karts": karts,
             "ego": 0, "tel": {"speed": 12.3, "throttle": 0.5, "steering": -0.1, "lap": 1, "lap_time": 12.3,
                               "progress": 456.7, "surface": "asphalt", "episode_time": 45.6},
             "progress": {"num_timesteps": 123456, "total_timesteps": 1000000, "steps_per_second": 8000.0,
                          "eta_s": 100.0, "elapsed_s": 15.0, "device": "cpu"}}
    out: dict[str, float] = {}

    def timed(fn) -> float:
        t = time.perf_counter()
        for i in range(n):
            fn(i)
        return (time.perf_counter() - t) / n * 1e6

    data = json.dumps(frame, separators=(",", ":")).encode()
    out["frame_bytes"] = float(len(data))
    out["json_us"] = timed(lambda i: json.dumps(frame, separators=(",", ":")).encode())
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        pub = LivePublisher(Path(tmp) / "live.feed", kind="train", name="bench", hz=1e9)
        pub.period = 0.0
        out["publish_us"] = timed(lambda i: pub.publish(frame))  # what a producer pays: JSON + memory copy
        out["feed_us"] = timed(lambda i: pub.write(data))
        path, part = Path(tmp) / "live.json", Path(tmp) / ".live.json.tmp"

        def rename(i: int) -> None:
            with open(part, "wb") as fh:
                fh.write(data)
            os.replace(part, path)

        out["rename_us"] = timed(rename)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.setblocking(False)
    addr = sink.getsockname()

    def udp(i: int) -> None:
        sock.sendto(data, addr)
        if i % 64 == 0:  # keep the receive buffer from filling
            try:
                while True:
                    sink.recv(65536)
            except BlockingIOError:
                pass

    out["udp_us"] = timed(udp)
    sock.close()
    sink.close()
    pub = LivePublisher(os.devnull, kind="x", name="x", hz=20)
    pub._next = time.monotonic() + 3600
    t = time.perf_counter()
    for _ in range(200_000):
        pub.due()
    out["due_check_ns"] = (time.perf_counter() - t) / 200_000 * 1e9
    return out


# ------------------------------------------------------------------------------------- subscribers


class Subscriber:
    """A websocket client on the run's live feed plus the pages' polling, in threads."""

    def __init__(self, url: str, run: str, source: str | None = None, poll: bool = True) -> None:
        self.url, self.run = url, run
        self.source = source or f"run/runs/{run}"
        self.times: list[float] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._ws, daemon=True)]
        if poll:
            self.threads.append(threading.Thread(target=self._poll, daemon=True))
        for th in self.threads:
            th.start()

    def _ws(self) -> None:
        from websockets.sync.client import connect

        ws_url = self.url.replace("http://", "ws://") + f"/ws/live/{self.source}"
        while not self.stop.is_set():
            try:
                with connect(ws_url, open_timeout=5) as ws:
                    while not self.stop.is_set():
                        try:
                            msg = ws.recv(timeout=0.5)
                        except TimeoutError:
                            continue
                        if not msg.startswith('{"type"'):  # a frame (status messages start so)
                            self.times.append(time.perf_counter())
            except Exception:
                time.sleep(0.2)

    def _poll(self) -> None:
        n = 0
        while not self.stop.is_set():
            for path in ["/api/runs"] + ([f"/api/run/runs/{self.run}", f"/api/run/runs/{self.run}/curves"]
                                        if n % 3 == 0 else []):
                try:
                    urllib.request.urlopen(self.url + path, timeout=10).read()
                except OSError:
                    pass
            n += 1
            self.stop.wait(1.5)

    def close(self) -> dict[str, float]:
        self.stop.set()
        for th in self.threads:
            th.join(timeout=5)
        t = self.times
        if len(t) < 3:
            return {"frames": float(len(t)), "frames_per_s": 0.0, "rollout_frames_per_s": 0.0}
        gaps = [b - a for a, b in zip(t, t[1:])]
        return {"frames": float(len(t)), "frames_per_s": (len(t) - 1) / (t[-1] - t[0]),
                "rollout_frames_per_s": 1.0 / statistics.median(gaps)}


class BrowserSubscriber:
    """Headless Chromium on the live page (and nothing else)."""

    def __init__(self, url: str, run: str) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        opts = webdriver.ChromeOptions()
        opts.binary_location = "/usr/bin/chromium"
        self.profile = tempfile.mkdtemp(prefix="kartsim-bench-chromium-")
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     f"--user-data-dir={self.profile}", "--window-size=1400,1300"):
            opts.add_argument(flag)
        self.driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
        self.driver.get(f"{url}/live?source=run/runs/{run}")
        self.samples: list[tuple[float, int, float]] = []  # (time, frames shown, the page's rate)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while not self.stop.wait(0.5):
            try:
                frames, rate = self.driver.execute_script(
                    "return [Number(document.body.dataset.frames || 0), Number(document.body.dataset.rate || 0)]")
            except Exception:
                continue
            self.samples.append((time.perf_counter(), int(frames), float(rate)))

    def close(self) -> dict[str, float]:
        self.stop.set()
        self.thread.join(timeout=5)
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)
        live = [s for s in self.samples if s[1] > 0]
        if len(live) < 2:
            return {"frames": float(live[-1][1] if live else 0), "frames_per_s": 0.0, "rollout_frames_per_s": 0.0}
        last = max(range(len(live)), key=lambda i: (live[i][1], -i))  # when the count stopped rising
        first = live[0]
        span = live[last][0] - first[0]
        return {"frames": float(live[last][1]),
                "frames_per_s": (live[last][1] - first[1]) / span if span > 0 else 0.0,
                "rollout_frames_per_s": statistics.median(s[2] for s in live[: last + 1])}


# -------------------------------------------------------------------------------------------- runs


def train_once(work: Path, name: str, timesteps: int, live: bool, extra: list[str]) -> tuple[float, str]:
    env = dict(os.environ, KARTSIM_LIVE="1" if live else "0", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "kartsim", "train", "--timesteps", str(timesteps), "--save-name", name,
           "--checkpoint-freq", "0", "--no-progress", "--seed", "0", "--device", "cpu", "--force",
           "--runs-dir", str(work / "runs"), "--models-dir", str(work / "models"), *extra]
    done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=1800)
    m = RATE_RE.search(done.stdout)
    if done.returncode != 0 or not m:
        raise SystemExit(f"training failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return float(m.group(2).replace(",", "")), done.stdout


def session_rate(work: Path, url: str, model: Path, seconds: float = 10.0) -> dict[str, float]:
    """Frames per second a websocket client receives from a `kartsim play` session (headless)."""
    env = dict(os.environ, KARTSIM_LIVE="1", KARTSIM_RUNS_DIR=str(work / "runs"), SDL_VIDEODRIVER="dummy")
    env.pop("KARTSIM_LIVE_HZ", None)
    play = subprocess.Popen([sys.executable, "-m", "kartsim", "play", "--model", str(model), "--no-window",
                             "--episodes", "1000"], cwd=work, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        source, end = None, time.monotonic() + 60
        while source is None and time.monotonic() < end and play.poll() is None:
            try:
                listing = json.loads(urllib.request.urlopen(url + "/api/live", timeout=5).read())
                source = next((x["id"] for x in listing["sources"] if x["source"] == "play" and x["live"]), None)
            except OSError:
                pass
            time.sleep(0.3)
        if source is None:
            return {"frames": 0.0, "frames_per_s": 0.0, "rollout_frames_per_s": 0.0}
        sub = Subscriber(url, "", source=source, poll=False)
        time.sleep(seconds)
        return sub.close()
    finally:
        play.terminate()
        try:
            play.wait(timeout=10)
        except subprocess.TimeoutExpired:
            play.kill()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timesteps", type=int, default=327680, help="env steps per training run (default 327680)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per condition, interleaved (default 3)")
    ap.add_argument("--browser", action="store_true", help="also time it with headless Chromium on the live page")
    ap.add_argument("--train-args", default="", help="extra `kartsim train` flags, e.g. '--vector-envs 8'")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)

    costs = side_channel_costs()
    work = Path(tempfile.mkdtemp(prefix="kartsim-dash-bench-"))
    (work / "runs").mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    dash = subprocess.Popen([sys.executable, "-m", "kartsim", "dashboard", "--runs", str(work / "runs"), "--port",
                             str(port), "--no-jobs"], cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    conditions = ["baseline", "dashboard"] + (["browser"] if args.browser else [])
    try:
        wait_for_dashboard(url)
        rates, feeds, play_feed = time_conditions(work, url, conditions, args.timesteps, args.repeats,
                                                  args.train_args.split())
    finally:
        dash.send_signal(signal.SIGTERM)
        try:
            dash.wait(timeout=10)
        except subprocess.TimeoutExpired:
            dash.kill()
        shutil.rmtree(work, ignore_errors=True)
    result = print_slowdown(args, conditions, rates, feeds, play_feed, costs)
    print_side_channel(costs)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


def wait_for_dashboard(url: str, timeout_s: float = 60.0) -> None:
    end = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(url + "/api/runs", timeout=2).read()
            return
        except OSError:
            if time.monotonic() > end:
                raise SystemExit("the dashboard did not start")
            time.sleep(0.3)


def time_conditions(work: Path, url: str, conditions: list[str], timesteps: int, repeats: int,
                    extra: list[str]) -> tuple[dict[str, list[float]], dict[str, list[dict[str, float]]], dict[str, float]]:
    """A warm-up run and the `kartsim play` session's feed rate, then `repeats` rounds of one training
    run per condition (interleaved, a baseline run closing the last round). Returns the steps/s and the
    feeds received per condition, and the play session's feed."""
    rates: dict[str, list[float]] = {c: [] for c in conditions}
    feeds: dict[str, list[dict[str, float]]] = {c: [] for c in conditions}
    train_once(work, "warmup", 8192, False, extra)  # numba caches, torch import, disk; its model plays below
    play_feed = session_rate(work, url, work / "runs" / "warmup" / "warmup_final.zip")
    print(f"  kartsim play session: {play_feed['frames']:.0f} live frames in 10 s "
          f"({play_feed['frames_per_s']:.1f}/s)", flush=True)
    for r in range(repeats):
        for cond in conditions:
            name = f"{cond}{r}"
            sub = None
            if cond == "dashboard":
                sub = Subscriber(url, name)
            elif cond == "browser":
                sub = BrowserSubscriber(url, name)
            if sub is not None:
                time.sleep(3.0)  # the client's own start-up is not the training's slow-down
            try:
                rate, _ = train_once(work, name, timesteps, cond != "baseline", extra)
            finally:
                feed = sub.close() if sub is not None else None
            rates[cond].append(rate)
            if feed is not None:
                feeds[cond].append(feed)
            print(f"  {cond:9s} run {r + 1}: {rate:,.0f} steps/s"
                  + (f", {feed['frames']:.0f} live frames ({feed['frames_per_s']:.1f}/s overall, "
                     f"{feed['rollout_frames_per_s']:.1f}/s during rollouts)" if feed else ""), flush=True)
    rate, _ = train_once(work, "baseline_end", timesteps, False, extra)  # closes the last bracket
    rates["baseline"].append(rate)
    print(f"  baseline  run {repeats + 1}: {rate:,.0f} steps/s", flush=True)
    return rates, feeds, play_feed


def print_slowdown(args: argparse.Namespace, conditions: list[str], rates: dict[str, list[float]],
                   feeds: dict[str, list[dict[str, float]]], play_feed: dict[str, float],
                   costs: dict[str, float]) -> dict:
    """The slow-down table (each run paired with the baseline runs around it); returns the JSON result."""
    base = statistics.median(rates["baseline"])
    print()
    print(f"Training slow-down with the dashboard open ({args.timesteps:,} steps per run, {args.repeats} interleaved "
          f"runs per condition, {os.cpu_count()} CPU cores{', train ' + args.train_args if args.train_args else ''}). "
          "Paired ratio: each run against the mean of the baseline runs just before and after it (the machine's "
          "load drifts; this cancels most of it).")
    print()
    print("| condition | steps/s (median) | min - max | ratio of medians | paired ratio (median) | "
          "live frames/s received (overall / during rollouts) |")
    print("|---|---:|---:|---:|---:|---:|")
    result = {"timesteps": args.timesteps, "repeats": args.repeats, "cpu_count": os.cpu_count(), "side_channel": costs,
              "play_session": play_feed, "conditions": {}}
    for cond in conditions:
        med = statistics.median(rates[cond])
        fr = feeds[cond]
        fps = (f"{statistics.median(f['frames_per_s'] for f in fr):.1f} / "
               f"{statistics.median(f['rollout_frames_per_s'] for f in fr):.1f}") if fr else "-"
        b = rates["baseline"]
        paired = [x / ((b[i] + b[i + 1]) / 2) for i, x in enumerate(rates[cond])] if cond != "baseline" else [1.0]
        print(f"| {cond} | {med:,.0f} | {min(rates[cond]):,.0f} - {max(rates[cond]):,.0f} | {med / base:.3f} | "
              f"{statistics.median(paired):.3f} | {fps} |")
        result["conditions"][cond] = {"steps_per_s": rates[cond], "median": med, "ratio": med / base,
                                      "paired_ratios": paired, "feeds": fr}
    print()
    print(f"A `kartsim play` session (headless, as fast as it can drive) streams {play_feed['frames_per_s']:.1f} "
          "frames/s to a websocket client. A training run streams while it drives (\"during rollouts\") and "
          "pauses while PPO updates the network (\"overall\" counts those pauses too).")
    return result


def print_side_channel(costs: dict[str, float]) -> None:
    print()
    print(f"Side channel, per frame of 64 karts ({costs['frame_bytes']:.0f} bytes of JSON, encoded in "
          f"{costs['json_us']:.0f} us):")
    print()
    print("| transport | us per frame | share of one core at 20 frames/s (incl. JSON) |")
    print("|---|---:|---:|")
    for label, key in (("feed file (mmap + sequence lock; used)", "feed_us"), ("new file renamed over the old", "rename_us"),
                       ("UDP datagram to 127.0.0.1", "udp_us")):
        print(f"| {label} | {costs[key]:.1f} | {20 * (costs[key] + costs['json_us']) / 1e4:.3f} % |")
    print()
    print(f"One whole publish (build + encode + feed file): {costs['publish_us']:.0f} us; the rate check paid by "
          f"every step: {costs['due_check_ns']:.0f} ns.")


if __name__ == "__main__":
    raise SystemExit(main())
