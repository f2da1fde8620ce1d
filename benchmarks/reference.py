"""Reference-lap validation: is the minimum-time reference a lap no driver beats?

    python benchmarks/reference.py                         # bundled tracks + 20 generated tracks
    python benchmarks/reference.py --generated 8 --models runs/random/final.zip
    python benchmarks/reference.py --json reference.json --tracks my_track.png

For every track (the three bundled ones; the drawn ones in benchmarks/tracks/, a 13 m wide star with
five inward bends and a 14 m wide kidney shaped like the tracks of issue 17, and seven drawn with a
brush, ``drawn_*.png``: square corners, a 7 m hairpin, a 40 degree V, 7 m esses, a spur, a 3 m ring;
and `--generated` tracks
from `kartsim track new`: every style, seeds 1.., road widths 7.5-13 m) it prints the
minimum-curvature lap time, the minimum-time
reference and how long its solve took (one core, nothing cached: the cache goes to a temporary
folder), the hard AI's flying laps in the simulator (laps 2 and 3 of a 3-lap run from the start line)
with grass and wall contacts, and the best lap of each `--models` zip (`kartsim eval`, deterministic,
`--episodes` episodes) as a ratio to the reference. Every number is measured in this run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STYLES = ("circuit", "oval", "technical", "random")
WIDTHS = (7.5, 9.0, 11.0, 13.0, 8.0)
PATIENT = {"max_episode_steps": 100000, "stuck_time_s": 1e9, "wrong_way_m": 1e9, "off_track_time_s": 1e9}


def hard_ai_laps(track, laps: int = 3) -> tuple[list[float], int, int]:
    """Lap times of the hard AI from the start line, and its steps on grass / against walls."""
    import numpy as np

    from kartsim.drivers.ai_driver import AIDriver
    from kartsim.sim.config import RaceConfig
    from kartsim.sim.race import Race
    from kartsim.sim.track import Surface, TrackStack

    race = Race(TrackStack.from_tracks([track]), 1, RaceConfig(random_start=False, **PATIENT))
    race.reset_karts(np.array([0]), [np.random.default_rng(0)])
    ai = AIDriver([track], race.kart_cfg, "hard", decision_dt=race.step_dt)
    grass = walls = steps = 0
    while race.laps[0] < laps and steps < 12000:
        race.step(ai.act(race.state))
        steps += 1
        grass += int(race.state.surface[0] == Surface.GRASS)
        walls += int(race.state.wall_hit[0])
    return list(race.stats.lap_times[0]), grass, walls


def generated_tracks(n: int, folder: Path) -> list[Path]:
    from kartsim.cli import main

    paths = []
    for i in range(n):
        style, seed, width = STYLES[i % len(STYLES)], 1 + i // len(STYLES), WIDTHS[i % len(WIDTHS)]
        out = folder / f"gen-{style}-s{seed}-w{width:g}.png"
        main(["track", "new", str(out), "--seed", str(seed), "--style", style, "--width", str(width)])
        paths.append(out)
    return paths


def measure(path: str, models: list[str], episodes: int) -> dict:
    from kartsim.drivers.racing_line import kart_limits, racing_line
    from kartsim.rl.evaluate import evaluate_model
    from kartsim.sim.track import Track

    track = Track.load(path)
    kart_limits()  # measured once per process: not part of the solve
    t0 = time.process_time()
    ref = racing_line(track)
    solve = time.process_time() - t0
    mc = racing_line(track, line="min-curvature")
    laps, grass, walls = hard_ai_laps(track)
    flying = laps[1:]
    row = {"track": track.name, "length_m": round(track.length, 1), "width_m": round(float(track.width.mean()), 1),
           "min_curvature_s": round(mc.lap_time, 2), "reference_s": round(ref.lap_time, 2), "line": ref.method,
           "solve_cpu_s": round(solve, 1), "ai_flying_s": [round(t, 2) for t in flying], "ai_grass_steps": grass,
           "ai_wall_steps": walls,
           "ai_ratio": round(max(flying) / ref.lap_time, 4) if flying else None, "models": {}}
    for m in models:
        sc = evaluate_model(m, episodes=episodes, track=str(path))
        row["models"][Path(m).stem] = None if sc.best_lap is None else round(sc.best_lap / ref.lap_time, 4)
    return row


def markdown(rows: list[dict], models: list[str]) -> str:
    head = ["track", "length", "width", "min-curvature", "reference (min-time)", "solve (CPU s)",
            "hard AI flying laps", "AI / ref (worst)", "grass/walls"] + [f"{Path(m).stem} / ref" for m in models]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["track"], f"{r['length_m']:.0f} m", f"{r['width_m']:.1f} m", f"{r['min_curvature_s']:.2f} s",
                 f"{r['reference_s']:.2f} s" + ("" if r["line"] == "min-time" else " (min-curvature)"),
                 f"{r['solve_cpu_s']:.1f}", " / ".join(f"{t:.2f}" for t in r["ai_flying_s"]),
                 "-" if r["ai_ratio"] is None else f"{r['ai_ratio']:.3f}",
                 f"{r['ai_grass_steps']}/{r['ai_wall_steps']}"]
        cells += ["-" if r["models"].get(Path(m).stem) is None else f"{r['models'][Path(m).stem]:.3f}" for m in models]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--generated", type=int, default=20, help="number of generated tracks (every style in turn)")
    drawn = sorted(str(p) for p in (Path(__file__).parent / "tracks").glob("*.png"))
    ap.add_argument("--tracks", nargs="*", default=drawn,
                    help="more track PNGs (default: benchmarks/tracks/, drawn like the tracks of issue 17)")
    ap.add_argument("--models", nargs="*", default=[], help="model zips to drive on every track (kartsim eval)")
    ap.add_argument("--episodes", type=int, default=2, help="evaluation episodes per model and track")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["KARTSIM_CACHE_DIR"] = str(Path(tmp) / "cache")  # time real solves, not cache hits
        paths = ["circuit", "oval", "technical", *args.tracks]
        paths += [str(p) for p in generated_tracks(args.generated, Path(tmp))]
        print(f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
        rows = []
        for p in paths:
            rows.append(measure(p, args.models, args.episodes))
            print(json.dumps(rows[-1]), flush=True)
        print(f"# load average at the end {os.getloadavg()[0]:.1f}")
    print(markdown(rows, args.models))
    worst = max(r["ai_ratio"] or 9.0 for r in rows)
    best_model = min((v for r in rows for v in r["models"].values() if v is not None), default=None)
    print(f"\nhard AI worst flying lap / reference: {worst:.3f}"
          + ("" if best_model is None else f"; best model lap / reference: {best_model:.3f}"))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
