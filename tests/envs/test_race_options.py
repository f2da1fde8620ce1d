"""Race options for every env: weather (domain randomisation), worn tyres at the start, damage ends."""

import numpy as np
import pytest

from kartsim.envs import KartEnv
from kartsim.rl.vec_env import make_vec_env
from kartsim.envs.config import EnvConfig
from kartsim.errors import KartsimError
from kartsim.sim.config import KartConfig, RaceConfig
from kartsim.telemetry import telemetry_row


def test_random_weather_per_episode_and_worn_tyres():
    env = KartEnv(track="oval.png", race=RaceConfig(weather="random"), kart=KartConfig(tyre_start_condition=0.5))
    wet = set()
    for seed in range(10):
        env.reset(seed=seed)
        wet.add(float(env.race.state.wetness[0]))
        assert env.race.state.tyre_condition[0] == 0.5
    assert wet == {0.0, 0.5, 1.0}
    _, _, _, _, info = env.step(np.array([0.0, 1.0]))
    tel = info["telemetry"]
    assert tel["tyre_condition"] <= 0.5 and tel["damage"] == 0.0
    row = telemetry_row(info, step=1, episode=0, time_s=0.1)
    assert row["tyre_condition"] == pytest.approx(tel["tyre_condition"], abs=1e-4) and row["damage"] == 0
    # default: dry, new tyres
    env = KartEnv(track="oval.png")
    env.reset(seed=0)
    assert env.race.state.wetness[0] == 0.0 and env.race.state.tyre_condition[0] == 1.0
    with pytest.raises(KartsimError):
        KartEnv(track="oval.png", race=RaceConfig(weather="snow"))


def test_batched_env_weather_is_per_kart():
    venv = make_vec_env(EnvConfig(track="oval.png", race=RaceConfig(weather="random")), n_envs=8, seed=0)
    venv.reset()
    assert len(set(venv.race.state.wetness.tolist())) >= 2
    assert not venv.race.state.collisions_possible()  # independent karts never collide


def test_heavy_damage_ends_the_episode():
    env = KartEnv(track="oval.png", race=RaceConfig(random_start=False, max_damage=0.2))
    env.reset(seed=0)
    env.race.state.damage[0] = 0.25  # as after a big crash
    _, reward, term, trunc, info = env.step(np.array([0.0, 0.5]))
    assert term and not trunc and info["termination"] == "damage"
    assert info["reward_terms"]["termination"] == 1.0
