"""KartRace-v0 (one agent vs opponents) and the PettingZoo ParallelEnv."""

from pathlib import Path

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from kartsim.drivers.ai_driver import AIDriver
from kartsim.envs.multi_agent import KartRaceParallelEnv
from kartsim.envs.race_env import RACE_TERMS, KartRaceEnv
from kartsim.errors import ConfigError
from kartsim.sim.race import REWARD_TERMS


def test_race_env_api_and_a_race_to_the_finish():
    env = KartRaceEnv(track="oval.png", opponents=3, laps=1, ai_level="mixed", grid_position="last")
    check_env(env, skip_render_check=True)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert info["position"] == 4 and info["n_karts"] == 4
    ai = AIDriver(env.race.stack, env.race.kart_cfg, "hard", n_karts=env.race.n)
    total, sums = 0.0, {}
    for _ in range(600):
        obs, r, term, trunc, info = env.step(ai.act(env.race.state, active=[0], world=env.race.state.world)[0])
        total += r
        for name, value in info["reward_terms"].items():
            sums[name] = sums.get(name, 0.0) + value
        assert 1 <= info["position"] <= 4 and info["gap"] >= 0
        assert {"position", "gap", "tyre_condition", "damage"} <= set(info["telemetry"])
        if term or trunc:
            break
    assert term and info["termination"] == "finished"
    board = info["standings"]
    assert [row["position"] for row in board] == [1, 2, 3, 4]
    assert next(row for row in board if row["kart"] == 0)["position"] == info["position"]
    assert all(row["finished"] or row["laps"] == 0 for row in board)
    assert total > 30.0
    # the race terms are reward terms like the others: logged per step and summed per episode
    stats = info["episode_stats"]
    assert set(sums) == set(REWARD_TERMS) | set(RACE_TERMS) == set(stats["reward_terms"])
    assert stats["reward_terms_raw"] == pytest.approx(sums)
    assert stats["reward_terms_raw"]["finish"] == pytest.approx((4 - info["position"] + 1) / 4)
    assert stats["reward_terms_raw"]["position"] == 4 - info["position"]  # started last
    assert stats["reward_terms"]["finish"] == pytest.approx(10.0 * stats["reward_terms_raw"]["finish"])
    assert sum(stats["reward_terms"].values()) == pytest.approx(total)


def test_race_env_options_and_errors():
    env = KartRaceEnv(track="oval.png", opponents=0, weather="wet", vision=True, image_size=32)
    obs, info = env.reset(seed=1)
    assert obs["vision"].shape == (32, 32, 3) and info["weather"] == "wet"
    assert np.all(env.race.state.wetness == 1.0)
    env = KartRaceEnv(track="oval.png", opponents=2, weather="random", grid_position="pole")
    seen = set()
    for seed in range(8):
        _, info = env.reset(seed=seed)
        seen.add(info["weather"])
        assert info["position"] == 1
    assert len(seen) >= 2
    with pytest.raises(ConfigError):
        KartRaceEnv(opponents=20)
    with pytest.raises(ConfigError):
        KartRaceEnv(ai_level="godlike")
    with pytest.raises(ConfigError):
        KartRaceEnv(no_such_option=1)


def test_frozen_model_opponents():
    # a rays model saved by kartsim train (models of other tools need --trust-model: they unpickle code)
    path = Path(__file__).resolve().parents[1] / "fixtures" / "model_rays_v0.zip"
    env = KartRaceEnv(track="oval.png", opponents=2, opponent=str(path), laps=1)
    obs, _ = env.reset(seed=0)
    for _ in range(20):
        obs, r, term, trunc, info = env.step(env.action_space.sample())
    assert env.opp.kind == "model"
    assert env.race.state.speed[1:].max() > 0.0  # the frozen models drive their karts


def test_model_opponent_that_does_not_fit_the_race_is_one_clear_error():
    from kartsim.errors import ModelFileError

    vision_model = Path(__file__).resolve().parents[1] / "fixtures" / "model_vision_v0.zip"
    with pytest.raises(ModelFileError, match="expects observations Dict"):
        KartRaceEnv(track="oval.png", opponents=1, opponent=str(vision_model), laps=1)


def test_pettingzoo_parallel_api():
    from pettingzoo.test import parallel_api_test

    env = KartRaceParallelEnv(track="oval.png", n_agents=3, ai_opponents=1, laps=1)
    parallel_api_test(env, num_cycles=200)
    obs, infos = env.reset(seed=3)
    assert set(obs) == {"kart_0", "kart_1", "kart_2"} and env.state().shape == (4, 5)
    # drive all agents with the AI until they are done: everybody leaves `agents` eventually
    ai = AIDriver(env.race.stack, env.race.kart_cfg, "hard", n_karts=env.race.n)
    steps, totals, last = 0, dict.fromkeys(env.agents, 0.0), {}
    while env.agents and steps < 800:
        a = ai.act(env.race.state, active=[env.agent_index[x] for x in env.agents], world=env.race.state.world)
        obs, rew, term, trunc, info = env.step({x: a[env.agent_index[x]] for x in env.agents})
        for x in rew:
            totals[x] += rew[x]
            assert set(info[x]["reward_terms"]) == set(REWARD_TERMS) | set(RACE_TERMS)
            if term[x] or trunc[x]:
                last[x] = info[x]
        steps += 1
    assert not env.agents
    for x, done_info in last.items():  # every agent's last info sums its episode's reward terms
        assert sum(done_info["episode_stats"]["reward_terms"].values()) == pytest.approx(totals[x]), x
    assert set(last) == set(totals)
    assert {i["termination"] for i in info.values()} <= {"finished", "stuck", "off_track", "wrong_way", "time_limit"}
    with pytest.raises(ConfigError):
        KartRaceParallelEnv(n_agents=10, ai_opponents=5)


def test_opponents_are_seen_by_rays_and_camera():
    race_seen = KartRaceEnv(track="oval.png", opponents=1, grid_position="last", sensor_noise=0.0)
    alone = KartRaceEnv(track="oval.png", opponents=1, grid_position="last", sensor_noise=0.0, collisions=False)
    a, _ = race_seen.reset(seed=0)
    b, _ = alone.reset(seed=0)
    # the kart ahead (3 m further on, 4 m to the side) blocks a ray fanned to that side
    seen = a[:8] < b[:8] - 0.02
    assert seen.sum() >= 1 and (a[:8][seen] * 50.0).max() < 6.0
    np.testing.assert_array_equal(a[:8][~seen], b[:8][~seen])
    cam = KartRaceEnv(track="oval.png", opponents=2, grid_position="last", vision=True, sensor_noise=0.0)
    obs, _ = cam.reset(seed=0)
    blue = np.all(obs["vision"] == np.array([0, 140, 255], np.uint8), axis=-1)
    assert blue.sum() > 5  # the opponents' sprites in the chase view
    wet = KartRaceEnv(track="oval.png", opponents=0, vision=True, weather="wet", sensor_noise=0.0)
    dry = KartRaceEnv(track="oval.png", opponents=0, vision=True, sensor_noise=0.0)
    assert wet.reset(seed=0)[0]["vision"].mean() < dry.reset(seed=0)[0]["vision"].mean() - 5


def test_registered_race_id():
    import gymnasium as gym

    import kartsim.envs  # noqa: F401

    env = gym.make("kartsim/KartRace-v0", track="oval.png", opponents=2, laps=1, vision=True, image_size=48)
    obs, info = env.reset(seed=0)
    assert obs["vision"].shape == (48, 48, 3) and info["n_karts"] == 3
    obs, r, term, trunc, info = env.step(env.action_space.sample())
    assert "position" in info and "gap" in info
    env.close()
