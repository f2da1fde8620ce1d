"""Models saved by the previous package layout (tests/fixtures/) still load, act the same and play."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="module")
def golden():
    return np.load(FIXTURES / "model_v0_golden.npz")


def _obs(golden, kind: str, t: int):
    if kind == "rays":
        return golden["rays_obs"][t]
    return {"vision": golden["vision_obs_vision"][t], "telemetry": golden["vision_obs_telemetry"][t]}


@pytest.mark.parametrize("kind", ["rays", "vision"])
def test_old_model_acts_as_when_saved(kind, golden):
    """Same weights, same policy class: the saved observations give the saved actions."""
    from kartsim.rl.play import load_driver

    driver = load_driver(FIXTURES / f"model_{kind}_v0.zip", device="cpu")
    assert driver.vision == (kind == "vision")
    expected = golden[f"{kind}_actions"]
    for t in range(len(expected)):
        action, _ = driver.model.predict(_obs(golden, kind, t), deterministic=True)
        np.testing.assert_allclose(action, expected[t], rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ["rays", "vision"])
def test_old_model_plays_in_todays_env(kind):
    """The env rebuilt from the model's kartsim_config.json fits the model and runs an episode."""
    from kartsim.envs import KartEnv
    from kartsim.rl.play import load_driver, run_episodes

    driver = load_driver(FIXTURES / f"model_{kind}_v0.zip", device="cpu")
    env = KartEnv(driver.env_config)
    try:
        (result,) = run_episodes(driver, env, episodes=1, max_steps=25, seed=3)
    finally:
        env.close()
    assert result.steps == 25
    assert np.isfinite(result.reward)
    assert result.progress_m != 0.0  # the kart moved under the model's actions
