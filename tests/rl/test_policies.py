"""The vision features extractor and the policy choice per observation kind."""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np
import pytest
import torch as th

from kartsim.rl.policies import KartVisionExtractor, policy_for


def _space(h: int, w: int, c: int, channels_first: bool = False) -> gym.spaces.Dict:
    shape = (c, h, w) if channels_first else (h, w, c)
    return gym.spaces.Dict(
        vision=gym.spaces.Box(0, 255, shape, np.uint8), telemetry=gym.spaces.Box(-10, 10, (9,), np.float32)
    )


@pytest.mark.parametrize("channels", [3, 1, 12, 4])  # RGB, grayscale, 4 stacked RGB, 4 stacked gray
@pytest.mark.parametrize("channels_first", [False, True])
def test_extractor_shapes(channels, channels_first):
    space = _space(84, 84, channels, channels_first)
    ext = KartVisionExtractor(space, features_dim=512)
    assert ext.cnn[0].in_channels == channels
    obs = {k: th.as_tensor(np.stack([v.sample() for _ in range(5)])).float() for k, v in space.spaces.items()}
    out = ext(obs)
    assert out.shape == (5, 512)
    assert th.all(out >= 0)  # fused by ReLU


def test_extractor_follows_the_guide_architecture():
    ext = KartVisionExtractor(_space(84, 84, 3), features_dim=1024)
    convs = [m for m in ext.cnn if isinstance(m, th.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (32, (8, 8), (4, 4)), (64, (4, 4), (2, 2)), (64, (3, 3), (1, 1))]
    assert ext.features_dim == 1024
    assert ext.telemetry_mlp[0].in_features == 9


def test_extractor_scales_pixels_itself():
    """The same image as uint8 values 0..255 gives the same features regardless of layout."""
    last = KartVisionExtractor(_space(84, 84, 3), features_dim=32)
    first = KartVisionExtractor(_space(84, 84, 3, channels_first=True), features_dim=32)
    first.load_state_dict(last.state_dict())
    img = th.randint(0, 256, (2, 84, 84, 3)).float()
    tel = th.zeros(2, 9)
    a = last({"vision": img, "telemetry": tel})
    b = first({"vision": img.permute(0, 3, 1, 2), "telemetry": tel})
    assert th.allclose(a, b, atol=1e-5)
    white = last({"vision": th.full((1, 84, 84, 3), 255.0), "telemetry": th.zeros(1, 9)})
    assert th.isfinite(white).all() and white.abs().max() < 100  # inputs were scaled to [0, 1]


def test_extractor_equals_the_cnn_on_pixels_divided_by_255():
    """Folding 1/255 into the first convolution changes nothing: same features as cnn(image / 255)."""
    ext = KartVisionExtractor(_space(84, 84, 3), features_dim=32)
    img = th.randint(0, 256, (3, 84, 84, 3), dtype=th.uint8)
    tel = th.randn(3, 9)
    with th.no_grad():
        reference = ext.fusion(th.cat([ext.cnn(img.permute(0, 3, 1, 2).float() / 255.0), ext.telemetry_mlp(tel)], 1))
        np.testing.assert_allclose(ext({"vision": img, "telemetry": tel}).numpy(), reference.numpy(), atol=1e-5)


def test_idle_cores_sees_a_busy_core():
    import subprocess
    import sys

    from kartsim.rl.train import idle_cores

    cores = len(os.sched_getaffinity(0))
    assert 1 <= idle_cores() <= cores
    if cores < 2:
        pytest.skip("needs two cores")
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        assert idle_cores(window_s=0.5) <= cores - 1
    finally:
        spin.kill()
        spin.wait()


def test_extractor_rejects_bad_sizes():
    with pytest.raises(ValueError):
        KartVisionExtractor(_space(84, 84, 3), features_dim=0)


def test_policy_for_both_kinds():
    from kartsim.rl.policies import KartVisionPolicy

    name, kwargs = policy_for(True, 1024, precision="bf16")
    assert name is KartVisionPolicy
    assert kwargs["features_extractor_class"] is KartVisionExtractor
    assert kwargs["features_extractor_kwargs"] == {"features_dim": 1024, "bf16": True}
    assert kwargs["normalize_images"] is False
    name, kwargs = policy_for(False)
    assert name == "MlpPolicy" and "features_extractor_class" not in kwargs


def test_ppo_on_the_real_vision_env_keeps_images_uint8_and_acts_in_bounds():
    from stable_baselines3 import PPO

    from kartsim.envs import EnvConfig, KartEnv
    from kartsim.rl.vec_env import make_vec_env

    cfg = EnvConfig(vision=True, frame_stack=2, grayscale=True)
    venv = make_vec_env(cfg, n_envs=2, seed=0)
    name, kwargs = policy_for(True, 64)
    model = PPO(name, venv, n_steps=16, batch_size=16, n_epochs=1, policy_kwargs=kwargs, device="cpu", seed=0)
    model.learn(32)
    assert model.rollout_buffer.observations["vision"].dtype == np.uint8
    env = KartEnv(cfg)
    obs, _ = env.reset(seed=0)
    assert obs["vision"].shape == (84, 84, 2)
    for _ in range(3):
        action, _ = model.predict(obs, deterministic=False)  # raw channels-last obs from the env
        assert action.shape == (2,) and np.all(np.abs(action) <= 1.0)  # SB3 clips the Gaussian sample
        obs, *_ = env.step(action)
    venv.close()


class _SpyExtractor(KartVisionExtractor):
    seen: list = []

    def forward(self, observations):
        _SpyExtractor.seen.append(observations["vision"].dtype)
        return super().forward(observations)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_vision_policy_feeds_uint8_to_the_cnn_and_trains_in_both_precisions(tmp_path, precision):
    from stable_baselines3 import PPO

    from kartsim.envs import EnvConfig
    from kartsim.rl.vec_env import make_vec_env

    venv = make_vec_env(EnvConfig(vision=True, track="oval.png"), n_envs=2, seed=0)
    policy, kwargs = policy_for(True, 64, precision=precision)
    kwargs["features_extractor_class"] = _SpyExtractor
    _SpyExtractor.seen = []
    model = PPO(policy, venv, n_steps=16, batch_size=16, n_epochs=1, policy_kwargs=kwargs, device="cpu", seed=0)
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(32)
    assert set(_SpyExtractor.seen) == {th.uint8}, "images must reach the extractor as uint8"
    assert any(not th.equal(a, b) for a, b in zip(before, model.policy.parameters())), "no weight changed"
    features = model.policy.extract_features(model.policy.obs_to_tensor(venv.reset())[0])
    assert features.dtype == th.float32
    model.save(tmp_path / "m.zip")
    loaded = PPO.load(tmp_path / "m.zip", device="cpu")
    assert loaded.policy.features_extractor.bf16 == (precision == "bf16")


def test_resolve_precision():
    from kartsim.rl.policies import resolve_precision

    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    assert resolve_precision("auto", "cpu") in ("bf16", "fp32")
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp16x", "cpu")
