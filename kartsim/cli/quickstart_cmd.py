"""``kartsim quickstart`` (``make train``): train the default rays driver on circuit.png until it
laps, record that lap to a video (MP4, or GIF without imageio-ffmpeg) and print its lap time.

Training stops as soon as a deterministic evaluation episode from the start line completes
`QUICKSTART_STOP_LAPS` lap(s) (checked every `QUICKSTART_EVAL_EVERY` env steps), or at
``--timesteps``. The recording then replays exactly that episode (same start, same sensor-noise
seed, deterministic actions), so the lap in the video is the lap the check saw. A second run reuses
the trained model unless ``--force``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from kartsim.errors import ConfigError

QUICKSTART_NAME = "quickstart"
QUICKSTART_TRACK = "circuit.png"
QUICKSTART_MAX_STEPS = 2_000_000
QUICKSTART_EVAL_EVERY = 20_000
QUICKSTART_STOP_LAPS = 1
# Measured with benchmarks/learning.py (see docs / the report of that run); the rest are the
# TrainConfig rays defaults.
QUICKSTART_TRAIN: dict[str, Any] = {}


def _int(text: str) -> int:
    try:
        return int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def quickstart(args: argparse.Namespace) -> int:
    from kartsim.rl.callbacks import LapEvalCallback
    from kartsim.rl.play import play
    from kartsim.rl.train import TrainConfig, env_config_for, train

    name = args.save_name
    models_dir = Path(args.models_dir)
    runs_dir = Path(args.runs_dir)
    model_path = models_dir / f"{name}_final.zip"
    from kartsim.rl.play import default_video

    record = Path(args.record) if args.record else default_video(runs_dir / name)
    if record.suffix.lower() not in (".gif", ".mp4"):
        raise ConfigError(f"--record {record}: give a .gif or .mp4 file name")

    if model_path.exists() and not args.force:
        print(f"Found {model_path} from an earlier quickstart; recording it (pass --force to train again).")
    else:
        cfg = TrainConfig(
            vision=False,
            track=[QUICKSTART_TRACK],
            timesteps=args.timesteps,
            save_name=name,
            runs_dir=str(runs_dir),
            models_dir=str(models_dir),
            device=args.device,
            seed=args.seed,
            force=args.force,
            **QUICKSTART_TRAIN,
        ).resolved()
        print(
            f"Training the default rays driver on {QUICKSTART_TRACK}: it stops as soon as it drives "
            f"{QUICKSTART_STOP_LAPS} lap(s) from the start line (checked every {QUICKSTART_EVAL_EVERY:,} steps), "
            f"at most {cfg.timesteps:,} steps."
        )

        def report(row: dict[str, Any]) -> None:
            lap = f", best lap {row['eval_best_lap']:.2f} s" if row["eval_best_lap"] is not None else ""
            print(
                f"  check at {row['steps']:,} steps ({row['wall_s']:.0f} s): {row['eval_laps']} lap(s), "
                f"{row['eval_progress_m']:.0f} m driven at {row['eval_mean_speed']:.1f} m/s{lap}",
                flush=True,
            )

        evaluator = LapEvalCallback(
            env_config_for(cfg), QUICKSTART_EVAL_EVERY, max_steps=3000, stop_when_laps=QUICKSTART_STOP_LAPS,
            report=report,
        )
        result = train(cfg, callbacks=[evaluator])
        if result.interrupted:
            return 130

    print(f"\nRecording one lap to {record} ...")
    results = play(model_path, episodes=1, record=record, force=True, window=False, stop_after_laps=1,
                   max_steps=args.max_steps)
    laps = [t for r in results for t in r.lap_times]
    if not laps:
        print(f"The driver did not complete a lap. Train longer: kartsim quickstart --force --timesteps {2 * args.timesteps}")
        return 1
    print(f"\nLap time: {laps[0]:.3f} s on {QUICKSTART_TRACK}  (video: {record})")
    print(f"Next: python play_ppo.py --model {model_path}    |    kartsim eval {model_path} --episodes 3")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "quickstart",
        help="train the default rays driver until it laps, record the lap to a video (make train)",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--timesteps", type=_int, default=QUICKSTART_MAX_STEPS,
                   help=f"at most this many env steps (default {QUICKSTART_MAX_STEPS:,})")
    p.add_argument("--save-name", default=QUICKSTART_NAME, help=f"run name (default {QUICKSTART_NAME})")
    p.add_argument("--record", metavar="FILE", help="video of the lap (default runs/<name>/lap.mp4, or lap.gif without imageio-ffmpeg; .gif or .mp4)")
    p.add_argument("--max-steps", type=_int, default=3000, help="steps allowed for the recorded lap (default 3000)")
    p.add_argument("--seed", type=_int, default=0, help="training seed (default 0)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu",
                   help="cpu (default: the small MLP trains fastest there), cuda or auto")
    p.add_argument("--force", action="store_true", help="train again even if the quickstart model exists")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--models-dir", default="models")
    p.set_defaults(func=quickstart)
