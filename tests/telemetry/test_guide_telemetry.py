"""Issue 18: wetness in the telemetry (item 6), --telemetry-envs and ./telemetry_log.csv after local
training, so the guide's `pd.read_csv("telemetry_log.csv")` works where training ran (item 1)."""

from __future__ import annotations

import csv

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest

import kartsim.envs  # noqa: F401
from kartsim.sim.config import RaceConfig
from kartsim.telemetry import TELEMETRY_COLUMNS, TelemetryWriter


@pytest.mark.parametrize("env_id, extra", [("kartsim/Kart-v0", {}), ("kartsim/KartRace-v0", {"opponents": 1})])
def test_wetness_is_in_the_info_telemetry_and_the_csv(tmp_path, env_id, extra):
    env = gym.make(env_id, track="oval.png", race=RaceConfig(weather="damp"), **extra)
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.array([0.0, 1.0], np.float32))
    assert info["telemetry"]["wetness"] == 0.5
    with TelemetryWriter(tmp_path / "t.csv") as w:
        w.log(info)
    row = next(csv.DictReader(open(tmp_path / "t.csv")))
    assert float(row["wetness"]) == 0.5
    assert "wetness" in TELEMETRY_COLUMNS
    env.close()


def test_appending_to_an_older_csv_keeps_its_header(tmp_path):
    old = [c for c in TELEMETRY_COLUMNS if c not in ("wetness", "env")]
    path = tmp_path / "old.csv"
    path.write_text(",".join(old) + "\n")
    with TelemetryWriter(path, append=True) as w:
        w.log({"telemetry": {"speed": 3.0, "wetness": 1.0}}, step=5)
    rows = list(csv.reader(open(path)))
    assert rows[0] == old and len(rows[1]) == len(old)


def test_training_logs_n_envs_and_links_the_csv_here(tmp_path, monkeypatch):
    from kartsim.rl.train import TrainConfig, train

    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig.from_dict(dict(vector_envs=3, n_steps=32, batch_size=32, n_epochs=1, progress_bar=False, device="cpu",
                      timesteps=96, save_name="tel", seed=0, telemetry_envs=2, checkpoint_freq=0,
                      env_options={"race.max_episode_steps": 20}))
    lines: list[str] = []
    train(cfg, echo=lines.append)
    df = pd.read_csv("telemetry_log.csv")  # the guide's snippet, verbatim
    assert (tmp_path / "telemetry_log.csv").resolve() == (tmp_path / "runs/tel/telemetry_log.csv").resolve()
    assert sorted(df["env"].unique()) == [0, 1]
    for _, kart in df.groupby("env"):
        assert len(kart) == 32 and kart["episode"].max() >= 1  # 20-step episodes: each kart counts its own
    assert any("./telemetry_log.csv links to it" in line for line in lines)
    # issue 18 item 11: the final model is stored once, models/ holds a hard link to the run's file
    assert (tmp_path / "models/tel_final.zip").samefile(tmp_path / "runs/tel/tel_final.zip")
    assert any("the same file as runs/tel/tel_final.zip" in line for line in lines)
    # a second run re-points the link; a real file of that name is never touched
    train(TrainConfig.from_dict({**cfg.to_dict(), "save_name": "tel2", "telemetry_envs": 1}), echo=lines.append)
    assert (tmp_path / "telemetry_log.csv").resolve() == (tmp_path / "runs/tel2/telemetry_log.csv").resolve()
    (tmp_path / "telemetry_log.csv").unlink()
    (tmp_path / "telemetry_log.csv").write_text("mine")
    lines.clear()
    train(TrainConfig.from_dict({**cfg.to_dict(), "save_name": "tel3"}), echo=lines.append)
    assert (tmp_path / "telemetry_log.csv").read_text() == "mine"
    assert any("Kept ./telemetry_log.csv" in line for line in lines)


def test_telemetry_envs_is_checked(tmp_path):
    from kartsim.errors import ConfigError
    from kartsim.rl.train import TrainConfig, validate

    with pytest.raises(ConfigError, match="--telemetry-envs"):
        validate(TrainConfig.from_dict(dict(vector_envs=2, telemetry_envs=3)).resolved())


def test_readers_take_one_kart_of_a_several_kart_csv(tmp_path):
    from kartsim.telemetry import read_telemetry

    path = tmp_path / "t.csv"
    with TelemetryWriter(path) as w:
        for step in range(4):
            for env in (0, 1):
                w.log({"telemetry": {"speed": float(env), "x": 1.0, "y": 2.0}}, step=step, env=env)
    assert set(read_telemetry(path)["speed"]) == {0.0}
    assert len(read_telemetry(path, env=None)) == 8
    from kartsim.dashboard.data import TelemetryReader

    df = TelemetryReader._parse(path.read_bytes(), "t.csv", 1)
    assert len(df) == 4 and "env" not in df.columns
