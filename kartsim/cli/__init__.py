"""The `kartsim` command: one sub-command module per concern, each with `register(subparsers)`.

Heavy imports (torch, stable-baselines3) happen inside the handlers so that `kartsim track ...`
starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from kartsim.errors import KartsimError

# Each module defines `register(subparsers)`, adding parsers whose handler is set with
# `parser.set_defaults(func=handler)`; a handler takes the parsed args and returns an exit code.
COMMAND_MODULES: tuple[str, ...] = (
    "kartsim.cli.track_cmd",
    "kartsim.rl.train_cmd",
    "kartsim.cli.play_cmd",
    "kartsim.cli.quickstart_cmd",
    "kartsim.cli.env_cmd",
    "kartsim.cli.jobs_cmd",
    "kartsim.cli.compare_cmd",
    "kartsim.cli.drive_cmd",
    "kartsim.cli.dashboard_cmd",
    "kartsim.cli.demos_cmd",
    "kartsim.cli.sweep_cmd",
)


# What `kartsim --help` opens with: for users (the module docstring above is for developers).
DESCRIPTION = """kartsim: a karting simulator for training driving agents with reinforcement learning.
Draw a track PNG, train an agent on it (rays + MLP, or camera + CNN with --vision), watch it drive,
compare drivers, and run training jobs in the background or on a Ray cluster."""
EPILOG = """first steps:
  kartsim quickstart                          train the default agent until it laps, record the lap
  kartsim train --vision --timesteps 100000   train the vision agent (= python train_ppo_vision.py)
  kartsim play --model models/NAME_final.zip  watch a trained model drive (= python play_ppo.py --model ...)
  kartsim dashboard                           runs, jobs, learning curves and live views in the browser
Run `kartsim COMMAND --help` for a command's flags; README.md is the user guide."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kartsim", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_parsed(build_parser(), argv)


def _unrecognized(parser: argparse.ArgumentParser, argv: list[str], extras: list[str]) -> None:
    """Exit 2 with the usage of the (sub-)command the unknown flags were given to (not the top
    level's) and the closest known flag (``--gama``: did you mean --gamma?)."""
    import difflib

    command, rest = parser, list(argv)
    while True:
        sub = next((a for a in command._actions if isinstance(a, argparse._SubParsersAction)), None)
        i = next((k for k, token in enumerate(rest) if sub is not None and token in sub.choices), None)
        if i is None:
            break
        command, rest = sub.choices[rest[i]], rest[i + 1:]
    known = [o for a in command._actions for o in a.option_strings]
    close = [m for e in extras if e.startswith("--") for m in difflib.get_close_matches(e.split("=")[0], known, 1, 0.8)]
    command.error(f"unrecognized arguments: {' '.join(extras)}" + (f" (did you mean {close[0]}?)" if close else ""))


def run_parsed(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen handler; user errors print as one line (exit 2)."""
    args, extras = parser.parse_known_args(argv)
    if extras:
        _unrecognized(parser, sys.argv[1:] if argv is None else argv, extras)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe fails here, inside the handler below, not at exit
        return code
    except KartsimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `kartsim ... | head` closed the pipe: the reader has what it wanted
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
