"""The batched env as a stable-baselines3 ``VecEnv``: the env core (one race of N karts stepped as arrays)
behind SB3's API.

Imported by :mod:`kartsim.rl` only (and the subprocess backend), so that ``import kartsim.envs``
never loads torch or SB3.

Kart ``i`` behaves exactly like a ``KartEnv`` seeded with ``seed + i`` (SB3's convention): the same
observations, rewards, terminations and auto-resets. SB3's VecEnv has no ``truncated`` flag, so a
time-limit end is reported as ``done`` with ``info["TimeLimit.truncated"] = True`` and the last
observation in ``info["terminal_observation"]``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices

from kartsim.envs.config import EnvConfig
from kartsim.envs.core import EnvCore
from kartsim.envs.info import reset_info


class KartVecEnv(VecEnv):
    """N independent karts in one process; each may be on its own track of the pool.

    ``telemetry_envs``: indices of the envs whose ``info`` carries the ``telemetry`` dict (all by
    default; building it for hundreds of karts each step costs more than the simulation).
    """

    def __init__(
        self,
        config: EnvConfig,
        n_envs: int,
        seed: int | None = None,
        render_mode: str | None = None,
        telemetry_envs: Sequence[int] | None = None,
    ) -> None:
        self.config = config
        self.core = EnvCore(config, n_envs)
        self.race, self.observer = self.core.race, self.core.observer
        self.render_mode = render_mode  # read by VecEnv.__init__ through get_attr
        super().__init__(n_envs, self.core.observation_space, self.core.action_space)
        self.telemetry = np.zeros(n_envs, dtype=bool)
        self.telemetry[list(range(n_envs)) if telemetry_envs is None else list(telemetry_envs)] = True
        if seed is not None:
            self.seed(seed)
        self._actions = np.zeros((n_envs, 2))

    # ------------------------------------------------------------------ VecEnv API
    def reset(self):
        if all(s is not None for s in self._seeds):  # seed() sets them all, a reset clears them
            self.core.seed(self._seeds)
        self._reset_seeds()
        self._reset_options()
        self.core.reset()
        self.reset_infos = [reset_info(self.race, i) for i in range(self.num_envs)]
        return self.observer.batch_copy()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self):
        self.core.step(self._actions)
        out = self.core.autoreset(self.telemetry)
        for k, i in enumerate(out.ended):
            out.infos[i]["terminal_observation"] = out.final_observations[k]
            out.infos[i]["TimeLimit.truncated"] = bool(out.truncated[i] and not out.terminated[i])
        return self.observer.batch_copy(), out.rewards, out.terminated | out.truncated, out.infos

    def seed(self, seed: int | None = None) -> Sequence[None | int]:
        if seed is None:
            seed = int(np.random.randint(0, 2**31 - 1))
        self._seeds = [seed + i for i in range(self.num_envs)]
        return self._seeds

    def close(self) -> None:
        pass

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        return [getattr(self, method_name)(i, *method_args, **method_kwargs) for i in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class, indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [self.render_kart(i) for i in range(self.num_envs)]

    # ------------------------------------------------------------------ extras
    def render_kart(self, i: int) -> np.ndarray:
        """Map of kart ``i``'s track with the kart on it (and its camera view for vision envs)."""
        return self.core.frame(i, [f"{self.race.state.speed[i] * 3.6:5.1f} km/h  lap {self.race.laps[i] + 1}"])
