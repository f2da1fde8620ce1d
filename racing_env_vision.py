"""The vision env: ``python racing_env_vision.py`` builds it and takes a few steps; ``import
racing_env_vision`` gives the env.

    from racing_env_vision import make_env

    env = make_env(track="circuit.png", camera="chase", frame_stack=1)   # kartsim/KartVision-v0
    obs, info = env.reset(seed=0)    # obs["vision"]: (84, 84, 3) uint8, obs["telemetry"]: (9,) float32

Any ``kartsim.envs.EnvConfig`` field is a keyword (``grayscale=True``, ``camera="driver"``,
``race={"weather": "wet"}``, ...). Training on it: ``python train_ppo_vision.py``.
"""

from __future__ import annotations

import sys
from typing import Any

import gymnasium as gym

import kartsim.envs  # noqa: F401  (registers the env ids)
from kartsim.envs import EnvConfig, KartEnv

ENV_ID = "kartsim/KartVision-v0"

__all__ = ["ENV_ID", "EnvConfig", "KartEnv", "make_env"]


def make_env(**options: Any) -> gym.Env:
    """``gym.make("kartsim/KartVision-v0", **options)``: camera image + telemetry observations."""
    return gym.make(ENV_ID, **options)


if __name__ == "__main__":
    from kartsim.cli import main

    sys.exit(main(["env", "test", *sys.argv[1:]]))
