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


@pytest.mark.parametrize("kind", ["rays", "vision"])
def test_old_model_resumes_and_saves_the_parts_layout(kind, tmp_path):
    """A model whose kartsim_config.json holds the flat train dict (before TrainConfig's parts) resumes:
    its settings come from the flat dict, the flags given now win, and it saves the nested layout."""
    import shutil

    from kartsim.rl.modelio import read_kartsim_config
    from kartsim.rl.train import train
    from kartsim.rl.train_cmd import config_from_values

    old = tmp_path / "old.zip"
    shutil.copy(FIXTURES / f"model_{kind}_v0.zip", old)
    saved = read_kartsim_config(old)
    assert "ppo" not in saved["train"] and "n_steps" in saved["train"]  # the fixture is of the flat layout
    done = int(saved["num_timesteps"])
    cfg, given = config_from_values({"resume": str(old), "timesteps": done + 64, "save_name": "again",
                                     "runs_dir": str(tmp_path / "runs"), "models_dir": str(tmp_path / "models"),
                                     "progress_bar": False, "telemetry_link": False, "device": "cpu"})
    lines: list[str] = []
    result = train(cfg, given=given, echo=lines.append)
    assert f"Resuming model from {old} ({done:,} steps done)" in lines
    assert result.num_timesteps >= done + 64 and result.final_model.is_file()
    train_cfg = read_kartsim_config(result.final_model)["train"]
    assert train_cfg["run"]["save_name"] == "again" and train_cfg["run"]["timesteps"] == done + 64
    assert train_cfg["ppo"]["n_steps"] == saved["train"]["n_steps"]  # from the old flat dict
    assert train_cfg["task"]["vision"] is (kind == "vision")
