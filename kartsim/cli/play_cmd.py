"""``kartsim play`` (drive a model: window, headless or --record), ``kartsim eval`` (compare models)
and ``kartsim telemetry plot`` (PNG plots of a telemetry_log.csv). ``play_ppo.py`` = ``kartsim play``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from kartsim.errors import ConfigError


def _int(text: str) -> int:
    try:
        return int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def add_trust_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trust-model", action="store_true",
                        help="load models not saved by kartsim (plain SB3 zips), which unpickles code from the file: "
                        "only for files you trust")


def add_play_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="ZIP", help="model saved by kartsim train (a plain SB3 PPO zip needs --trust-model)")
    parser.add_argument("--episodes", type=_int, default=1, help="episodes to drive (default 1)")
    parser.add_argument("--track-name", nargs="+", metavar="TRACK", help="drive on another track than the training one")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--deterministic", dest="deterministic", action="store_true", default=True,
                      help="take the policy's mean action (default)")
    mode.add_argument("--stochastic", dest="deterministic", action="store_false", help="sample actions")
    parser.add_argument("--max-steps", type=_int, help="end each episode after this many steps (default: the env's limit)")
    parser.add_argument("--record", metavar="FILE", help="write a video instead of opening a window: lap.gif or lap.mp4")
    parser.add_argument("--fps", type=float, default=15.0, help="frames per second of the --record video, played in real time (default 15)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --record file")
    parser.add_argument("--no-window", action="store_true", help="never open a window (headless)")
    add_trust_argument(parser)
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--vision", dest="vision", action="store_true", default=None,
                      help="only for plain SB3 models without kartsim config: it is a vision model")
    kind.add_argument("--rays", dest="vision", action="store_false", help="... it is a rays model")


def _play(args: argparse.Namespace) -> int:
    from kartsim.rl.play import play

    if args.fps <= 0:
        raise ConfigError(f"--fps must be > 0, not {args.fps}")
    play(
        args.model,
        episodes=args.episodes,
        track=args.track_name,
        deterministic=args.deterministic,
        max_steps=args.max_steps,
        record=args.record,
        force=args.force,
        vision=args.vision,
        record_fps=args.fps,
        window=False if args.no_window else None,
        trust_model=args.trust_model,
    )
    return 0


def _eval(args: argparse.Namespace) -> int:
    from kartsim.rl.evaluate import evaluate_models, print_table

    if args.json and Path(args.json).exists() and not args.force:
        raise ConfigError(f"--json {args.json} already exists; pass --force to overwrite it, or give another file")

    scores = evaluate_models(
        args.models,
        episodes=args.episodes,
        track=args.track_name,
        deterministic=args.deterministic,
        max_steps=args.max_steps,
        seed=args.seed,
        progress=print,
        trust_model=args.trust_model,
    )
    print_table(scores)
    if args.json:
        Path(args.json).write_text(json.dumps([s.to_dict() for s in scores], indent=2))
        print(f"Wrote {args.json}")
    return 0


def _track_for_csv(csv_path: Path, track_name: str | None) -> Any:
    """The track name to draw under the driven line: --track-name, else config.json beside the CSV."""
    if track_name:
        return track_name
    config = csv_path.parent / "config.json"
    if config.is_file():
        try:
            track = json.loads(config.read_text()).get("env", {}).get("track")
        except ValueError:
            return None
        if isinstance(track, list):
            track = track[0] if track else None
        if track == "random":
            return None
        return track
    return None


def _telemetry_plot(args: argparse.Namespace) -> int:
    from kartsim.telemetry import plot_telemetry

    csv_path = Path(args.csv)
    out = Path(args.out) if args.out else csv_path.parent / "plots"
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder for the plots")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        raise ConfigError(f"{out} already holds files; pass --force to replace its plots, or give another --out")
    track_rgb = scale = None
    track = _track_for_csv(csv_path, args.track_name)
    if track:
        from kartsim.errors import KartsimError
        from kartsim.sim.track import Track

        try:
            t = Track.load(track)
            track_rgb, scale = t.rgb, t.scale
        except KartsimError:
            if args.track_name:
                raise  # an unknown --track-name is the track loader's error
            print(f"note: cannot load track {track!r} named in config.json; plotting the line without the map")
    written = plot_telemetry(csv_path, out, x_axis=args.x, track_rgb=track_rgb, track_scale=scale)
    for path in written:
        print(f"Wrote {path}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("play", help="drive a trained model (window, headless, or --record lap.gif)",
                              description="Drive a trained model; prints each lap time as it happens.")
    add_play_arguments(p)
    p.set_defaults(func=_play)

    e = subparsers.add_parser("eval", help="compare models: laps, completion, lap times, off-track, speed",
                              description="Drive each model from the start line and print a comparison table.")
    e.add_argument("models", nargs="+", metavar="ZIP", help="model zips to compare")
    e.add_argument("--episodes", type=_int, default=3, help="episodes per model (default 3)")
    e.add_argument("--track-name", nargs="+", metavar="TRACK", help="evaluate all models on this track")
    e.add_argument("--max-steps", type=_int, help="end each episode after this many steps (default: the env's limit)")
    mode = e.add_mutually_exclusive_group()
    mode.add_argument("--deterministic", dest="deterministic", action="store_true", default=True, help="(default)")
    mode.add_argument("--stochastic", dest="deterministic", action="store_false", help="sample actions")
    e.add_argument("--seed", type=_int, default=0, help="seed of the first episode (default 0)")
    e.add_argument("--json", metavar="FILE", help="also write the scores as JSON")
    e.add_argument("--force", action="store_true", help="overwrite an existing --json file")
    add_trust_argument(e)
    e.set_defaults(func=_eval)

    t = subparsers.add_parser("telemetry", help="telemetry logs: plot")
    tsub = t.add_subparsers(dest="telemetry_command", metavar="ACTION")
    tp = tsub.add_parser("plot", help="PNG plots of a telemetry_log.csv (speed, lateral g, steering; driven line)")
    tp.add_argument("csv", metavar="CSV", help="a telemetry_log.csv (runs/<name>/telemetry_log.csv)")
    tp.add_argument("--out", metavar="DIR", help="output folder (default: plots/ beside the CSV)")
    tp.add_argument("--x", choices=["step", "distance"], default="step", help="x axis (default step)")
    tp.add_argument("--track-name", help="track to draw under the driven line (default: from config.json beside the CSV)")
    tp.add_argument("--force", action="store_true", help="write into an --out folder that already holds files")
    tp.set_defaults(func=_telemetry_plot)
    t.set_defaults(func=lambda args: (t.print_help(), 2)[1])


def script_main(argv: list[str] | None = None) -> int:
    """Entry point of play_ppo.py."""
    import sys

    from kartsim.errors import KartsimError

    parser = argparse.ArgumentParser(prog="play_ppo.py", description="Drive a trained model (same as `kartsim play`).")
    add_play_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return _play(args)
    except KartsimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
