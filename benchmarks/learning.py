"""Learning benchmark: how fast does PPO learn to lap? Trains with `kartsim train`'s own code and
evaluates the policy from the start line every --eval-every env steps.

    python benchmarks/learning.py                       # rays, circuit.png, 300k steps, seed 0
    python benchmarks/learning.py --timesteps 500000 --seeds 0 1 2
    python benchmarks/learning.py --vision --timesteps 200000 --set features_dim=256
    python benchmarks/learning.py --set n_steps=1024 --set ent_coef=0.01 --json results.json

For each seed it prints a learning curve (env steps, wall seconds, training episode reward, laps
and best lap of the deterministic evaluation episode, evaluation progress) and a summary: env steps
and wall seconds until the first evaluation lap, best evaluation lap, training steps/s. Every
number is measured in this run on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _kv(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        return key, json.loads(raw)
    except ValueError:
        return key, raw


def run_one(args: argparse.Namespace, seed: int, runs_dir: Path) -> dict[str, Any]:
    from kartsim.rl.callbacks import LapEvalCallback
    from kartsim.rl.train import TrainConfig, env_config_for, train

    values: dict[str, Any] = dict(
        vision=args.vision, timesteps=args.timesteps, save_name=f"bench_seed{seed}", track=args.track_name,
        seed=seed, device=args.device, runs_dir=str(runs_dir), models_dir=str(runs_dir / "models"),
        progress_bar=False, checkpoint_freq=0, telemetry_every=0, force=True,
    )
    for key, value in args.set:
        if key == "env_options":
            raise SystemExit("use --env KEY=VALUE for env options")
        values[key] = value
    values["env_options"] = dict(args.env)
    cfg = TrainConfig(**values).resolved()
    env_cfg = env_config_for(cfg)
    started = time.perf_counter()
    callback = LapEvalCallback(
        env_cfg, args.eval_every, max_steps=args.eval_max_steps, episodes=args.eval_episodes,
        stop_when_laps=args.stop_when_laps, also_stochastic=args.also_stochastic,
        report=lambda row: print("  " + "  ".join(f"{k}={v}" for k, v in row.items()), flush=True),
    )
    print(f"seed {seed}: {('vision' if cfg.vision else 'rays')} on {cfg.track}, "
          f"{cfg.timesteps:,} steps, {cfg.vector_envs} envs, n_steps {cfg.n_steps}, batch {cfg.batch_size}, "
          f"epochs {cfg.n_epochs}, lr {cfg.learning_rate}", flush=True)
    result = train(cfg, callbacks=[callback], echo=lambda s: None)
    wall = time.perf_counter() - started
    rows = callback.rows
    eval_seconds = callback.eval_seconds
    first = next((r for r in rows if r["eval_laps"] > 0), None)
    laps = [r["eval_best_lap"] for r in rows if r["eval_best_lap"] is not None]
    summary = {
        "seed": seed,
        "steps": result.num_timesteps,
        "wall_s": round(wall, 1),
        "train_steps_per_s": round(result.num_timesteps / max(1e-9, wall - eval_seconds)),
        "first_lap_at_steps": first["steps"] if first else None,
        "first_lap_at_wall_s": first["wall_s"] if first else None,
        "best_eval_lap_s": min(laps) if laps else None,
        "final_eval": rows[-1] if rows else None,
        "curve": rows,
        "config": cfg.to_dict(),
    }
    print(f"seed {seed}: first lap at {summary['first_lap_at_steps']} steps ({summary['first_lap_at_wall_s']} s), "
          f"best lap {summary['best_eval_lap_s']} s, {summary['train_steps_per_s']} training steps/s", flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vision", action="store_true", help="vision policy (default rays)")
    p.add_argument("--timesteps", type=int, default=300_000)
    p.add_argument("--track-name", nargs="+", default=["circuit.png"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--eval-every", type=int, default=25_000, help="env steps between evaluations")
    p.add_argument("--eval-episodes", type=int, default=1)
    p.add_argument("--eval-max-steps", type=int, default=2000, help="steps per evaluation episode")
    p.add_argument("--stop-when-laps", type=int, help="stop a seed once an evaluation completes this many laps")
    p.add_argument("--also-stochastic", action="store_true", help="also evaluate with sampled actions")
    p.add_argument("--device", default="auto")
    p.add_argument("--set", type=_kv, action="append", default=[], metavar="FIELD=VALUE",
                   help="TrainConfig field, e.g. n_steps=1024 (repeatable)")
    p.add_argument("--env", type=_kv, action="append", default=[], metavar="KEY=VALUE",
                   help="EnvConfig option, e.g. max_episode_steps=3000 or reward.progress=0.2 (repeatable)")
    p.add_argument("--json", metavar="FILE", help="write the curves and summaries as JSON")
    p.add_argument("--keep", metavar="DIR", help="keep the runs (models) in DIR instead of a temp folder")
    args = p.parse_args(argv)

    import torch

    print(f"kartsim learning benchmark: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads, cuda={torch.cuda.is_available()}")
    runs_dir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="kartsim-bench-"))
    try:
        summaries = [run_one(args, seed, runs_dir) for seed in args.seeds]
    finally:
        if not args.keep:
            shutil.rmtree(runs_dir, ignore_errors=True)
    lapped = [s for s in summaries if s["first_lap_at_steps"] is not None]
    print(f"\n{len(lapped)}/{len(summaries)} seeds lapped; first lap at steps: "
          f"{[s['first_lap_at_steps'] for s in summaries]}; best laps: {[s['best_eval_lap_s'] for s in summaries]}")
    if args.json:
        Path(args.json).write_text(json.dumps({"argv": sys.argv[1:], "runs": summaries}, indent=2))
        print(f"Wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
