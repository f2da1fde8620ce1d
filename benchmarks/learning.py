"""Learning benchmark: how close to the reference lap does PPO drive, after how many steps and how
much wall-clock time, on the training tracks and on tracks it never saw? Trains with `kartsim
train`'s own code (its defaults unless --set) and evaluates the deterministic policy from the start
line every --eval-every env steps (`kartsim.rl.callbacks.LapEvalCallback`: a standing and a flying
lap per track).

    python benchmarks/learning.py                                   # rays, circuit.png, 1M steps, seed 0
    python benchmarks/learning.py --timesteps 2000000 --seeds 0 1 2 --track-name technical.png
    python benchmarks/learning.py --track-name random --set track_pool=100 \\
        --test-tracks bundled --test-seeds 50000-50049              # generalisation to held-out tracks
    python benchmarks/learning.py --env reward.time=-0.05 --json out.json   # an env option
    python benchmarks/learning.py --demos ai:hard --seeds 0 1 2         # clone the AI, then PPO

With ``--demos ai:hard`` (or ``--set init_from=...``) the pre-trained policy is evaluated at 0 PPO steps too.
Per seed it prints the curve (env steps, training wall seconds from the start of the run: recording
and cloning demonstrations included, the evaluations left out; then for
the training tracks and the test tracks: completion, median best lap / reference lap, off-track
share) and a summary: steps and seconds to the first lap and to 1.10 / 1.05 x reference, the best
and the final ratio, test completion and ratio. The last line is the median over the seeds. Every
number is measured in this run on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

THRESHOLDS = (1.10, 1.05, 1.03)


def kv(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        return key, json.loads(raw)
    except ValueError:
        return key, raw


def seed_range(text: str) -> range:
    """``50000-50049`` (inclusive) or a single seed."""
    try:
        lo, _, hi = text.partition("-")
        return range(int(lo), int(hi or lo) + 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected FIRST-LAST seeds such as 50000-50049, got {text!r}") from None


def summarise_tracks(tracks: list[dict[str, Any]]) -> dict[str, Any]:
    """Completion, median ratio (over the tracks lapped), off-track share of per-track eval results."""
    ratios = [t["ratio"] for t in tracks if t["ratio"] is not None]
    return {
        "completion": round(statistics.fmean(t["completion"] for t in tracks), 3) if tracks else None,
        "median_ratio": round(statistics.median(ratios), 4) if ratios else None,
        "worst_ratio": round(max(ratios), 4) if ratios else None,
        "off_track": round(statistics.fmean(t["off_track"] for t in tracks), 3) if tracks else None,
    }


def test_track_list(args: argparse.Namespace) -> list[str]:
    from kartsim.envs.tracks import generated_tracks, track_paths

    tracks = track_paths(args.test_tracks) if args.test_tracks else []
    if args.test_seeds:
        tracks += [str(p) for p in generated_tracks(args.test_seeds.start, len(args.test_seeds))]
    return tracks


def train_config(args: argparse.Namespace, seed: int, runs_dir: Path) -> Any:
    from kartsim.rl.train import TrainConfig

    values: dict[str, Any] = dict(
        vision=args.vision, timesteps=args.timesteps, save_name=f"bench_seed{seed}", track=args.track_name,
        seed=seed, device=args.device, runs_dir=str(runs_dir), models_dir=str(runs_dir / "models"),
        progress_bar=False, checkpoint_freq=0, telemetry_every=0, eval_freq=0, force=True,
    )
    if getattr(args, "demos", None):
        values["demos"] = args.demos
    for key, value in args.set:
        if key == "env_options":
            raise SystemExit("use --env KEY=VALUE for env options")
        values[key] = value
    values["env_options"] = dict(args.env)
    return TrainConfig.from_dict(values).resolved()


def run_one(args: argparse.Namespace, seed: int, runs_dir: Path, test_tracks: list[str]) -> dict[str, Any]:
    from kartsim.rl.callbacks import LapEvalCallback
    from kartsim.rl.train import EVAL_LAPS, env_config_for, eval_tracks_for, train

    cfg = train_config(args, seed, runs_dir)
    env_cfg = env_config_for(cfg)
    own = eval_tracks_for(cfg, env_cfg)
    n_own = len(own)

    def report(row: dict[str, Any]) -> None:
        own_s, test_s = summarise_tracks(row["tracks"][:n_own]), summarise_tracks(row["tracks"][n_own:])
        row["train_tracks"], row["test_tracks"] = own_s, test_s
        text = (f"  steps={row['steps']:>9,}  train_s={row['train_wall_s']:>6.0f}  train: completion={own_s['completion']}"
                f" ratio={own_s['median_ratio']} off={own_s['off_track']}")
        if test_tracks:
            text += f"  | test: completion={test_s['completion']} ratio={test_s['median_ratio']} off={test_s['off_track']}"
        print(text, flush=True)

    callback = LapEvalCallback(env_cfg, args.eval_every, tracks=own + test_tracks, episodes=args.eval_episodes,
                               max_steps=args.eval_max_steps, max_laps=EVAL_LAPS, report=report,
                               evaluate_final=True, evaluate_start=cfg.pretrained, started_at=time.perf_counter())
    print(f"seed {seed}: {'vision' if cfg.vision else 'rays'} on {cfg.task.track} (pool {env_cfg.random_pool_size} if random), "
          f"{cfg.run.timesteps:,} steps, {cfg.run.vector_envs} envs, n_steps {cfg.ppo.n_steps}, batch {cfg.ppo.batch_size}, "
          f"epochs {cfg.ppo.n_epochs}, lr {cfg.ppo.learning_rate}; evaluation on {n_own} training + {len(test_tracks)} test "
          f"tracks every {args.eval_every:,} steps", flush=True)
    started = time.perf_counter()
    result = train(cfg, callbacks=[callback], echo=lambda s: None)
    wall = time.perf_counter() - started
    return summarise_run(seed, callback.rows, result.num_timesteps, wall - callback.eval_seconds, cfg)


def summarise_run(seed: int, rows: list[dict[str, Any]], steps: int, train_s: float, cfg: Any) -> dict[str, Any]:
    def first(pred) -> dict[str, Any] | None:
        return next((r for r in rows if pred(r["train_tracks"])), None)

    summary: dict[str, Any] = {"seed": seed, "steps": steps, "train_s": round(train_s, 1),
                               "train_steps_per_s": round(steps / max(train_s, 1e-9))}
    lap = first(lambda s: s["completion"] == 1.0)
    summary["full_completion_at"] = [lap["steps"], lap["train_wall_s"]] if lap else None
    for x in THRESHOLDS:
        hit = first(lambda s, x=x: s["completion"] == 1.0 and s["worst_ratio"] is not None and s["worst_ratio"] <= x)
        summary[f"ratio<={x}_at"] = [hit["steps"], hit["train_wall_s"]] if hit else None
    done = [r for r in rows if r["train_tracks"]["completion"] == 1.0]
    best = min(done, key=lambda r: r["train_tracks"]["median_ratio"]) if done else None
    summary["best"] = {"steps": best["steps"], **best["train_tracks"], "test": best["test_tracks"]} if best else None
    summary["final"] = {**rows[-1]["train_tracks"], "test": rows[-1]["test_tracks"]} if rows else None
    summary["curve"] = rows
    summary["config"] = cfg.to_dict()
    b, f = summary["best"], summary["final"]
    print(f"seed {seed}: full completion at {summary['full_completion_at']} [steps, s]; "
          + "; ".join(f"<= {x} at {summary[f'ratio<={x}_at']}" for x in THRESHOLDS)
          + f"; best ratio {b and b['median_ratio']} (test completion {b and b['test']['completion']}, ratio "
            f"{b and b['test']['median_ratio']}); final ratio {f and f['median_ratio']} (completion "
            f"{f and f['completion']}); {summary['train_steps_per_s']} training steps/s", flush=True)
    return summary


def print_medians(summaries: list[dict[str, Any]]) -> None:
    def med(values: list[Any]) -> Any:
        values = [v for v in values if v is not None]
        return round(statistics.median(values), 4) if values else None

    best = [s["best"] or {} for s in summaries]
    final = [s["final"] or {} for s in summaries]
    print(f"\nmedian of {len(summaries)} seed(s): best train ratio {med([b.get('median_ratio') for b in best])}, "
          f"final train ratio {med([f.get('median_ratio') for f in final])}, final train completion "
          f"{med([f.get('completion') for f in final])}; at the best: test completion "
          f"{med([(b.get('test') or {}).get('completion') for b in best])}, test ratio "
          f"{med([(b.get('test') or {}).get('median_ratio') for b in best])}; "
          + "; ".join(f"steps to <= {x}: {[(s[f'ratio<={x}_at'] or [None])[0] for s in summaries]}" for x in THRESHOLDS))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vision", action="store_true", help="vision policy (default rays)")
    p.add_argument("--timesteps", type=int, default=1_000_000)
    p.add_argument("--track-name", nargs="+", default=["circuit.png"], help="training track(s), as kartsim train")
    p.add_argument("--test-tracks", nargs="+", help="held-out tracks to evaluate on too (names, PNGs, folders, bundled)")
    p.add_argument("--test-seeds", type=seed_range, metavar="FIRST-LAST",
                   help="held-out generated tracks of these seeds (kartsim.envs.tracks.generated_track)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--demos", metavar="SOURCE", help="pre-train on demonstrations first (kartsim train --demos, e.g. "
                   "ai:hard); the curve starts at 0 PPO steps and its seconds include recording and cloning")
    p.add_argument("--eval-every", type=int, default=100_000, help="env steps between evaluations")
    p.add_argument("--eval-episodes", type=int, default=1)
    p.add_argument("--eval-max-steps", type=int, help="steps per evaluation episode (default: the env's limit)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--set", type=kv, action="append", default=[], metavar="FIELD=VALUE",
                   help="TrainConfig field, e.g. n_steps=256 or track_pool=100 (repeatable)")
    p.add_argument("--env", type=kv, action="append", default=[], metavar="KEY=VALUE",
                   help="EnvConfig option, e.g. max_episode_steps=3000 or reward.progress=0.2 (repeatable)")
    p.add_argument("--json", metavar="FILE", help="write the curves and summaries as JSON")
    p.add_argument("--keep", metavar="DIR", help="keep the runs (models) in DIR instead of a temp folder")
    args = p.parse_args(argv)

    import torch

    print(f"kartsim learning benchmark {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {platform.platform()}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, torch {torch.__version__}, cuda={torch.cuda.is_available()}")
    test_tracks = test_track_list(args)
    runs_dir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="kartsim-bench-"))
    try:
        summaries = [run_one(args, seed, runs_dir, test_tracks) for seed in args.seeds]
    finally:
        if not args.keep:
            shutil.rmtree(runs_dir, ignore_errors=True)
    print_medians(summaries)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    write_results(args.json, test_tracks, runs=summaries)
    return 0


def write_results(path: str | None, test_tracks: list[str], **results: Any) -> None:
    """The command line, the test tracks and ``results`` as JSON in ``path`` (None: nothing written)."""
    if path:
        Path(path).write_text(json.dumps({"argv": sys.argv[1:], "test_tracks": test_tracks, **results}, indent=2))
        print(f"Wrote {path}")


if __name__ == "__main__":
    raise SystemExit(main())
