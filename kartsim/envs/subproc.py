"""Batched envs in worker processes, for machines with more cores than one batched env can fill.

``SubprocKartVecEnv(config, n_envs, n_workers)`` splits the karts into ``n_workers`` contiguous
blocks; each worker process steps its block as one :class:`KartVecEnv` and writes observations,
rewards and dones straight into shared memory, so only the small ``info`` dicts travel through
pipes. Kart ``i`` still behaves exactly like a ``KartEnv`` seeded ``seed + i``.
"""

from __future__ import annotations

import multiprocessing as mp
from multiprocessing import shared_memory
from typing import Any, Sequence

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices

from kartsim.envs.config import EnvConfig
from kartsim.envs.core import EnvCore
from kartsim.envs.sb3 import KartVecEnv
from kartsim.errors import ConfigError


def _buffer_specs(space: spaces.Space, n: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    if isinstance(space, spaces.Dict):
        specs = {key: ((n,) + sub.shape, np.dtype(sub.dtype)) for key, sub in space.spaces.items()}
    else:
        specs = {"obs": ((n,) + space.shape, np.dtype(space.dtype))}
    specs["rewards"] = ((n,), np.dtype(np.float32))
    specs["dones"] = ((n,), np.dtype(bool))
    specs["actions"] = ((n, 2), np.dtype(np.float32))
    return specs


class _Shared:
    """Named numpy arrays in shared memory; the parent creates them, workers attach by name."""

    def __init__(self, specs: dict, names: dict[str, str] | None = None) -> None:
        self.blocks: dict[str, shared_memory.SharedMemory] = {}
        self.arrays: dict[str, np.ndarray] = {}
        for key, (shape, dtype) in specs.items():
            size = max(1, int(np.prod(shape)) * dtype.itemsize)
            shm = (shared_memory.SharedMemory(create=True, size=size) if names is None
                   else shared_memory.SharedMemory(name=names[key]))
            self.blocks[key] = shm
            self.arrays[key] = np.ndarray(shape, dtype=dtype, buffer=shm.buf)

    @property
    def names(self) -> dict[str, str]:
        return {key: shm.name for key, shm in self.blocks.items()}

    def close(self, unlink: bool) -> None:
        self.arrays.clear()
        for shm in self.blocks.values():
            shm.close()
            if unlink:
                shm.unlink()


class _Commands:
    """What a worker does for the parent: its block of karts is one :class:`KartVecEnv` (the env core
    behind SB3's API), whose observations, rewards and dones go straight into the shared arrays."""

    def __init__(self, env: KartVecEnv, arrays: dict[str, np.ndarray], start: int) -> None:
        self.env, self.arrays, self.start = env, arrays, start
        self.block = slice(start, start + env.num_envs)

    def _publish(self, obs) -> None:
        for key, value in (obs.items() if isinstance(obs, dict) else [("obs", obs)]):
            self.arrays[key][self.block] = value

    def step(self, _) -> list[dict]:
        obs, rewards, dones, infos = self.env.step(self.arrays["actions"][self.block])
        self._publish(obs)
        self.arrays["rewards"][self.block] = rewards
        self.arrays["dones"][self.block] = dones
        return infos

    def reset(self, _) -> list[dict]:
        self._publish(self.env.reset())
        return self.env.reset_infos

    def seed(self, seed: int) -> Sequence[int | None]:
        return self.env.seed(seed + self.start)

    def getattr(self, name: str) -> Any:
        return getattr(self.env, name)

    def setattr(self, name_value: tuple[str, Any]) -> None:
        setattr(self.env, *name_value)

    def method(self, data: tuple) -> list[Any]:
        name, local_indices, args, kwargs = data
        return self.env.env_method(name, *args, indices=local_indices, **kwargs)


def _worker(remote, config_dict, start, count, seed, telemetry_envs, specs, names) -> None:
    import signal

    # Ctrl-C in a terminal reaches the whole process group: the parent handles it (saves, then closes
    # the workers); a worker that quit on its own would leave the parent a broken pipe mid-step.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    shared = _Shared(specs, names)
    try:
        env = KartVecEnv(EnvConfig.from_dict(config_dict), count, seed=None if seed is None else seed + start,
                         telemetry_envs=telemetry_envs)
        commands = _Commands(env, shared.arrays, start)
        remote.send(("ready", None))
        while True:
            cmd, data = remote.recv()
            if cmd == "close":
                remote.send(("ok", None))
                break
            remote.send(("ok", getattr(commands, cmd)(data)))
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # report instead of hanging the parent
        remote.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        shared.close(unlink=False)
        remote.close()


class SubprocKartVecEnv(VecEnv):
    """``n_envs`` karts stepped by ``n_workers`` processes, each a batched :class:`KartVecEnv`."""

    def __init__(
        self,
        config: EnvConfig,
        n_envs: int,
        n_workers: int = 2,
        seed: int | None = None,
        telemetry_envs: Sequence[int] | None = None,
        start_method: str | None = None,
    ) -> None:
        if not 1 <= n_workers <= n_envs:
            raise ConfigError(f"need 1 <= workers <= envs, got {n_workers} workers for {n_envs} envs")
        probe = EnvCore(config, 1)  # the spaces (and a track that loads), once in the parent
        self.config = config
        self.render_mode = None
        super().__init__(n_envs, probe.observation_space, probe.action_space)
        bounds = np.linspace(0, n_envs, n_workers + 1).round().astype(int)
        self.blocks = [(int(a), int(b - a)) for a, b in zip(bounds[:-1], bounds[1:])]
        specs = _buffer_specs(self.observation_space, n_envs)
        self.shared = _Shared(specs)
        telemetry = set(range(n_envs) if telemetry_envs is None else telemetry_envs)
        ctx = mp.get_context(start_method or ("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"))
        self.remotes, self.processes = [], []
        for start, count in self.blocks:
            parent, child = ctx.Pipe()
            local_tel = [i - start for i in telemetry if start <= i < start + count]
            proc = ctx.Process(target=_worker, daemon=True,
                               args=(child, config.to_dict(), start, count, seed, local_tel, specs, self.shared.names))
            proc.start()
            child.close()
            self.remotes.append(parent)
            self.processes.append(proc)
        self._gather()
        self.closed = False

    def _gather(self) -> list[Any]:
        out = []
        for remote in self.remotes:
            status, payload = remote.recv()
            if status == "error":
                self.close()
                raise RuntimeError(f"a kartsim env worker failed: {payload}")
            out.append(payload)
        return out

    def _observations(self):
        a = self.shared.arrays
        if isinstance(self.observation_space, spaces.Dict):
            return {key: a[key].copy() for key in self.observation_space.spaces}
        return a["obs"].copy()

    def reset(self):
        if self._seeds[0] is not None:
            for remote in self.remotes:
                remote.send(("seed", self._seeds[0]))
            self._gather()
        self._reset_seeds()
        self._reset_options()
        for remote in self.remotes:
            remote.send(("reset", None))
        self.reset_infos = [info for infos in self._gather() for info in infos]
        return self._observations()

    def step_async(self, actions: np.ndarray) -> None:
        self.shared.arrays["actions"][:] = actions
        for remote in self.remotes:
            remote.send(("step", None))

    def step_wait(self):
        infos = [info for block in self._gather() for info in block]
        a = self.shared.arrays
        return self._observations(), a["rewards"].copy(), a["dones"].copy(), infos

    def seed(self, seed: int | None = None) -> Sequence[None | int]:
        if seed is None:
            seed = int(np.random.randint(0, 2**31 - 1))
        self._seeds = [seed + i for i in range(self.num_envs)]
        return self._seeds

    def close(self) -> None:
        if getattr(self, "closed", True):
            return
        self.closed = True
        for remote in self.remotes:
            try:
                remote.send(("close", None))
                remote.recv()
            except (EOFError, BrokenPipeError, OSError):
                pass
        for proc in self.processes:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
        self.shared.close(unlink=True)

    def _worker_of(self, indices: VecEnvIndices) -> dict[int, list[int]]:
        by_worker: dict[int, list[int]] = {}
        for i in self._get_indices(indices):
            w = next(k for k, (start, count) in enumerate(self.blocks) if start <= i < start + count)
            by_worker.setdefault(w, []).append(i - self.blocks[w][0])
        return by_worker

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        if attr_name in ("config", "render_mode"):
            return [getattr(self, attr_name) for _ in self._get_indices(indices)]
        out = []
        for w, local in self._worker_of(indices).items():
            self.remotes[w].send(("getattr", attr_name))
            value = self._gather_one(w)
            out.extend(value for _ in local)
        return out

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        for w in self._worker_of(indices):
            self.remotes[w].send(("setattr", (attr_name, value)))
            self._gather_one(w)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        out = []
        for w, local in self._worker_of(indices).items():
            self.remotes[w].send(("method", (method_name, local, method_args, method_kwargs)))
            out.extend(self._gather_one(w))
        return out

    def _gather_one(self, w: int) -> Any:
        status, payload = self.remotes[w].recv()
        if status == "error":
            raise RuntimeError(f"a kartsim env worker failed: {payload}")
        return payload

    def env_is_wrapped(self, wrapper_class, indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return self.env_method("render_kart")
