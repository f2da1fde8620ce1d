"""``kartsim quickstart`` (``make train``): train the default rays driver on circuit.png until it
laps within `QUICKSTART_STOP_RATIO` × the reference lap, record its laps to a video (MP4, or GIF without imageio-ffmpeg) and print the lap
time and ratio.

Training evaluates the deterministic policy from the start line every `QUICKSTART_EVAL_EVERY` env
steps (a standing and a flying lap) and stops once the best lap of an evaluation is within
`QUICKSTART_STOP_RATIO` × the reference (`kartsim.drivers.racing_line.reference_lap_time`), or at
``--timesteps``. The recording drives the best evaluated model (``models/<name>_best.zip``) the same
way (same start, same sensor-noise seed, deterministic actions), so its laps are the laps the
evaluation saw. A second run reuses the trained model unless ``--force``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from kartsim.errors import ConfigError

QUICKSTART_NAME = "quickstart"
QUICKSTART_TRACK = "circuit.png"
# Seeds 0-2 reach 1.10 x the reference at 1.0-1.08M steps (85-110 CPU-s, benchmarks/RESULTS.md); the
# budget is three times that so a slower seed still gets there, ~3.5 idle minutes at the most.
QUICKSTART_MAX_STEPS = 3_000_000
QUICKSTART_EVAL_EVERY = 20_000
QUICKSTART_STOP_RATIO = 1.10
QUICKSTART_RECORD_LAPS = 2  # a standing and a flying lap, as the evaluation drives them
# Measured with benchmarks/learning.py (see docs / the report of that run); the rest are the
# TrainConfig rays defaults.
QUICKSTART_TRAIN: dict[str, Any] = {}


def _int(text: str) -> int:
    try:
        return int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def quickstart(args: argparse.Namespace) -> int:
    from kartsim.rl.play import play
    from kartsim.rl.train import TrainConfig, train

    name = args.save_name
    models_dir = Path(args.models_dir)
    runs_dir = Path(args.runs_dir)
    final_path = models_dir / f"{name}_final.zip"
    best_path = models_dir / f"{name}_best.zip"
    from kartsim.rl.play import default_video

    record = Path(args.record) if args.record else default_video(runs_dir / name)
    if record.suffix.lower() not in (".gif", ".mp4"):
        raise ConfigError(f"--record {record}: give a .gif or .mp4 file name")
    if not 1.0 < args.stop_at_ratio < 3.0:
        raise ConfigError(f"--stop-at-ratio must be a ratio to the reference lap such as 1.10, not {args.stop_at_ratio}")

    if final_path.exists() and not args.force:
        print(f"Found {final_path} from an earlier quickstart; recording it (pass --force to train again).")
    else:
        values: dict[str, Any] = dict(
            vision=False,
            track=[QUICKSTART_TRACK],
            timesteps=args.timesteps,
            save_name=name,
            runs_dir=str(runs_dir),
            models_dir=str(models_dir),
            device=args.device,
            seed=args.seed,
            force=args.force,
            eval_freq=QUICKSTART_EVAL_EVERY,
            stop_at_ratio=args.stop_at_ratio,
            progress_bar=False,  # the evaluation lines show the progress
        )
        cfg = TrainConfig.from_dict({**values, **QUICKSTART_TRAIN}).resolved()
        print(
            f"Training the default rays driver on {QUICKSTART_TRACK}: it stops as soon as its best lap from the "
            f"start line is within {args.stop_at_ratio:.2f} x the reference lap (checked every "
            f"{QUICKSTART_EVAL_EVERY:,} steps), at most {cfg.run.timesteps:,} steps."
        )
        result = train(cfg)
        if result.interrupted:
            return 130

    model_path = best_path if best_path.exists() else final_path
    print(f"\nRecording {model_path} to {record} ...")
    results = play(model_path, episodes=1, record=record, force=True, window=False,
                   stop_after_laps=QUICKSTART_RECORD_LAPS, max_steps=args.max_steps)
    laps = [t for r in results for t in r.lap_times]
    if not laps:
        print(f"The driver did not complete a lap. Train longer: kartsim quickstart --force --timesteps {2 * args.timesteps}")
        return 1
    from kartsim.drivers.racing_line import reference_lap_time
    from kartsim.sim.track import Track

    ref = reference_lap_time(Track.load(QUICKSTART_TRACK))
    best = min(laps)
    print(f"\nBest lap: {best:.3f} s on {QUICKSTART_TRACK} = {best / ref:.3f} x the reference lap ({ref:.2f} s)  "
          f"(video: {record})")
    if best / ref > args.stop_at_ratio:
        print(f"Not yet within {args.stop_at_ratio:.2f} x the reference: train longer with "
              f"kartsim quickstart --force --timesteps {2 * args.timesteps}")
    print(f"Next: python play_ppo.py --model {model_path}    |    kartsim eval {model_path} --episodes 3")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "quickstart",
        help="train the default rays driver until it laps within 1.10 x the reference, record it to a video (make train)",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--timesteps", type=_int, default=QUICKSTART_MAX_STEPS,
                   help=f"at most this many env steps (default {QUICKSTART_MAX_STEPS:,})")
    p.add_argument("--save-name", default=QUICKSTART_NAME, help=f"run name (default {QUICKSTART_NAME})")
    p.add_argument("--record", metavar="FILE", help="video of the lap (default runs/<name>/lap.mp4, or lap.gif without imageio-ffmpeg; .gif or .mp4)")
    p.add_argument("--stop-at-ratio", type=float, default=QUICKSTART_STOP_RATIO,
                   help=f"stop once the best lap is within this x the reference lap (default {QUICKSTART_STOP_RATIO})")
    p.add_argument("--max-steps", type=_int, default=3000, help="steps allowed for the recorded lap (default 3000)")
    p.add_argument("--seed", type=_int, default=0, help="training seed (default 0)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu",
                   help="cpu (default: the small MLP trains fastest there), cuda or auto")
    p.add_argument("--force", action="store_true", help="train again even if the quickstart model exists")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--models-dir", default="models")
    p.set_defaults(func=quickstart)
