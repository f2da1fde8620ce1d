"""The one env core behind every env, the observation strategies and the race rules' one dataclass."""

from __future__ import annotations

import numpy as np
import pytest

from kartsim.envs import EnvConfig, KartEnv, KartGymVectorEnv
from kartsim.envs.core import EnvCore
from kartsim.envs.multi_agent import KartRaceParallelEnv
from kartsim.envs.observations import RICH_FIELDS, RayObserver, RichRayObserver, VisionObserver, make_observer
from kartsim.envs.race_env import KartRaceEnv, RaceCore
from kartsim.envs.sb3 import KartVecEnv
from kartsim.errors import ConfigError
from kartsim.sim.config import RaceConfig, RaceRules, RewardConfig


def test_every_env_is_a_translation_of_one_core():
    envs = [KartEnv(track="oval.png"), KartVecEnv(EnvConfig(track="oval.png"), 2),
            KartGymVectorEnv(EnvConfig(track="oval.png"), num_envs=2)]
    for env in envs:
        assert type(env.core) is EnvCore and env.race is env.core.race and env.observer is env.core.observer
    for env in (KartRaceEnv(track="oval.png", opponents=1), KartRaceParallelEnv(track="oval.png", n_agents=2)):
        assert isinstance(env.core, RaceCore) and env.race is env.core.race


@pytest.mark.parametrize("fields, kind, shape", [
    ({"ray_angles_deg": (-30.0, 0.0, 30.0)}, RayObserver, (5,)),
    ({"ray_observation": "rich", "ray_angles_deg": (0.0,) * 4}, RichRayObserver, (4 + len(RICH_FIELDS),)),
])
def test_the_strategy_and_its_ray_count_come_from_the_config(fields, kind, shape):
    core = EnvCore(EnvConfig(track="oval.png", **fields), 3)
    assert type(core.observer) is kind and core.observation_space.shape == shape
    core.reset()
    assert core.observer.batch_copy().shape == (3,) + shape and core.camera_image(0) is None


def test_vision_strategy_keeps_a_camera_frame():
    core = EnvCore(EnvConfig(track="oval.png", vision=True, image_size=24, frame_stack=2), 2)
    assert isinstance(core.observer, VisionObserver)
    assert core.observation_space["vision"].shape == (24, 24, 6)
    core.reset()
    core.step(np.zeros((2, 2)))
    np.testing.assert_array_equal(core.camera_image(1), core.observer.single(1)["vision"][..., 3:])
    assert isinstance(make_observer(core.config, core.race), VisionObserver)


def test_autoreset_reports_the_ended_karts_then_restarts_them():
    core = EnvCore(EnvConfig(track="oval.png", race=RaceConfig(max_episode_steps=2)), 2)
    core.seed([0, 1])
    core.reset()
    core.step(np.zeros((2, 2)))
    first = core.autoreset()
    assert len(first.ended) == 0 and first.infos is None and not first.truncated.any()
    core.step(np.zeros((2, 2)))
    last = core.observer.batch_copy()
    out = core.autoreset()
    assert out.ended.tolist() == [0, 1] and out.truncated.all() and out.rewards.dtype == np.float32
    np.testing.assert_array_equal(np.stack(out.final_observations), last)
    assert out.infos[1]["termination"] == "time_limit" and "telemetry" not in out.infos[1]
    assert core.race.steps.tolist() == [0, 0] and not core.race.truncated.any()


def test_race_rules_are_one_checked_dataclass():
    with pytest.raises(ConfigError, match=r"^laps must be at least 1, not 0$"):  # no "and 1e+12"
        RaceRules(laps=0)
    with pytest.raises(ConfigError, match="weather must be one of"):
        RaceRules(weather="snow")
    with pytest.raises(ConfigError, match=r"max_damage must be in \(0, 1\]"):
        RaceRules(max_damage=0.0)
    assert RaceRules().resolved(RaceConfig(weather="wet", max_damage=0.5)) == RaceRules(weather="wet", max_damage=0.5)
    assert RaceRules(weather="damp").resolved(RaceConfig()).weather == "damp"
    with pytest.raises(ConfigError, match="max_damage=0.3 conflicts with race.max_damage=0.5"):
        RaceRules(max_damage=0.3).resolved(RaceConfig(max_damage=0.5))
    env = KartRaceEnv(track="oval.png", opponents=1, laps=2, collisions=False, grid_row_m=8.0)
    assert env.race.rules == RaceRules(laps=2, collisions=False, grid_row_m=8.0, weather="dry")


def test_range_messages_write_big_bounds_readably():
    with pytest.raises(ConfigError, match=r"^reward.progress must be between -1,000,000 and 1,000,000, not 2000000.0$"):
        RewardConfig(progress=2e6)
