"""Shared test helpers: a scripted centerline-following driver and small env factories."""

from __future__ import annotations

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

import numpy as np
import pytest

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")


@pytest.fixture(autouse=True, scope="session")
def _racing_line_cache(tmp_path_factory):
    """Solved minimum-time lines go to a folder of this test session, not the user's cache."""
    os.environ.setdefault("KARTSIM_CACHE_DIR", str(tmp_path_factory.mktemp("racing_lines")))


def follow_centerline(race, i: int = 0, lookahead_m: float = 7.0, target_speed: float = 12.0) -> np.ndarray:
    """Pure-pursuit steering towards the centerline point `lookahead_m` ahead, throttle to a target speed."""
    st = race.state
    track = race.stack.tracks[int(st.track_idx[i])]
    s_target = (race.s[i] + lookahead_m) % track.length
    tx, ty, _ = (float(v[0]) for v in track.pose_at(np.array([s_target])))
    angle = np.arctan2(ty - st.y[i], tx - st.x[i]) - st.yaw[i]
    angle = (angle + np.pi) % (2 * np.pi) - np.pi
    steer = np.clip(angle * 2.5, -1.0, 1.0)
    throttle = np.clip((target_speed - st.speed[i]) * 0.5, -1.0, 1.0)
    return np.array([steer, throttle])


@pytest.fixture
def follower():
    return follow_centerline


# ------------------------------------------------------------------ jobs

@pytest.fixture
def job_store(tmp_path, monkeypatch) -> Path:
    """Run in tmp_path with a job store of its own (tmp_path/store) and no user jobs config, backend,
    Ray address or fault injection from the environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for name in ("KARTSIM_JOBS_BACKEND", "KARTSIM_RAY_ADDRESS", "KARTSIM_JOBS_CONFIG", "KARTSIM_FAULT"):
        monkeypatch.delenv(name, raising=False)
    store = tmp_path / "store"
    monkeypatch.setenv("KARTSIM_JOB_STORE", str(store))
    return store


# ------------------------------------------------------------------ a real Ray head (jobs, sweeps)

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_head():
    """A one-node Ray cluster (2 CPUs, dashboard on 127.0.0.1:<free port>) for the whole session."""
    venv_bin = Path(sys.executable).parent
    ray_exe = venv_bin / "ray" if (venv_bin / "ray").exists() else Path(shutil.which("ray") or "ray")
    port = free_port()
    temp = tempfile.mkdtemp(prefix="kray", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = dict(os.environ, PATH=f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
               RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0",
               RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0")
    log = open(Path(temp) / "ray-start.log", "wb")
    proc = subprocess.Popen(
        [str(ray_exe), "start", "--head", "--block", "--port", "0", "--node-ip-address", "127.0.0.1",
         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(port), "--num-cpus", "2",
         "--include-dashboard", "true", "--disable-usage-stats", "--temp-dir", temp,
         # free ports, not Ray's fixed defaults (52365, 10001, ...): a Ray node left running on this
         # machine would otherwise hold them and this head would never get a job agent
         *(arg for flag in ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--ray-client-server-port",
                            "--runtime-env-agent-port", "--metrics-export-port") for arg in (flag, str(free_port())))],
        env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    address = f"http://127.0.0.1:{port}"

    def stop() -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # `ray start --block` stops the processes it started
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever of its group is left
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
        log.close()
        shutil.rmtree(temp, ignore_errors=True)

    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{address}/api/version", timeout=2) as r:
                if b"ray_version" in r.read():
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            text = (Path(temp) / "ray-start.log").read_text(errors="replace")[-2000:]
            stop()
            pytest.fail(f"ray start --head failed:\n{text}")
        time.sleep(0.5)
    try:
        yield address
    finally:
        stop()


def wait_for(predicate, timeout: float, what: str) -> None:
    """Poll `predicate` every 0.2 s until it holds; fail naming `what` after `timeout` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def detached_job_with_checkpoint(run, capsys, store: Path, name: str, tiny: list[str], timeout: float):
    """`kartsim jobs train --detach` of 1M steps (it will be killed), waited for until a complete
    checkpoint is in the job store; returns (job id, the checkpoints folder, the opened store)."""
    import re

    from kartsim.jobs.store import open_store, steps_inside

    code, out, err = run(capsys, "train", "--timesteps", "1000000", "--save-name", name, *tiny, "--detach")
    assert code == 0, err
    job_id = re.search(r"started job (\S+)", out).group(1)
    ckpts = store / "runs" / name / "checkpoints"
    s = open_store(store)
    wait_for(lambda: any(steps_inside(s, f"runs/{name}/checkpoints/{p.name}") for p in ckpts.glob(f"{name}_*_steps.zip")),
             timeout, "a complete checkpoint")
    return job_id, ckpts, s


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory) -> Path:
    """A model `kartsim train` saved after 64 steps (config, reward statistics and all), shared read-only."""
    from kartsim.rl.train import TrainConfig, train

    base = tmp_path_factory.mktemp("trained")
    train(TrainConfig.from_dict(dict(timesteps=64, save_name="m", vector_envs=2, n_steps=32, batch_size=32, n_epochs=1,
                                     checkpoint_freq=0, telemetry_every=0, progress_bar=False, device="cpu",
                                     runs_dir=str(base / "runs"), models_dir=str(base / "models"))),
          echo=lambda s: None)
    return base / "models" / "m_final.zip"


def tiny_rays_model(path, track: str = "oval.png"):
    """An untrained kartsim rays model saved the way `kartsim train` saves one (config inside, so it
    loads without --trust-model)."""
    from stable_baselines3 import PPO

    from kartsim.envs import EnvConfig, KartEnv
    from kartsim.rl.modelio import save_model
    from kartsim.rl.policies import policy_for

    policy, kwargs = policy_for(False)
    model = PPO(policy, KartEnv(track=track), policy_kwargs=kwargs, n_steps=64, batch_size=32, device="cpu", seed=0)
    return save_model(model, path, EnvConfig(track=track).to_dict(), {})


class KeyboardBot:
    """A closed-loop 'human': presses and releases keys to follow what the AI driver would do."""

    def __init__(self):
        self.race = None
        self.held = set()

    def attach(self, race):
        from kartsim.drivers.ai_driver import AIDriver

        self.race = race
        self.ai = AIDriver(race.stack, race.kart_cfg, "easy", n_karts=race.n, decision_dt=0.1)
        self.next_t = 0.0

    def poll(self, sim_time):
        import pygame

        if sim_time + 1e-9 < self.next_t:
            return []
        self.next_t = sim_time + 0.02
        a = self.ai.act(self.race.state, active=[0])[0]
        want = set()
        current = self.race.state.steer[0] / self.race.kart_cfg.max_steer_rad
        if a[0] > current + 0.05:
            want.add("right")
        elif a[0] < current - 0.05:
            want.add("left")
        if a[1] > 0.3:
            want.add("up")
        elif a[1] < -0.3:
            want.add("down")
        evs = [pygame.event.Event(pygame.KEYUP, key=pygame.key.key_code(k)) for k in self.held - want]
        evs += [pygame.event.Event(pygame.KEYDOWN, key=pygame.key.key_code(k)) for k in want - self.held]
        self.held = want
        return evs


def hand_drawn_track(path: Path, size: int = 600) -> Path:
    """A track as a user draws one: a grey polyline 9 m wide on green, square corners and a hairpin
    (two legs 14 m apart, joined by a half circle of 7 m), no kerbs, no checkpoints file."""
    import cv2

    a, b = 150, size - 150
    mid, r, tip = (a + b) // 2, 28, b - 150
    pts = [(x, b) for x in np.linspace(a, b, 12)] + [(b, y) for y in np.linspace(b, a, 12)[1:]]
    pts += [(x, a) for x in np.linspace(b, mid, 8)[1:]] + [(mid, y) for y in np.linspace(a, tip, 10)[1:]]
    pts += [(mid - r + r * np.cos(t), tip + r * np.sin(t)) for t in np.linspace(0, np.pi, 10)[1:-1]]
    pts += [(mid - 2 * r, y) for y in np.linspace(tip, a, 10)] + [(x, a) for x in np.linspace(mid - 2 * r, a, 8)[1:]]
    pts += [(a, y) for y in np.linspace(a, b, 12)[1:-1]]
    img = np.full((size, size, 3), (60, 140, 60), np.uint8)
    cv2.polylines(img, [np.array(pts, np.int32).reshape(-1, 1, 2)], True, (110, 110, 110), 36, cv2.LINE_AA)
    cv2.imwrite(str(path), img[:, :, ::-1])
    return path
