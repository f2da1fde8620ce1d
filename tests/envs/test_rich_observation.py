"""The rich rays observation (``ray_observation="rich"``): layout, values, and the basic one untouched."""

from __future__ import annotations

import numpy as np
import pytest

from kartsim.envs import EnvConfig, KartEnv
from kartsim.envs.config import RICH_RAY_ANGLES_DEG
from kartsim.envs.observations import CURVATURE_WINDOWS_M, RICH_FIELDS, _curvature_ahead
from kartsim.errors import ConfigError


def _rich(**kw) -> EnvConfig:
    return EnvConfig(track="oval.png", ray_observation="rich", ray_angles_deg=RICH_RAY_ANGLES_DEG, sensor_noise=0.0, **kw)


def test_rich_observation_layout_and_values_follow_the_kart():
    env = KartEnv(_rich())
    obs, _ = env.reset(seed=0)
    n = len(RICH_RAY_ANGLES_DEG)
    assert env.observation_space.shape == obs.shape == (n + len(RICH_FIELDS),)
    race = env.race
    for _ in range(20):
        obs, *_ = env.step(np.array([0.3, 1.0], np.float32))
    values = dict(zip(RICH_FIELDS, obs[n:]))
    st = race.state
    assert values["speed"] == pytest.approx(st.vx[0] / 25.0, abs=1e-5)
    assert values["yaw_rate"] == pytest.approx(st.yaw_rate[0] / 3.0, abs=1e-5)
    track = race.stack.tracks[0]
    ci = race.centerline_idx[0]
    assert values["lateral_offset"] == pytest.approx(race.lateral[0] / (0.5 * track.width[ci]), abs=1e-5)
    for (a, b), name in zip(CURVATURE_WINDOWS_M, RICH_FIELDS[6:]):
        assert values[name] == pytest.approx(10 * _curvature_ahead(track, a, b)[ci], abs=1e-5)
    assert np.all(obs[:n] >= 0) and np.all(obs[:n] <= 1)


def test_curvature_windows_average_the_curvature_ahead():
    env = KartEnv(_rich())
    track = env.race.stack.tracks[0]
    spacing = track.length / len(track.s)
    a, b = 10.0, 20.0
    i, j = int(round(a / spacing)), int(round(b / spacing))
    expected = np.mean(np.roll(track.curvature, -5)[i:j])
    assert _curvature_ahead(track, a, b)[5] == pytest.approx(expected)


def test_the_basic_observation_stays_the_guides_ten_values():
    assert KartEnv(EnvConfig(track="oval.png")).observation_space.shape == (10,)
    with pytest.raises(ConfigError, match="ray_observation must be"):
        EnvConfig(ray_observation="fancy")


def test_train_observation_flag_builds_the_rich_env(tmp_path):
    from kartsim.rl.train import TrainConfig, env_config_for, validate

    cfg = TrainConfig.from_dict(dict(observation="rich", runs_dir=str(tmp_path))).resolved()
    env_cfg = env_config_for(cfg)
    assert env_cfg.ray_observation == "rich" and tuple(env_cfg.ray_angles_deg) == RICH_RAY_ANGLES_DEG
    with pytest.raises(ConfigError, match="--observation rich is a rays observation"):
        validate(TrainConfig.from_dict(dict(observation="rich", vision=True)).resolved())
