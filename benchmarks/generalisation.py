"""Generalisation benchmark (the Procgen / MetaDrive protocol): train on pools of N generated tracks
and drive, without fine-tuning, held-out generated tracks (seeds the pools never use) and every
bundled track. Prints the curve of test completion and test ratio (best lap ÷ reference lap)
against the pool size.

    python benchmarks/generalisation.py                             # pools 10, 100, 1000; 2M steps each
    python benchmarks/generalisation.py --pools 10 100 --timesteps 1000000 --seeds 0 1 2 \\
        --test-seeds 50000-50049 --json gen.json

Pool tracks are seeds 10000 on (`kartsim.envs.tracks.track_sources`), never a test seed (checked);
the default test set is seeds 50000-50049 plus the bundled tracks. A pool over the env's
``resident_tracks`` (32) streams through that many slots, so a pool of 1,000 runs in the memory of
32 tracks (benchmarks/track_pool.py). Every other flag is benchmarks/learning.py's (--set, --env, ...).
Per pool it prints the training steps, wall and CPU seconds (this process: training and evaluation).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import learning  # noqa: E402  (benchmarks/learning.py, next to this file)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pools", type=int, nargs="+", default=[10, 100, 1000], help="pool sizes (generated tracks)")
    p.add_argument("--with-bundled", action="store_true", help="train on the bundled tracks too (then they are not held out)")
    p.add_argument("--timesteps", type=int, default=2_000_000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--test-seeds", type=learning.seed_range, default=range(50_000, 50_050), metavar="FIRST-LAST")
    p.add_argument("--eval-every", type=int, help="env steps between evaluations (default: the end only)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--set", type=learning.kv, action="append", default=[], metavar="FIELD=VALUE")
    p.add_argument("--env", type=learning.kv, action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--demos", metavar="SOURCE", help="pre-train on demonstrations recorded on the pool (e.g. ai:hard)")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)

    base = argparse.Namespace(
        vision=False, timesteps=args.timesteps, track_name=["random"] + (["bundled"] if args.with_bundled else []),
        test_tracks=None if args.with_bundled else ["bundled"], test_seeds=args.test_seeds,
        eval_every=args.eval_every or args.timesteps, eval_episodes=1, eval_max_steps=None, device=args.device,
        set=args.set, env=args.env, demos=args.demos,
    )
    import tempfile

    from kartsim.envs.tracks import RANDOM_POOL_FIRST_SEED

    train_seeds = range(RANDOM_POOL_FIRST_SEED, RANDOM_POOL_FIRST_SEED + max(args.pools))
    if set(train_seeds) & set(args.test_seeds):
        raise SystemExit(f"test seeds {args.test_seeds.start}-{args.test_seeds.stop - 1} overlap the pool's seeds "
                         f"{train_seeds.start}-{train_seeds.stop - 1}; pick held-out seeds outside them")
    test_tracks = learning.test_track_list(base)
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, load "
          f"{os.getloadavg()[0]:.1f}; {len(test_tracks)} test tracks", flush=True)
    curve: list[dict[str, Any]] = []
    for pool in args.pools:
        cpu0, wall0 = _cpu_s(), time.perf_counter()
        run = argparse.Namespace(**{**vars(base), "set": [*args.set, ("track_pool", pool)]})
        with tempfile.TemporaryDirectory(prefix="kartsim-gen-") as tmp:
            summaries = [learning.run_one(run, seed, Path(tmp), test_tracks) for seed in args.seeds]
        finals = [s["final"]["test"] for s in summaries if s["final"]]
        row = {"pool": pool, "seeds": args.seeds,
               "test_completion": [f["completion"] for f in finals],
               "test_median_ratio": [f["median_ratio"] for f in finals],
               "train_ratio": [s["final"]["median_ratio"] for s in summaries if s["final"]],
               "cpu_s": round(_cpu_s() - cpu0), "wall_s": round(time.perf_counter() - wall0),
               "load": round(os.getloadavg()[0], 1), "runs": summaries}
        curve.append(row)
        print(f"pool {pool}: test completion {row['test_completion']}, test median ratio {row['test_median_ratio']}, "
              f"train ratio {row['train_ratio']}; {row['cpu_s']} CPU-s, {row['wall_s']} s wall (training + "
              f"evaluation), load {row['load']}", flush=True)
        not_lapped = [Path(t["track"]).stem for s in summaries if s["final"] for t in s["curve"][-1]["tracks"]
                      if t["completion"] < 1.0]
        print(f"  not lapped: {', '.join(not_lapped) or 'none'}", flush=True)

    print(f"\n{'pool':>6}  {'test completion (median)':>24}  {'test ratio (median)':>20}  ({len(test_tracks)} test tracks)")
    for row in curve:
        comp = [c for c in row["test_completion"] if c is not None]
        ratio = [r for r in row["test_median_ratio"] if r is not None]
        print(f"{row['pool']:>6}  {statistics.median(comp) if comp else '-':>24}  "
              f"{statistics.median(ratio) if ratio else '-':>20}")
    learning.write_results(args.json, test_tracks, curve=curve)
    return 0


def _cpu_s() -> float:
    """User + system CPU seconds of this process and its finished children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


if __name__ == "__main__":
    raise SystemExit(main())
