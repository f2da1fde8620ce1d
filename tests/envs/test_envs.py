"""The Gymnasium envs: API checks, spaces, determinism, pickling, batched = single, rendering."""

import pickle

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import kartsim.envs  # noqa: F401
from kartsim.envs import EnvConfig, KartEnv
from kartsim.envs.sb3 import KartVecEnv
from kartsim.errors import ConfigError
from kartsim.sim.config import RaceConfig

ENV_IDS = ["kartsim/Kart-v0", "kartsim/KartVision-v0"]


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gymnasium_check_env(env_id):
    env = gym.make(env_id, track="oval.png").unwrapped
    gym_check_env(env, skip_render_check=True)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_sb3_check_env(env_id):
    sb3_check_env(gym.make(env_id, track="oval.png").unwrapped, warn=True)


def test_vision_spaces_match_the_guide():
    env = gym.make("kartsim/KartVision-v0")
    obs, _ = env.reset(seed=0)
    space = env.observation_space
    assert space["vision"].shape == (84, 84, 3) and space["vision"].dtype == np.uint8
    assert space["telemetry"].shape == (9,) and space["telemetry"].low.min() == -10.0
    assert obs["vision"].shape == (84, 84, 3) and obs["telemetry"].shape == (9,)
    assert env.action_space.shape == (2,)


def test_rays_space():
    env = gym.make("kartsim/Kart-v0")
    obs, _ = env.reset(seed=0)
    assert env.observation_space.shape == (10,) and obs.shape == (10,)
    assert env.observation_space.contains(obs)


@pytest.mark.parametrize(
    "kwargs, shape",
    [
        ({"grayscale": True}, (84, 84, 1)),
        ({"frame_stack": 4}, (84, 84, 12)),
        ({"grayscale": True, "frame_stack": 4}, (84, 84, 4)),
        ({"camera": "driver"}, (84, 84, 3)),
        ({"image_size": 64}, (64, 64, 3)),
    ],
)
def test_vision_variants_shapes(kwargs, shape):
    env = KartEnv(vision=True, track="oval.png", **kwargs)
    obs, _ = env.reset(seed=0)
    assert obs["vision"].shape == shape == env.observation_space["vision"].shape
    obs, *_ = env.step(env.action_space.sample())
    assert env.observation_space.contains(obs)


def test_frame_stack_shifts_oldest_out():
    env = KartEnv(vision=True, track="oval.png", frame_stack=3, sensor_noise=0.0)
    obs, _ = env.reset(seed=0)
    assert np.array_equal(obs["vision"][..., :3], obs["vision"][..., 6:])  # filled with the first frame
    prev = obs["vision"]
    for _ in range(3):
        obs, *_ = env.step(np.array([0.5, 1.0], np.float32))
        assert np.array_equal(obs["vision"][..., :6], prev[..., 3:])
        prev = obs["vision"]


def test_camera_changes_when_the_kart_turns():
    env = KartEnv(vision=True, track="oval.png", sensor_noise=0.0)
    env.reset(seed=3)
    first = env.camera_image()
    for _ in range(10):
        env.step(np.array([1.0, 0.6], np.float32))
    assert np.abs(env.camera_image().astype(int) - first.astype(int)).mean() > 2.0


# Same seed = same trajectory, exactly, for every registered id: tests/envs/test_env_conformance.py


def test_pickled_env_continues_identically():
    env = KartEnv(vision=True, track="oval.png")
    env.reset(seed=0)
    clone = pickle.loads(pickle.dumps(env))
    action = np.array([0.2, 1.0], np.float32)
    for _ in range(5):
        a, ra, *_ = env.step(action)
        b, rb, *_ = clone.step(action)
        assert np.array_equal(a["vision"], b["vision"]) and ra == rb


@pytest.mark.parametrize("vision", [False, True])
def test_batched_env_equals_single_envs(vision):
    n, seed = 4, 11
    cfg = EnvConfig(vision=vision, track="oval.png", race=RaceConfig(max_episode_steps=30, stuck_time_s=1.5))
    venv = KartVecEnv(cfg, n, seed=seed)
    singles = [KartEnv(cfg) for _ in range(n)]
    vobs = venv.reset()
    for i, e in enumerate(singles):
        e.reset(seed=seed + i)
    rng = np.random.default_rng(1)
    resets = 0
    for step in range(70):
        actions = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
        vobs, vrew, vdone, vinfo = venv.step(actions)
        for i, env in enumerate(singles):
            o, r, term, trunc, info = env.step(actions[i])
            assert vrew[i] == pytest.approx(r, abs=1e-5)
            assert vdone[i] == (term or trunc)
            if term or trunc:
                resets += 1
                assert vinfo[i]["TimeLimit.truncated"] == (trunc and not term)
                _same(vinfo[i]["terminal_observation"], o)
                o, _ = env.reset()
            _same(_index(vobs, i), o)
    assert resets > 0, "the test should cover auto-resets"


def _index(obs, i):
    return {k: v[i] for k, v in obs.items()} if isinstance(obs, dict) else obs[i]


def _same(a, b):
    if isinstance(a, dict):
        for k in a:
            np.testing.assert_allclose(a[k], b[k], atol=1e-5)
    else:
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_vec_env_returns_copies_not_views():
    venv = KartVecEnv(EnvConfig(track="oval.png"), 2, seed=0)
    first = venv.reset()
    kept = first.copy()
    venv.step(np.ones((2, 2), np.float32))
    assert np.array_equal(first, kept)


def test_rgb_array_render_shows_map():
    env = KartEnv(track="oval.png", render_mode="rgb_array")
    env.reset(seed=0)
    env.step(np.array([0.0, 1.0], np.float32))
    frame = env.render()
    assert frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8
    assert min(frame.shape[:2]) > 100


def test_track_pool_from_list_and_folder(tmp_path):
    from kartsim.sim.trackgen import generate_track, save_track

    for seed in (1, 2):
        save_track(generate_track(seed, size=512), tmp_path / f"t{seed}.png")
    for spec in ([str(tmp_path / "t1.png"), str(tmp_path / "t2.png")], str(tmp_path)):
        venv = KartVecEnv(EnvConfig(track=spec), 8, seed=0)
        venv.reset()
        assert len(venv.race.stack.tracks) == 2
        assert set(venv.race.state.track_idx) == {0, 1}
        venv.step(np.zeros((8, 2), np.float32))


def test_config_round_trips_and_rejects_unknown_fields():
    cfg = EnvConfig(vision=True, frame_stack=4, grayscale=True, camera="driver", track=["a.png", "b.png"])
    assert EnvConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown"):
        EnvConfig.from_dict({"visoin": True})
    with pytest.raises(ConfigError, match="camera"):
        EnvConfig(camera="drone")


@pytest.mark.parametrize("vision", [False, True])
def test_subproc_backend_equals_batched(vision):
    from kartsim.rl.vec_env import make_vec_env

    cfg = EnvConfig(vision=vision, track="oval.png", race=RaceConfig(max_episode_steps=20))
    batched = make_vec_env(cfg, 5, seed=3)
    sub = make_vec_env(cfg, 5, seed=3, backend="subproc", n_workers=2)
    try:
        _same(sub.reset(), batched.reset())
        rng = np.random.default_rng(0)
        for _ in range(30):
            a = rng.uniform(-1, 1, (5, 2)).astype(np.float32)
            so, sr, sd, si = sub.step(a)
            bo, br, bd, bi = batched.step(a)
            _same(so, bo)
            np.testing.assert_allclose(sr, br)
            assert np.array_equal(sd, bd)
            assert [i.get("TimeLimit.truncated") for i in si] == [i.get("TimeLimit.truncated") for i in bi]
        assert sub.get_attr("config")[0] == cfg
    finally:
        sub.close()


def test_unknown_vec_backend_is_a_clear_error():
    from kartsim.rl.vec_env import make_vec_env

    with pytest.raises(ConfigError, match="vec backend"):
        make_vec_env(EnvConfig(track="oval.png"), 2, backend="threads")


def test_gymnasium_vector_api_matches_single_envs():
    venv = gym.make_vec("kartsim/Kart-v0", num_envs=3, vectorization_mode="vector_entry_point",
                        track="oval.png", race=RaceConfig(max_episode_steps=15))
    singles = [KartEnv(track="oval.png", race=RaceConfig(max_episode_steps=15)) for _ in range(3)]
    obs, _ = venv.reset(seed=5)
    for i, env in enumerate(singles):
        np.testing.assert_allclose(obs[i], env.reset(seed=5 + i)[0])
    assert venv.single_observation_space.shape == (10,) and venv.observation_space.shape == (3, 10)
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.uniform(-1, 1, (3, 2)).astype(np.float32)
        obs, rew, term, trunc, infos = venv.step(a)
        for i, env in enumerate(singles):
            o, r, t, tr, info = env.step(a[i])
            assert (t, tr) == (term[i], trunc[i]) and r == pytest.approx(rew[i], abs=1e-5)
            if t or tr:
                np.testing.assert_allclose(infos["final_obs"][i], o)
                assert infos["final_info"][i]["episode_stats"]["steps"] == info["episode_stats"]["steps"]
                o, _ = env.reset()
            np.testing.assert_allclose(obs[i], o)
    assert trunc.dtype == bool
