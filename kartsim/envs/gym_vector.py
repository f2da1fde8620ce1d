"""The batched race behind Gymnasium's vector API (``gymnasium.make_vec("kartsim/Kart-v0", num_envs=N)``)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector.utils import batch_space
from gymnasium.vector.vector_env import AutoresetMode

from kartsim.envs.config import EnvConfig
from kartsim.envs.info import step_infos
from kartsim.envs.observations import Observer
from kartsim.envs.tracks import load_track_stack
from kartsim.sim.race import Race


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
        stack = load_track_stack(self.config.track, self.config.random_pool_size,
                                 max(self.config.resident_tracks, num_envs))
        self.race = Race(stack, num_envs, self.config.race, self.config.reward, self.config.kart)
        self.observer = Observer(self.config, self.race)
        self.num_envs = num_envs
        self.single_observation_space = self.observer.observation_space
        self.single_action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.rngs = [seeding.np_random(None)[0] for _ in range(num_envs)]

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        if seed is not None:
            seeds = [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else list(seed)
            self.rngs = [seeding.np_random(s)[0] for s in seeds]
        idx = np.arange(self.num_envs)
        self.race.reset_karts(idx, self.rngs)
        self.observer.reset(idx, self.rngs)
        return self.observer.batch_copy(), {"progress": self.race.s.copy()}

    def step(self, actions):
        race = self.race
        race.step(actions)
        self.observer.observe()
        terminated, truncated = race.terminated.copy(), race.truncated.copy()
        infos: dict[str, Any] = {
            "lap": race.laps.copy(),
            "progress": race.s.copy(),
            "new_lap_time": race.new_lap_time.copy(),
            "reward_terms": {name: value.copy() for name, value in race.terms.items()},
        }
        done = np.flatnonzero(terminated | truncated)
        if len(done):
            final_obs = np.full(self.num_envs, None, dtype=object)
            final_info = np.full(self.num_envs, None, dtype=object)
            ended = step_infos(race, np.zeros(race.n, dtype=bool))
            for i in done:
                final_obs[i] = self.observer.single(int(i))
                final_info[i] = ended[i]
            mask = np.zeros(self.num_envs, dtype=bool)
            mask[done] = True
            infos.update(final_obs=final_obs, _final_obs=mask, final_info=final_info, _final_info=mask.copy())
            race.reset_karts(done, [self.rngs[i] for i in done])
            self.observer.reset(done, [self.rngs[i] for i in done])
        return self.observer.batch_copy(), race.reward.astype(np.float32), terminated, truncated, infos
