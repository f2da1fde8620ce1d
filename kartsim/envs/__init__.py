"""Gymnasium envs of kartsim; importing this module registers ``kartsim/Kart-v0`` and ``kartsim/KartVision-v0``."""

from gymnasium.envs.registration import register, registry

from kartsim.envs.config import EnvConfig
from kartsim.envs.observations import TELEMETRY_FIELDS
from kartsim.envs.single import KartEnv
from kartsim.envs.vector import KartGymVectorEnv, KartVecEnv, make_vec_env

__all__ = ["EnvConfig", "KartEnv", "KartVecEnv", "KartGymVectorEnv", "make_vec_env", "TELEMETRY_FIELDS"]

for _id, _vision in (("kartsim/Kart-v0", False), ("kartsim/KartVision-v0", True)):
    if _id not in registry:
        register(id=_id, entry_point="kartsim.envs.single:KartEnv",
                 vector_entry_point="kartsim.envs.vector:KartGymVectorEnv", kwargs={"vision": _vision})

# One agent racing AI or frozen-model opponents (kartsim.envs.race_env; multi-agent: kartsim.envs.multi_agent).
if "kartsim/KartRace-v0" not in registry:
    register(id="kartsim/KartRace-v0", entry_point="kartsim.envs.race_env:KartRaceEnv")
