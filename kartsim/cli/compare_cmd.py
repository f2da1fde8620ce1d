"""``kartsim compare``: compare the best laps of two or more drivers (report of PNGs + HTML)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "compare", help="compare drivers' best laps: speed, inputs, g-g, lines, delta, sectors",
        description="Compare the best laps of two or more drivers. A driver is a telemetry CSV (kartsim drive, "
                    "play or training logs), a model .zip (driven for a few laps first) or ai:<easy|medium|hard>.")
    p.add_argument("drivers", nargs="+", metavar="DRIVER", help="telemetry .csv, model .zip or ai:<level>")
    p.add_argument("--track", "--track-name", dest="track", default=None,
                   help="track of the laps (map background, sector lengths, reference lap; needed for ai: and models)")
    p.add_argument("--out", default="compare_report", help="output folder (default compare_report)")
    p.add_argument("--laps", type=int, default=3, help="laps to drive for models and ai: drivers (default 3)")
    p.add_argument("--labels", nargs="+", default=None, help="names of the drivers in the report")
    p.add_argument("--force", action="store_true", help="write into an --out folder that already holds files")
    p.add_argument("--trust-model", action="store_true",
                   help="load models not saved by kartsim (plain SB3 zips): unpickles code from the file")
    p.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    from kartsim.apps.compare import compare
    from kartsim.errors import ConfigError

    if args.laps < 1:
        raise ConfigError(f"--laps must be >= 1, not {args.laps}")
    res = compare(args.drivers, args.out, args.track, laps=args.laps, labels=args.labels,
                  force=args.force, trust_model=args.trust_model)
    print(res.format_table())
    print(f"report: {res.html}")
    return 0
