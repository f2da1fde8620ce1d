"""The batched env as a stable-baselines3 ``VecEnv``: one race of N karts stepped as arrays.

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
from gymnasium import spaces
from gymnasium.utils import seeding
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices

from kartsim.envs.config import EnvConfig
from kartsim.envs.info import reset_info, step_infos
from kartsim.envs.observations import Observer
from kartsim.envs.render import TrackMaps, compose_frame
from kartsim.envs.tracks import load_track_stack
from kartsim.sim.race import Race


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
        stack = load_track_stack(config.track, config.random_pool_size, max(config.resident_tracks, n_envs))
        self.race = Race(stack, n_envs, config.race, config.reward, config.kart)
        self.observer = Observer(config, self.race)
        self.render_mode = render_mode  # read by VecEnv.__init__ through get_attr
        super().__init__(n_envs, self.observer.observation_space, spaces.Box(-1.0, 1.0, (2,), np.float32))
        self.telemetry = np.zeros(n_envs, dtype=bool)
        self.telemetry[list(range(n_envs)) if telemetry_envs is None else list(telemetry_envs)] = True
        self.rngs = [seeding.np_random(None)[0] for _ in range(n_envs)]
        if seed is not None:
            self.seed(seed)
        self._actions = np.zeros((n_envs, 2))
        self._maps = TrackMaps(self.race.stack.tracks)

    # ------------------------------------------------------------------ VecEnv API
    def reset(self):
        idx = np.arange(self.num_envs)
        for i in idx:
            if self._seeds[i] is not None:
                self.rngs[i] = seeding.np_random(self._seeds[i])[0]
        self._reset_seeds()
        self._reset_options()
        self.race.reset_karts(idx, self.rngs)
        self.observer.reset(idx, self.rngs)
        self.reset_infos = [reset_info(self.race, i) for i in idx]
        return self.observer.batch_copy()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self):
        race = self.race
        race.step(self._actions)
        self.observer.observe()
        done = race.terminated | race.truncated
        infos = step_infos(race, self.telemetry)
        rewards = race.reward.astype(np.float32)
        dones = done.copy()
        if done.any():
            idx = np.nonzero(done)[0]
            for i in idx:
                infos[i]["terminal_observation"] = self.observer.single(i)
                infos[i]["TimeLimit.truncated"] = bool(race.truncated[i] and not race.terminated[i])
            race.reset_karts(idx, [self.rngs[i] for i in idx])
            self.observer.reset(idx, [self.rngs[i] for i in idx])
        return self.observer.batch_copy(), rewards, dones, infos

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
        st = self.race.state
        t = int(st.track_idx[i])
        frame = self._maps[t].draw(np.array([[st.x[i], st.y[i], st.yaw[i]]]))
        camera = self.observer.frame[i] if self.config.vision else None
        return compose_frame(frame, camera, [f"{st.speed[i] * 3.6:5.1f} km/h  lap {self.race.laps[i] + 1}"])
