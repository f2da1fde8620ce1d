"""Peak memory (RSS) of vision training runs: the default config at 16 envs (and others on request).

    python benchmarks/memory.py [--envs 16] [--steps 8192]

Each row trains the default vision config in a fresh process for ``--steps`` env steps (a full
rollout buffer and at least one update) and reports that process's peak resident set size.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time

_CHILD = """
import resource, sys
sys.path.insert(0, {here!r})
from train_speed import _model_and_env
model, cfg, *_ = _model_and_env({envs})
model.learn(max({steps}, cfg.ppo.n_steps * cfg.run.vector_envs * 2))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def peak_rss_mb(envs: int, steps: int) -> float:
    code = _CHILD.format(here=os.path.dirname(os.path.abspath(__file__)), envs=envs, steps=steps)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, nargs="+", default=[16])
    parser.add_argument("--steps", type=int, default=8192)
    args = parser.parse_args()
    print(f"# memory  {time.strftime('%Y-%m-%d %H:%M')}  {platform.machine()}  {os.cpu_count()} CPUs")
    print(f"{'vision training run (default config)':<44} {'peak RSS':>10}")
    for envs in args.envs:
        print(f"{f'{envs} envs':<44} {peak_rss_mb(envs, args.steps):>8,.0f} MB")


if __name__ == "__main__":
    main()
