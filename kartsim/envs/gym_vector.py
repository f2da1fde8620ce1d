"""The env core behind Gymnasium's vector API (``gymnasium.make_vec("kartsim/Kart-v0", num_envs=N)``)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector.utils import batch_space
from gymnasium.vector.vector_env import AutoresetMode

from kartsim.envs.config import EnvConfig
from kartsim.envs.core import EnvCore
from kartsim.errors import ConfigError


class KartGymVectorEnv(gym.vector.VectorEnv):
    """The batched race behind Gymnasium's vector API (``gymnasium.make_vec("kartsim/Kart-v0", num_envs=N)``).

    Same simulation as the SB3 :class:`kartsim.envs.sb3.KartVecEnv`, Gymnasium's conventions: ``terminations`` and
    ``truncations`` apart, same-step autoreset with ``infos["final_obs"]`` / ``infos["final_info"]``,
    and infos as arrays over envs (``lap``, ``progress``, ``new_lap_time`` (NaN when none), and one
    array per reward term under ``reward_terms``).
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(self, config: EnvConfig | None = None, num_envs: int = 8, **fields: Any) -> None:
        cfg = config if config is not None else EnvConfig()
        self.config = cfg.replace(**fields) if fields else cfg
        self.core = EnvCore(self.config, num_envs)
        self.race, self.observer = self.core.race, self.core.observer
        self.num_envs = num_envs
        self.single_observation_space = self.core.observation_space
        self.single_action_space = self.core.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        if seed is not None:
            seeds = [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else list(seed)
            if len(seeds) != self.num_envs:
                raise ConfigError(f"reset(seed=...) takes an int or one seed per env ({self.num_envs}), got {len(seeds)} seeds")
            self.core.seed(seeds)
        self.core.reset()
        return self.observer.batch_copy(), {"progress": self.race.s.copy()}

    def step(self, actions):
        race = self.race
        self.core.step(actions)
        infos: dict[str, Any] = {
            "lap": race.laps.copy(),
            "progress": race.s.copy(),
            "new_lap_time": race.new_lap_time.copy(),
            "reward_terms": {name: value.copy() for name, value in race.terms.items()},
        }
        out = self.core.autoreset()
        if len(out.ended):
            final_obs = np.full(self.num_envs, None, dtype=object)
            final_info = np.full(self.num_envs, None, dtype=object)
            for k, i in enumerate(out.ended):
                final_obs[i] = out.final_observations[k]
                final_info[i] = out.infos[i]
            mask = np.zeros(self.num_envs, dtype=bool)
            mask[out.ended] = True
            infos.update(final_obs=final_obs, _final_obs=mask, final_info=final_info, _final_info=mask.copy())
        return self.observer.batch_copy(), out.rewards, out.terminated, out.truncated, infos
