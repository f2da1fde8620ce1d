"""Playing, recording and evaluating models; clear errors for model files that cannot be used."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from kartsim.errors import ConfigError, ModelFileError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A rays model with a checkpoint and a small vision model, trained for a few steps."""
    from kartsim.rl.train import TrainConfig, train

    base = tmp_path_factory.mktemp("models")
    common = dict(runs_dir=str(base / "runs"), models_dir=str(base / "models"), device="cpu", progress_bar=False,
                  vector_envs=2, n_steps=32, batch_size=32, n_epochs=1, telemetry_every=0)
    train(TrainConfig.from_dict(dict(timesteps=128, save_name="rays", checkpoint_freq=64, **common)), echo=lambda s: None)
    train(TrainConfig.from_dict(dict(vision=True, timesteps=64, save_name="vis", features_dim=64, checkpoint_freq=0, **common)),
          echo=lambda s: None)
    return {
        "rays": base / "models" / "rays_final.zip",
        "rays_ckpt": base / "runs" / "rays" / "checkpoints" / "rays_64_steps.zip",
        "vision": base / "models" / "vis_final.zip",
        "dir": base,
    }


class CenterlineModel:
    """Stands in for a trained model: drives the env's kart along the centerline (pure pursuit)."""

    def __init__(self, env, speed: float = 14.0) -> None:
        self.env, self.speed = env, speed

    def predict(self, obs, deterministic=True):
        race = self.env.race
        st = race.state
        track = race.stack.tracks[int(st.track_idx[0])]
        s_target = (race.s[0] + 7.0) % track.length
        tx, ty, _ = (float(v[0]) for v in track.pose_at(np.array([s_target])))
        angle = (np.arctan2(ty - st.y[0], tx - st.x[0]) - st.yaw[0] + np.pi) % (2 * np.pi) - np.pi
        return np.array([np.clip(angle * 2.5, -1, 1), np.clip((self.speed - st.speed[0]) * 0.5, -1, 1)],
                        dtype=np.float32), None


def test_play_prints_each_lap_time_and_a_summary(models, monkeypatch):
    """A driver that laps: every lap time is printed as it happens, then the best lap."""
    import kartsim.rl.play as play_mod
    from kartsim.envs import KartEnv

    real_load = play_mod.load_driver
    made: list = []

    class RecordingEnv(KartEnv):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(self)

    monkeypatch.setattr("kartsim.envs.KartEnv", RecordingEnv)

    class Scripted:
        def predict(self, obs, deterministic=True):
            return CenterlineModel(made[-1]).predict(obs)

    def load(*args, **kwargs):
        driver = real_load(*args, **kwargs)
        driver.model = Scripted()
        return driver

    monkeypatch.setattr(play_mod, "load_driver", load)
    lines: list[str] = []
    results = play_mod.play(models["rays"], track=["oval.png"], max_steps=700, window=False, echo=lines.append)
    assert results[0].laps >= 1
    lap_lines = [l for l in lines if l.strip().startswith("Lap ")]
    assert lap_lines and re.fullmatch(r"  Lap 1: \d+\.\d{3} s", lap_lines[0])
    assert re.search(r"^Best lap: \d+\.\d{3} s \(\d+ lap\(s\) completed in 1 episode\(s\)\)$", lines[-1])
    assert lines[0].startswith(f"Driving {models['rays']} (rays model) on oval.png")


@pytest.mark.slow
def test_play_ppo_records_a_gif_headless(models, tmp_path):
    env = dict(os.environ, SDL_VIDEODRIVER="dummy", PYTHONPATH=str(ROOT))
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    gif = tmp_path / "lap.gif"
    cmd = [sys.executable, str(ROOT / "play_ppo.py"), "--model", str(models["vision"]), "--record", str(gif),
           "--max-steps", "25"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert "(vision model)" in proc.stdout
    assert re.search(r"Episode 1: \d+ lap\(s\), best .*, mean speed \d+\.\d m/s", proc.stdout)
    # 25 steps of 0.1 s at the default 15 fps: 2.5 s of video, 37 frames (25 distinct images, repeats shown longer)
    assert f"Recorded 37 frames (2.5 s at 15 fps) to {gif}" in proc.stdout

    from PIL import Image

    with Image.open(gif) as im:
        assert im.n_frames == 25
        assert im.size[0] <= 640
        total = 0
        for i in range(im.n_frames):
            im.seek(i)
            total += im.info["duration"]
        assert abs(total - 2500) <= 10 * im.n_frames  # real time (GIF durations are in 10 ms steps)

    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert again.returncode == 2
    assert "already exists; pass --force to overwrite it" in again.stderr
    assert "Traceback" not in again.stderr


def test_record_mp4(models, tmp_path):
    from kartsim.rl.play import play

    mp4 = tmp_path / "lap.mp4"
    play(models["rays"], record=mp4, max_steps=12, echo=lambda s: None)
    assert mp4.stat().st_size > 1000

    import cv2

    cap = cv2.VideoCapture(str(mp4))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 18  # 1.2 s at the default 15 fps: --fps is honoured
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(15, abs=0.01)
    cap.release()
    slow = tmp_path / "slow.mp4"
    play(models["rays"], record=slow, max_steps=12, record_fps=5, echo=lambda s: None)
    cap = cv2.VideoCapture(str(slow))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 6 and cap.get(cv2.CAP_PROP_FPS) == pytest.approx(5, abs=0.01)
    cap.release()


def test_record_needs_gif_or_mp4(models, tmp_path):
    from kartsim.rl.play import play

    with pytest.raises(ConfigError, match=r"\.gif or \.mp4"):
        play(models["rays"], record=tmp_path / "lap.avi", echo=lambda s: None)


def test_eval_prints_a_comparison_table(models, capsys):
    from kartsim.cli import main

    assert main(["eval", str(models["rays"]), str(models["rays_ckpt"]), "--episodes", "2", "--max-steps", "40",
                 "--track-name", "oval.png"]) == 0
    out = capsys.readouterr().out
    header = next(l for l in out.splitlines() if l.startswith("model"))
    for col in ("laps", "completed", "best lap", "mean lap", "off track", "mean speed"):
        assert col in header
    rows = [l for l in out.splitlines() if l.startswith(("rays_final.zip", "rays_64_steps.zip"))]
    assert len(rows) == 2
    assert all("oval.png" in r and "% of 2" in r for r in rows)


def test_evaluate_starts_on_the_start_line(models):
    from kartsim.envs import KartEnv
    from kartsim.rl.evaluate import evaluate_model
    from kartsim.rl.play import load_driver

    driver = load_driver(models["rays"])
    assert driver.env_config.race.random_start is False
    env = KartEnv(driver.env_config)
    _, info = env.reset(seed=1)
    first = env.race.s[0]
    env.reset(seed=2)
    assert env.race.s[0] == pytest.approx(first)
    score = evaluate_model(models["rays"], episodes=1, max_steps=20)
    assert score.episodes == 1 and score.kind == "rays" and 0.0 <= score.completion_rate <= 1.0


# ---------------------------------------------------------------- model files that cannot be used


def test_missing_model_file(capsys, tmp_path, monkeypatch):
    from kartsim.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["play", "--model", "no/such/model.zip", "--no-window"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: model file not found: no/such/model.zip; no models here") and err.count("\n") == 1
    # issue 18: it lists the models it can see, newest first
    for rel in ("models/a_final.zip", "runs/b/b_final.zip", "c.zip"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"PK")
    assert main(["play", "--model", "missing.zip", "--no-window"]) == 2
    err = capsys.readouterr().err
    assert "models here: " in err and all(n in err for n in ("models/a_final.zip", "runs/b/b_final.zip", "c.zip"))


def test_garbage_bytes(tmp_path):
    from kartsim.rl.play import load_driver

    bad = tmp_path / "model.zip"
    bad.write_bytes(os.urandom(2048))
    with pytest.raises(ModelFileError, match="not a model file"):
        load_driver(bad)


def test_truncated_model_zip(models, tmp_path):
    from kartsim.rl.play import load_driver

    data = models["rays"].read_bytes()
    cut = tmp_path / "cut.zip"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError):
        load_driver(cut)


def test_zip_that_is_not_a_model(tmp_path):
    from kartsim.rl.play import load_driver

    path = tmp_path / "photos.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("hello.txt", "hi")
    with pytest.raises(ModelFileError, match="not a stable-baselines3 model"):
        load_driver(path)


def test_model_whose_observation_space_does_not_fit(models, tmp_path):
    """A vision model whose config was changed to frame_stack=3: its weights expect 3 channels."""
    from kartsim.rl.play import load_driver

    path = tmp_path / "edited.zip"
    with zipfile.ZipFile(models["vision"]) as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "kartsim_config.json":
                payload = json.loads(data)
                payload["env"]["frame_stack"] = 3
                data = json.dumps(payload).encode()
            dst.writestr(item, data)
    with pytest.raises(ModelFileError, match="do not fit the network its kartsim_config.json describes"):
        load_driver(path)


def test_plain_sb3_model_for_another_env(tmp_path):
    from stable_baselines3 import PPO

    from kartsim.rl.play import load_driver

    path = tmp_path / "pendulum.zip"
    PPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=64, device="cpu").save(path)
    with pytest.raises(ModelFileError, match="--trust-model"):
        load_driver(path)
    with pytest.raises(ModelFileError, match=r"expects observations Box\(3,\).*--vision or --rays"):
        load_driver(path, trust_model=True)


def test_plain_sb3_model_of_the_kart_env_plays(tmp_path):
    """A model saved without kartsim_config.json (plain model.save) still plays; rays vs vision is
    read from its observation space, or said with --rays / --vision."""
    from stable_baselines3 import PPO

    from kartsim.envs import EnvConfig, KartEnv
    from kartsim.rl.play import load_driver, play

    path = tmp_path / "plain.zip"
    PPO("MlpPolicy", KartEnv(EnvConfig()), n_steps=64, batch_size=64, device="cpu").save(path)
    assert load_driver(path, trust_model=True).vision is False
    with pytest.raises(ModelFileError, match="expects observations Box"):
        load_driver(path, vision=True, trust_model=True)
    results = play(path, max_steps=5, window=False, echo=lambda s: None, trust_model=True)
    assert results[0].steps == 5


def test_vision_flag_conflicting_with_the_saved_config(models):
    from kartsim.rl.play import load_driver

    with pytest.raises(ConfigError, match="is a rays model"):
        load_driver(models["rays"], vision=True)


def test_play_in_a_window(models, monkeypatch):
    """render_mode human (pygame; the SDL dummy video driver stands in for a display)."""
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    from kartsim.rl.play import play

    lines: list[str] = []
    results = play(models["rays"], window=True, max_steps=4, echo=lines.append)
    assert results[0].steps == 4
    assert not any("No display" in l for l in lines)


def test_gif_memory_stays_bounded(tmp_path):
    from kartsim.envs import EnvConfig, KartEnv
    from kartsim.rl.play import Recorder

    env = KartEnv(EnvConfig(track="oval.png"), render_mode="rgb_array")
    env.reset(seed=0)
    rec = Recorder(tmp_path / "x.gif", fps=10, max_width=160, max_gif_frames=8)
    for _ in range(12):  # one image a step; past 8 images, neighbours merge (each then shows twice as long)
        _, _, _, _, info = env.step(np.zeros(2, np.float32))
        rec.capture(env, info)
    assert len(rec.frames) <= 8 and sum(rec.durations) == 12
    assert rec.close() == 12
