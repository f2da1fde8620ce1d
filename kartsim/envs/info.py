"""The ``info`` dicts of the karts after a step: laps, progress, telemetry and the reward terms."""

from __future__ import annotations

from typing import Any

import numpy as np

from kartsim.sim.race import REWARD_TERMS, TERMINATION_REASONS, Race


def step_infos(race: Race, telemetry: np.ndarray) -> list[dict[str, Any]]:
    """One info dict per kart; ``telemetry[i]`` says whether kart i's carries the telemetry dict.

    Built from Python lists made once per step: per-element numpy indexing would cost more than
    the simulation itself with hundreds of karts.
    """
    # Dict literals: dict(zip(...)) per kart costs twice as much.
    progress, lap, off_track, wall, termination, steer, pace = (race.terms[name].tolist() for name in REWARD_TERMS)
    terms = [{"progress": p, "lap": la, "off_track": o, "wall": w, "termination": t, "steer_change": sc, "lap_pace": lp}
             for p, la, o, w, t, sc, lp in zip(progress, lap, off_track, wall, termination, steer, pace)]
    best = [None if b == np.inf else b for b in race.best_lap.tolist()]
    new_lap = [None if t != t else t for t in race.new_lap_time.tolist()]  # t != t: NaN
    lap_times = [list(times) for times in race.stats.lap_times]
    infos = [
        {"lap": la, "lap_times": times, "best_lap": b, "new_lap_time": nl, "progress": s, "reward_terms": rt}
        for la, times, b, nl, s, rt in zip(race.laps.tolist(), lap_times, best, new_lap, race.s.tolist(), terms)
    ]
    ended = np.flatnonzero(race.terminated | race.truncated)
    for i in np.flatnonzero(telemetry):
        infos[i]["telemetry"] = race.telemetry(int(i))
    for i in ended:
        infos[i]["episode_stats"] = race.episode_stats(int(i))
        infos[i]["termination"] = TERMINATION_REASONS[int(race.termination_reason[i])] or "time_limit"
    return infos


def reset_info(race: Race, i: int) -> dict[str, Any]:
    return {"lap": 0, "lap_times": [], "best_lap": None, "progress": float(race.s[i]),
            "track": race.stack.tracks[int(race.state.track_idx[i])].name}
