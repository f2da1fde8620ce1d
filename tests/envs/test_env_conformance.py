"""Conformance of every registered ``kartsim/`` env: same seed = exactly the same observations, rewards
and infos (``gymnasium.utils.env_checker.data_equivalence``, exact), another seed differs, and a pickled
env continues exactly like the original. Ids come from the Gymnasium registry, so a new env is covered
as soon as it is registered."""

from __future__ import annotations

import copy
import pickle

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import data_equivalence

import kartsim.envs  # noqa: F401  (registers the ids)
import kartsim.errors

ENV_IDS = sorted(env_id for env_id in gym.registry if env_id.startswith("kartsim/"))
VECTOR_IDS = [env_id for env_id in ENV_IDS if gym.registry[env_id].vector_entry_point is not None]
KWARGS = {"track": "oval.png", "race": {"max_episode_steps": 25}}  # short episodes: the rollouts cross a reset
STEPS = 40


def test_the_registry_has_every_env():
    assert ENV_IDS == ["kartsim/Kart-v0", "kartsim/KartRace-v0", "kartsim/KartVision-v0"]


def _actions(n: int, shape: tuple[int, ...] = (2,)) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.uniform(-1, 1, shape).astype(np.float32) for _ in range(n)]


def _nan_apart(data):
    """`data` with every float array split into (NaN mask, values with NaN as 0): the vector infos
    say "no lap time" with NaN, which never equals itself."""
    if isinstance(data, dict):
        return {k: _nan_apart(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return type(data)(_nan_apart(v) for v in data)
    if isinstance(data, np.ndarray) and data.dtype.kind == "f":
        return np.isnan(data), np.where(np.isnan(data), 0.0, data).astype(data.dtype)
    return data


def _run(env, actions) -> list:
    """(obs, reward, terminated, truncated, info) of every step, resetting when an episode ends."""
    out = []
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        out.append((obs, reward, terminated, truncated, info))
        if terminated or truncated:
            out.append(env.reset())
    return out


def rollout(env_id: str, seed: int) -> list:
    env = gym.make(env_id, **KWARGS)
    try:
        return [env.reset(seed=seed), *_run(env, _actions(STEPS))]
    finally:
        env.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_same_seed_gives_exactly_the_same_observations_rewards_and_infos(env_id):
    a, b, c = rollout(env_id, 7), rollout(env_id, 7), rollout(env_id, 8)
    assert any(len(step) == 2 for step in a[1:]), "the rollout should cross an episode end"
    assert data_equivalence(a, b, exact=True)
    assert not data_equivalence(a, c, exact=True)


def test_exact_comparison_catches_one_flipped_pixel():
    a = rollout("kartsim/KartVision-v0", 7)
    b = copy.deepcopy(a)
    image = b[5][0]["vision"]
    image[image.shape[0] // 2, image.shape[1] // 2, 0] ^= 1
    assert not data_equivalence(a, b, exact=True)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_pickled_env_continues_exactly_like_the_original(env_id):
    env = gym.make(env_id, **KWARGS)
    env.reset(seed=3)
    _run(env, _actions(5))
    clone = pickle.loads(pickle.dumps(env))
    actions = _actions(STEPS)
    assert data_equivalence(_run(env, actions), _run(clone, actions), exact=True)


@pytest.mark.parametrize("env_id", VECTOR_IDS)
def test_vector_env_same_seed_same_everything(env_id):
    def vector_rollout(seed):
        envs = gym.make_vec(env_id, num_envs=3, vectorization_mode="vector_entry_point", **KWARGS)
        try:
            out = [envs.reset(seed=seed)]
            for action in _actions(STEPS, (3, 2)):
                out.append(envs.step(action))
            return _nan_apart(out)
        finally:
            envs.close()

    a, b = vector_rollout(5), vector_rollout(5)
    assert data_equivalence(a, b, exact=True)
    assert not data_equivalence(a, vector_rollout(6), exact=True)


def test_vector_env_reset_takes_one_seed_per_env():
    envs = gym.make_vec("kartsim/Kart-v0", num_envs=3, vectorization_mode="vector_entry_point", **KWARGS)
    with pytest.raises(kartsim.errors.ConfigError, match=r"one seed per env \(3\), got 2 seeds"):
        envs.reset(seed=[1, 2])  # was an IndexError from the core
    a, _ = envs.reset(seed=[1, 2, 3])
    b, _ = envs.reset(seed=1)  # an int seeds env i with seed + i
    assert data_equivalence(a, b, exact=True)
    envs.close()


def test_the_ray_count_comes_from_the_angles():
    env = gym.make("kartsim/Kart-v0", track="oval.png", ray_angles_deg=(-60.0, -20.0, 0.0, 20.0, 60.0))
    obs, _ = env.reset(seed=0)
    assert env.observation_space.shape == obs.shape == (7,)  # 5 distances, speed, heading error
    obs, *_ = env.step(np.zeros(2, np.float32))
    assert env.observation_space.contains(obs)
    with pytest.raises(kartsim.errors.ConfigError, match="1 to 64 angles"):
        gym.make("kartsim/Kart-v0", ray_angles_deg=())
