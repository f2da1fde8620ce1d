"""Simulator speed: steps/s of kartsim's envs against Gymnasium's CarRacing-v3, in one run, on one core.

    python benchmarks/env_speed.py [--seconds 5] [--track circuit.png] [--no-peer] [--cpu-time]

Every figure is measured in this run on this machine (random actions, auto-reset on episode end);
the ratios against CarRacing-v3 are what to compare across machines, which differ by about 2×.
On a busy machine, ``--cpu-time`` divides by the process's CPU seconds instead of wall-clock seconds
(steps per CPU-second of the one pinned core: what the code costs, not what the machine had spare).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings

import numpy as np


CLOCK = time.perf_counter  # main() sets time.process_time for --cpu-time


def _rate(step, reset, seconds: float, per_step: int = 1) -> float:
    reset()
    for _ in range(20):  # warm-up: numba compilation, caches
        step()
    n, t0 = 0, CLOCK()
    while CLOCK() - t0 < seconds:
        for _ in range(10):
            step()
        n += 10
    return n * per_step / (CLOCK() - t0)


def single_env_rate(env, seconds: float, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    env.action_space.seed(seed)

    def step():
        _, _, term, trunc, _ = env.step(rng.uniform(-1, 1, 2).astype(np.float32))
        if term or trunc:
            env.reset()

    return _rate(step, lambda: env.reset(seed=seed), seconds)


def vec_env_rate(venv, seconds: float, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    n = venv.num_envs
    actions = rng.uniform(-1, 1, (64, n, 2)).astype(np.float32)
    k = [0]

    def step():
        venv.step(actions[k[0] % 64])
        k[0] += 1

    return _rate(step, venv.reset, seconds, per_step=n)


def car_racing_rate(seconds: float) -> float | None:
    import gymnasium as gym

    try:
        env = gym.make("CarRacing-v3")
    except Exception as exc:  # Box2D missing: say so instead of failing the whole benchmark
        warnings.warn(f"CarRacing-v3 unavailable ({exc}); install the bench extra: pip install -e .[bench]")
        return None
    rng = np.random.default_rng(0)

    def step():
        _, _, term, trunc, _ = env.step(rng.uniform([-1, 0, 0], [1, 1, 1]).astype(np.float32))
        if term or trunc:
            env.reset()

    return _rate(step, lambda: env.reset(seed=0), seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring time per row")
    parser.add_argument("--track", default="circuit.png")
    parser.add_argument("--no-peer", action="store_true", help="skip CarRacing-v3")
    parser.add_argument("--all-cores", action="store_true", help="do not pin the process to one core")
    parser.add_argument("--cpu-time", action="store_true",
                        help="steps per CPU-second of this process instead of per wall-clock second (a busy machine)")
    args = parser.parse_args()
    if args.cpu_time:
        global CLOCK
        CLOCK = time.process_time
    if not args.all_cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    from kartsim.envs import EnvConfig, KartEnv
    from kartsim.envs.sb3 import KartVecEnv

    rows: list[tuple[str, float | None]] = []
    rows.append(("kartsim rays env, 1 env", single_env_rate(KartEnv(track=args.track), args.seconds)))
    rows.append(("kartsim vision env 84x84x3, 1 env",
                 single_env_rate(KartEnv(track=args.track, vision=True), args.seconds)))
    rows.append(("kartsim batched vision env, 16 envs",
                 vec_env_rate(KartVecEnv(EnvConfig(track=args.track, vision=True), 16, seed=0, telemetry_envs=[0]),
                              args.seconds)))
    rows.append(("kartsim batched rays env, 256 envs",
                 vec_env_rate(KartVecEnv(EnvConfig(track=args.track), 256, seed=0, telemetry_envs=[0]),
                              args.seconds)))
    peer = None if args.no_peer else car_racing_rate(args.seconds)
    rows.append(("gymnasium CarRacing-v3 (pixels), 1 env", peer))

    print(f"# env_speed  {time.strftime('%Y-%m-%d %H:%M')}  {platform.processor() or platform.machine()}  "
          f"cores used: {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'}"
          f"{'  (steps per CPU-second)' if args.cpu_time else ''}")
    print(f"{'environment':<42} {'steps/s':>12} {'× CarRacing-v3':>16}")
    for name, rate in rows:
        ratio = f"{rate / peer:>15.1f}×" if (rate and peer) else f"{'-':>16}"
        value = f"{rate:>12,.0f}" if rate else f"{'n/a':>12}"
        print(f"{name:<42} {value} {ratio}")


if __name__ == "__main__":
    main()
