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
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kartsim", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_parsed(build_parser(), argv)


def run_parsed(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen handler; user errors print as one line (exit 2)."""
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KartsimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
