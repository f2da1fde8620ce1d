"""Gymnasium envs of kartsim; importing this module registers ``kartsim/Kart-v0``, ``kartsim/KartVision-v0``
and ``kartsim/KartRace-v0``.

Light on purpose: ``from kartsim.envs import EnvConfig`` loads only the config dataclasses (and
gymnasium's registry). The envs load the simulator (numba) when first used: ``gym.make(...)``, or
``kartsim.envs.KartEnv`` / ``KartGymVectorEnv`` / ``TELEMETRY_FIELDS`` (resolved on first access).
The SB3 VecEnv is :mod:`kartsim.envs.sb3`, imported by :mod:`kartsim.rl` only.
"""

from __future__ import annotations

import importlib
from typing import Any

from gymnasium.envs.registration import register, registry

from kartsim.envs.config import EnvConfig

__all__ = ["EnvConfig", "KartEnv", "KartGymVectorEnv", "TELEMETRY_FIELDS"]

# name -> module that defines it, imported on first access (PEP 562)
_LAZY = {
    "KartEnv": "kartsim.envs.single",
    "KartGymVectorEnv": "kartsim.envs.gym_vector",
    "TELEMETRY_FIELDS": "kartsim.envs.observations",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


for _id, _vision in (("kartsim/Kart-v0", False), ("kartsim/KartVision-v0", True)):
    if _id not in registry:
        register(id=_id, entry_point="kartsim.envs.single:KartEnv",
                 vector_entry_point="kartsim.envs.gym_vector:KartGymVectorEnv", kwargs={"vision": _vision})

# One agent racing AI or frozen-model opponents (kartsim.envs.race_env; multi-agent: kartsim.envs.multi_agent).
if "kartsim/KartRace-v0" not in registry:
    register(id="kartsim/KartRace-v0", entry_point="kartsim.envs.race_env:KartRaceEnv")
