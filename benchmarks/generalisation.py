"""Generalisation benchmark (the Procgen / MetaDrive protocol): train on pools of N generated tracks
and drive, without fine-tuning, held-out generated tracks (seeds the pools never use) and every
bundled track. Prints the curve of test completion and test ratio (best lap ÷ reference lap)
against the pool size.

    python benchmarks/generalisation.py                             # pools 10, 100, 1000; 2M steps each
    python benchmarks/generalisation.py --pools 10 100 --timesteps 1000000 --seeds 0 1 2 \\
        --test-seeds 50000-50049 --json gen.json

Pool tracks are seeds 10000 on (`kartsim.envs.tracks.random_pool`); the default test set is seeds
50000-50049 plus the bundled tracks. Each 1024-px track takes ~30 MB in the batched env, so a pool
of 1,000 needs ~30 GB of memory. Every other flag is benchmarks/learning.py's (--set, --env, ...).
"""

from __future__ import annotations

import argparse
import statistics
import sys
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
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)

    base = argparse.Namespace(
        vision=False, timesteps=args.timesteps, track_name=["random"] + (["bundled"] if args.with_bundled else []),
        test_tracks=None if args.with_bundled else ["bundled"], test_seeds=args.test_seeds,
        eval_every=args.eval_every or args.timesteps, eval_episodes=1, eval_max_steps=None, device=args.device,
        set=args.set, env=args.env,
    )
    import tempfile

    test_tracks = learning.test_track_list(base)
    curve: list[dict[str, Any]] = []
    for pool in args.pools:
        run = argparse.Namespace(**{**vars(base), "set": [*args.set, ("track_pool", pool)]})
        with tempfile.TemporaryDirectory(prefix="kartsim-gen-") as tmp:
            summaries = [learning.run_one(run, seed, Path(tmp), test_tracks) for seed in args.seeds]
        finals = [s["final"]["test"] for s in summaries if s["final"]]
        row = {"pool": pool, "seeds": args.seeds,
               "test_completion": [f["completion"] for f in finals],
               "test_median_ratio": [f["median_ratio"] for f in finals],
               "train_ratio": [s["final"]["median_ratio"] for s in summaries if s["final"]],
               "runs": summaries}
        curve.append(row)
        print(f"pool {pool}: test completion {row['test_completion']}, test median ratio {row['test_median_ratio']}, "
              f"train ratio {row['train_ratio']}", flush=True)

    print(f"\n{'pool':>6}  {'test completion (median)':>24}  {'test ratio (median)':>20}  ({len(test_tracks)} test tracks)")
    for row in curve:
        comp = [c for c in row["test_completion"] if c is not None]
        ratio = [r for r in row["test_median_ratio"] if r is not None]
        print(f"{row['pool']:>6}  {statistics.median(comp) if comp else '-':>24}  "
              f"{statistics.median(ratio) if ratio else '-':>20}")
    learning.write_results(args.json, test_tracks, curve=curve)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
