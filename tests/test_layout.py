"""The package layout's import promises: the simulation core loads no RL stack, configs load no simulator."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY_RL = ("torch", "stable_baselines3", "gymnasium")
SIMULATOR = ("numba", "scipy", "torch", "stable_baselines3")


def loaded_after(code: str) -> set[str]:
    """Top-level packages in sys.modules after running `code` in a fresh interpreter."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out.splitlines()[-1]))


@pytest.mark.parametrize("module", ["kartsim.sim", "kartsim.sim.track", "kartsim.sim.trackgen", "kartsim.sim.physics",
                                    "kartsim.sim.sensors", "kartsim.sim.race", "kartsim.sim.multikart",
                                    "kartsim.drivers.ai_driver", "kartsim.drivers.opponents"])
def test_simulation_core_and_drivers_load_no_rl_stack(module):
    assert loaded_after(f"import {module}").isdisjoint(HEAVY_RL)


@pytest.mark.parametrize("code", ["from kartsim.envs import EnvConfig", "from kartsim.rl.train import TrainConfig",
                                  "import kartsim.sim.config",
                                  "from kartsim.cli import build_parser; build_parser()"])  # every command's start-up
def test_configs_load_no_simulator(code):
    assert loaded_after(code).isdisjoint(SIMULATOR)


def test_gym_make_needs_no_sb3_or_torch():
    loaded = loaded_after("import gymnasium as gym, kartsim.envs\n"
                          "env = gym.make('kartsim/Kart-v0', track='oval.png'); env.reset(seed=0); env.step(env.action_space.sample())")
    assert "numba" in loaded  # it did build the simulator
    assert loaded.isdisjoint(("torch", "stable_baselines3"))
