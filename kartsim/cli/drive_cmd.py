"""``kartsim drive``: drive a kart with the keyboard, alone, against AI opponents or a model's ghost."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "drive", help="drive a kart yourself (keyboard), optionally against AI opponents or a model's ghost",
        description="Drive with the arrow keys or WASD (up/W throttle, down/S brake, left/A right/D steer), "
                    "R restarts, Esc/Q quits. Every step of your kart is written to a telemetry CSV with the "
                    "training schema (compare it with `kartsim compare`).")
    p.add_argument("--track-name", "--track", dest="track", default="circuit.png", help="track PNG or bundled name")
    p.add_argument("--opponents", type=int, default=0, help="number of AI opponents (0-11, default 0)")
    p.add_argument("--ai-level", default="medium", choices=["easy", "medium", "hard"], help="AI opponents' level")
    p.add_argument("--ghost", metavar="ZIP", default=None, help="a trained model driving as a ghost (no contact)")
    p.add_argument("--trust-model", action="store_true",
                   help="a --ghost not saved by kartsim (plain SB3 zip): unpickles code from the file")
    p.add_argument("--laps", type=int, default=None, help="stop after this many laps (default: when you quit)")
    p.add_argument("--telemetry", default=None, help="telemetry CSV to write (default runs/drive_laps.csv)")
    p.add_argument("--force", action="store_true", help="overwrite an existing telemetry file")
    p.add_argument("--weather", default="dry", choices=["dry", "damp", "wet", "random"])
    p.add_argument("--grid-position", type=int, default=None, help="your grid slot, 1 = pole (default last)")
    p.add_argument("--script", metavar="JSON", default=None,
                   help='scripted key events instead of the keyboard: [[t_s, "down"|"up", "key"], [t_s, "quit"]]; '
                        "runs as fast as possible (use SDL_VIDEODRIVER=dummy to run headless)")
    p.add_argument("--max-time", type=float, default=None, help="stop after this many simulated seconds")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    from kartsim.apps.drive import DEFAULT_TELEMETRY, ScriptedEvents, drive_yourself
    from kartsim.errors import ConfigError

    events = None
    if args.script:
        path = Path(args.script)
        if not path.is_file():
            raise ConfigError(f"--script {path}: file not found")
        try:
            script = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--script {path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(script, list) or not all(isinstance(e, list) and len(e) >= 2 for e in script):
            raise ConfigError(f'--script {path}: expected a list like [[0.0, "down", "up"], [5.0, "quit"]]')
        events = ScriptedEvents(script)
    res = drive_yourself(args.track, opponents=args.opponents, ai_level=args.ai_level, ghost=args.ghost,
                telemetry=args.telemetry or DEFAULT_TELEMETRY, laps=args.laps, max_time_s=args.max_time, events=events,
                realtime=events is None, render_every=1 if events is None else 5, weather=args.weather,
                seed=args.seed, grid_position=args.grid_position, force=args.force, verbose=True,
                trust_model=args.trust_model)
    best = f"{res.best_lap:.2f} s" if res.best_lap is not None else "-"
    extra = f", position {res.position}/{1 + args.opponents}" if args.opponents else ""
    print(f"{res.laps} lap(s), best {best}{extra}; telemetry: {res.telemetry}")
    return 0
