"""Memory and speed of the batched env against the track pool's size: a pool over
``resident_tracks`` streams its tracks through that many slots instead of holding them all.

    python benchmarks/track_pool.py                       # pools 10, 100, 1000; 16 envs; 20,000 steps
    python benchmarks/track_pool.py --pools 1000 --resident 16 64 --steps 50000

Each row runs in a fresh process: a KartVecEnv of --envs karts (rich rays observation) on
``track="random"`` with that pool, driven by a simple steering rule (follow the longest ray, throttle
by its length: laps on wide tracks, short episodes on narrow ones, so tracks change often). It
prints the peak resident set size, env steps per second and per CPU-second (the process's user + system
time), episodes, the distinct tracks driven and the tracks loaded. Generated pool tracks are cached on
disk once made (the first run of a large pool also generates them: ~0.8 s each).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys

_CHILD = """
import json, resource, sys, time
import numpy as np
sys.path.insert(0, {root!r})
from kartsim.envs import EnvConfig
from kartsim.envs.sb3 import KartVecEnv

cfg = EnvConfig(track="random", random_pool_size={pool}, resident_tracks={resident}, ray_observation="rich")
env = KartVecEnv(cfg, {envs}, seed=0, telemetry_envs=[])
stack = env.race.stack
loads = [0]
stack.listeners.append(lambda slot: loads.__setitem__(0, loads[0] + 1))
obs = env.reset()
n_rays = len(cfg.ray_angles_deg)
angles = np.deg2rad(np.asarray(cfg.ray_angles_deg))
episodes, seen = 0, set()
cpu0, t0 = time.process_time(), time.perf_counter()
for _ in range({steps} // {envs}):
    rays = obs[:, :n_rays]
    best = angles[np.argmax(rays, axis=1)]
    act = np.column_stack([np.clip(best * 2.0, -1, 1), np.clip(rays.max(axis=1) * 2 - 0.6, -1, 1)])
    obs, _, done, _ = env.step(act)
    episodes += int(done.sum())
    seen.update(int(stack.slot_track[s]) if stack.pool is not None else int(s) for s in env.race.state.track_idx)
wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
print(json.dumps(dict(pool={pool}, resident=len(stack), streamed=stack.pool is not None, steps={steps},
                      steps_per_s=round({steps} / wall), steps_per_cpu_s=round({steps} / cpu), episodes=episodes,
                      tracks_driven=len(seen), loads=loads[0],
                      peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))))
"""


def run(pool: int, resident: int, envs: int, steps: int) -> dict:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = _CHILD.format(root=root, pool=pool, resident=resident, envs=envs, steps=steps)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pools", type=int, nargs="+", default=[10, 100, 1000])
    p.add_argument("--resident", type=int, nargs="+", default=[32], help="resident_tracks values")
    p.add_argument("--envs", type=int, default=16)
    p.add_argument("--steps", type=int, default=20_000, help="env steps (all karts together) per row")
    args = p.parse_args(argv)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
          f"{args.envs} envs, {args.steps:,} steps per row")
    print(f"{'pool':>6} {'slots':>5} {'streamed':>8} {'peak RSS MB':>11} {'steps/s':>8} {'steps/CPU-s':>11} "
          f"{'episodes':>8} {'tracks':>6} {'loads':>6}")
    for pool in args.pools:
        for resident in args.resident:
            r = run(pool, resident, args.envs, args.steps)
            print(f"{r['pool']:>6} {r['resident']:>5} {str(r['streamed']):>8} {r['peak_rss_mb']:>11} "
                  f"{r['steps_per_s']:>8} {r['steps_per_cpu_s']:>11} {r['episodes']:>8} {r['tracks_driven']:>6} "
                  f"{r['loads']:>6}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
