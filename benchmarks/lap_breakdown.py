"""Where a trained model loses time: its deterministic flying lap (the second lap from the start
line) against the minimum-time reference line, per tenth of the lap — seconds, speed, throttle and
steering — and how much its steering command moves per second on the straightest tenth (weaving:
the sum of |change| between decisions, the raw `steer_change` reward term).

    python benchmarks/lap_breakdown.py models/quickstart_best.zip --track-name circuit.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def flying_lap(model_path: str, track: str, max_steps: int) -> tuple[np.ndarray, object, float]:
    """(steps of the second lap as rows s, speed, steering, throttle; the race; the lap time)."""
    from kartsim.envs import KartEnv
    from kartsim.rl.play import load_driver

    driver = load_driver(model_path, track=track, evaluation=True)  # from the start line; checks the model fits
    env, model = KartEnv(driver.env_config), driver.model
    obs, _ = env.reset(seed=0)
    race, rows, laps = env.race, [], 0
    for _ in range(max_steps):
        action, _ = model.predict(obs, deterministic=True)
        obs, _, term, trunc, info = env.step(action)
        if info["new_lap_time"] is not None:
            laps += 1
            if laps == 2:
                return np.array(rows), race, float(info["new_lap_time"])
        if laps == 1:
            rows.append((race.s[0], race.state.speed[0], action[0], action[1]))
        if term or trunc:
            break
    raise SystemExit(f"{model_path} did not drive two laps of {track} in {max_steps} steps")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--track-name", default="circuit.png")
    p.add_argument("--max-steps", type=int, default=3000)
    args = p.parse_args(argv)
    from kartsim.drivers.racing_line import racing_line

    rows, race, lap = flying_lap(args.model, args.track_name, args.max_steps)
    line = racing_line(race.stack.tracks[0], race.kart_cfg)
    length = race.stack.tracks[0].length
    print(f"flying lap {lap:.2f} s, reference {line.lap_time:.2f} s: {lap / line.lap_time:.3f}")
    straightest, least_steer = 0, np.inf
    for k in range(10):
        lo, hi = k * length / 10, (k + 1) * length / 10
        mine = (rows[:, 0] >= lo) & (rows[:, 0] < hi)
        ref = (line.center_s >= lo) & (line.center_s < hi)
        ref_s = line.time[ref].max() - line.time[ref].min()
        print(f"{10 * k:3d}-{10 * k + 10:3d} %: {mine.sum() * race.step_dt:5.1f} s (reference {ref_s:4.1f} s), "
              f"speed {rows[mine, 1].mean():4.1f} m/s (reference {line.speed[ref].mean():4.1f}), "
              f"throttle {rows[mine, 3].mean():+.2f}, |steering| {np.abs(rows[mine, 2]).mean():.2f}")
        curvature = np.abs(line.curvature[ref]).mean()
        if curvature < least_steer:
            straightest, least_steer = k, curvature
    tenth = (rows[:, 0] >= straightest * length / 10) & (rows[:, 0] < (straightest + 1) * length / 10)
    moved = float(np.abs(np.diff(rows[tenth, 2])).sum())
    flips = int((np.diff(np.sign(rows[tenth, 2])) != 0).sum())
    seconds = tenth.sum() * race.step_dt
    print(f"straightest tenth ({10 * straightest}-{10 * straightest + 10} %): steering command moved "
          f"{moved / seconds:.1f} per second (full lock to full lock = 2), changed sign {flips / seconds:.1f} times a second")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
