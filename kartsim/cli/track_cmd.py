"""`kartsim track ...`: generate, check and write checkpoints for track images."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from kartsim.errors import KartsimError
from kartsim.sim.config import TRACK_STYLES


def register(subparsers) -> None:
    p = subparsers.add_parser("track", help="make and check track images",
                              description="Make, check and write checkpoints for track images.")
    sub = p.add_subparsers(dest="track_command", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    new = sub.add_parser("new", help="generate a random closed circuit as a PNG (+ its checkpoints)")
    new.add_argument("out", help="output PNG path")
    new.add_argument("--seed", type=int, default=0, help="random seed (same seed -> same track)")
    new.add_argument("--size", type=int, default=1024, help="image side in pixels (256..4096)")
    new.add_argument("--style", default="circuit", choices=list(TRACK_STYLES))
    new.add_argument("--width", type=float, default=9.0, help="road width in metres")
    new.add_argument("--length", type=float, default=None, help="target lap length in metres")
    new.add_argument("--force", action="store_true", help="overwrite an existing file")
    new.set_defaults(func=_cmd_new)

    check = sub.add_parser("check", help="load a track and print what was found")
    check.add_argument("track", help="PNG path or bundled track name")
    check.set_defaults(func=_cmd_check)

    info = sub.add_parser("info", help="length, width, corners, racing line and reference lap time",
                          description="Print the track's length, width, corners (apex, radius, minimum speed) "
                                      "and the reference lap time: a flying lap along the minimum-time racing "
                                      "line (solved once per track and kart, then cached), with the "
                                      "minimum-curvature line's lap beside it.")
    info.add_argument("track", help="PNG path or bundled track name")
    info.add_argument("--line", choices=["min-time", "min-curvature"], default="min-time",
                      help="racing line for the corners, speeds and --plot (default: min-time, the reference)")
    info.add_argument("--plot", metavar="PNG", default=None,
                      help="also draw the racing line coloured by speed over the track into this PNG")
    info.set_defaults(func=_cmd_info)

    cp = sub.add_parser("checkpoints", help="write <stem>.checkpoints.json next to the PNG")
    cp.add_argument("track", help="PNG path")
    cp.add_argument("--force", action="store_true", help="overwrite an existing checkpoints file")
    cp.set_defaults(func=_cmd_checkpoints)


def _load(name, use_checkpoints_file: bool = True):
    from kartsim.sim.track import Track

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # kept in track.warnings and printed by us
        return Track.load(name, use_checkpoints_file=use_checkpoints_file)


def _cmd_new(args: argparse.Namespace) -> int:
    from kartsim.sim.trackgen import generate_track, save_track

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise KartsimError(f"{out}: the output must be a .png file")
    if out.exists() and not args.force:
        raise KartsimError(f"{out} already exists; pass --force to overwrite it")
    img = generate_track(args.seed, size=args.size, length_m=args.length, width_m=args.width,
                         style=args.style)
    cp = out.with_name(f"{out.stem}.checkpoints.json")
    if cp.exists() and not args.force:
        raise KartsimError(f"{cp} already exists; pass --force to overwrite it")
    save_track(img, out)
    track = _load(out, use_checkpoints_file=False)
    track.save_checkpoints()
    print(f"{out}: {track.length:.0f} m long, {track.width.mean():.1f} m wide, "
          f"{len(track.gates)} gates ({cp.name})")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    track = _load(args.track)
    w, h = track.surface.shape[1], track.surface.shape[0]
    print(f"track:      {track.name} ({track.path})")
    print(f"size:       {w} x {h} px, {track.scale} m/px ({w * track.scale:.0f} x {h * track.scale:.0f} m)")
    print(f"length:     {track.length:.1f} m")
    print(f"width:      mean {track.width.mean():.1f} m, min {track.width.min():.1f} m, "
          f"max {track.width.max():.1f} m")
    print(f"gates:      {len(track.gates)} ({'from ' + str(track.checkpoints_source) if track.gates_source == 'file' else 'automatic'})")
    print(f"direction:  {track.direction}")
    if track.gates_source == "auto":
        print(f"start:      {'white start/finish line' if track.start_source == 'line' else 'middle of the longest straight'}")
    print(f"warnings:   {len(track.warnings) or 'none'}")
    for msg in track.warnings:
        print(f"  - {msg}")
    return 0


def _cmd_checkpoints(args: argparse.Namespace) -> int:
    from kartsim.sim.track import resolve_track_path

    path = resolve_track_path(args.track)
    cp = path.with_name(f"{path.stem}.checkpoints.json")
    if cp.exists() and not args.force:
        raise KartsimError(f"{cp} already exists; pass --force to regenerate it")
    track = _load(path, use_checkpoints_file=False)  # regenerate from the image, not the old file
    written = track.save_checkpoints()
    print(f"{written}: {len(track.gates)} gates, {track.direction}, lap {track.length:.0f} m")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from kartsim.sim.config import KartConfig
    from kartsim.drivers.racing_line import corners, racing_line

    if args.plot is not None and Path(args.plot).suffix.lower() != ".png":
        raise KartsimError(f"{args.plot}: --plot must name a .png file")
    track = _load(args.track)
    cfg = KartConfig()
    ref = racing_line(track, cfg)
    mc = racing_line(track, cfg, line="min-curvature")
    line = mc if args.line == "min-curvature" else ref
    lim = line.limits
    cs = corners(track, line)
    print(f"track:      {track.name} ({track.path})")
    print(f"length:     {track.length:.1f} m (racing line {line.length:.1f} m)")
    print(f"width:      mean {track.width.mean():.1f} m, min {track.width.min():.1f} m, max {track.width.max():.1f} m")
    print(f"corners:    {len(cs)}")
    if cs:
        print("   #  turn   apex at  radius  min speed")
        for c in cs:
            print(f"  {c.index:2d}  {c.direction:<5}  {c.apex_s:5.0f} m  {c.radius_m:4.0f} m  "
                  f"{c.min_speed:4.1f} m/s ({c.min_speed * 3.6:3.0f} km/h)")
    print(f"speed:      {line.speed.min():.1f} to {line.speed.max():.1f} m/s, mean {line.length / line.lap_time:.1f} m/s")
    how = "minimum-time line" if ref.method == "min-time" else "minimum-curvature line: faster here than the solve"
    print(f"reference:  {ref.lap_time:.2f} s ({how}); minimum-curvature line: {mc.lap_time:.2f} s")
    print(f"kart:       {lim.lateral.max() / 9.81:.2f} g steady lateral ({lim.gg_peak * lim.lateral.max() / 9.81:.2f} g "
          f"while slowing), {lim.brake.min() / 9.81:.2f}-{lim.brake.max() / 9.81:.2f} g braking, "
          f"top speed {lim.top_speed:.1f} m/s")
    if args.plot:
        from kartsim.drivers.racing_line import plot_racing_line

        plot_racing_line(track, line, args.plot, corner_list=cs)
        print(f"plot:       {args.plot}")
    return 0
