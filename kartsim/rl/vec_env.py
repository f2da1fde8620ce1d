"""The SB3 VecEnv a training run steps: all karts in this process, or blocks of them in worker processes."""

from __future__ import annotations

import os
from typing import Any

from stable_baselines3.common.vec_env.base_vec_env import VecEnv

from kartsim.envs.config import VEC_BACKENDS, EnvConfig
from kartsim.envs.sb3 import KartVecEnv
from kartsim.envs.subproc import SubprocKartVecEnv
from kartsim.errors import ConfigError


def make_vec_env(
    config: EnvConfig,
    n_envs: int,
    seed: int | None = None,
    backend: str = "batched",
    n_workers: int | None = None,
    **kwargs: Any,
) -> VecEnv:
    """The env that ``kartsim train --vector-envs N`` uses.

    ``batched``: all karts stepped as arrays in this process (fastest up to a few cores);
    ``subproc``: ``n_workers`` processes (default: one per core, at most one per env), each a
    batched block of the karts, observations in shared memory.
    """
    if backend == "batched":
        return KartVecEnv(config, n_envs, seed=seed, **kwargs)
    if backend == "subproc":
        workers = n_workers or min(n_envs, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                   else os.cpu_count() or 1)
        return SubprocKartVecEnv(config, n_envs, n_workers=workers, seed=seed,
                                 telemetry_envs=kwargs.get("telemetry_envs"))
    raise ConfigError(f"unknown vec backend {backend!r}; use one of {', '.join(VEC_BACKENDS)}")
