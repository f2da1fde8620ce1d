"""The ``info`` dicts of the karts after a step: laps, progress, telemetry and the reward terms."""

from __future__ import annotations

from typing import Any

import numpy as np

from kartsim.race import TERMINATION_REASONS, Race


def step_infos(race: Race, telemetry: np.ndarray) -> list[dict[str, Any]]:
    """One info dict per kart; ``telemetry[i]`` says whether kart i's carries the telemetry dict.

    Built from Python lists made once per step: per-element numpy indexing would cost more than
    the simulation itself with hundreds of karts.
    """
    laps = race.laps.tolist()
    progress = race.s.tolist()
    best = race.best_lap.tolist()
    new_lap = race.new_lap_time.tolist()
    names = list(race.terms)
    columns = [race.terms[name].tolist() for name in names]
    ended = np.flatnonzero(race.terminated | race.truncated)
    infos = []
    for i in range(race.n):
        lap_times = race.stats.lap_times[i]
        infos.append({
            "lap": laps[i],
            "lap_times": list(lap_times) if lap_times else [],
            "best_lap": best[i] if best[i] != np.inf else None,
            "new_lap_time": None if new_lap[i] != new_lap[i] else new_lap[i],  # NaN check
            "progress": progress[i],
            "reward_terms": dict(zip(names, [col[i] for col in columns])),
        })
    for i in np.flatnonzero(telemetry):
        infos[i]["telemetry"] = race.telemetry(int(i))
    for i in ended:
        infos[i]["episode_stats"] = race.episode_stats(int(i))
        infos[i]["termination"] = TERMINATION_REASONS[int(race.termination_reason[i])] or "time_limit"
    return infos


def reset_info(race: Race, i: int) -> dict[str, Any]:
    return {"lap": 0, "lap_times": [], "best_lap": None, "progress": float(race.s[i]),
            "track": race.stack.tracks[int(race.state.track_idx[i])].name}
