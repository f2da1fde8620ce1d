"""The ``info`` dict of one kart after a step: laps, progress, telemetry and the reward terms."""

from __future__ import annotations

from typing import Any

import numpy as np

from kartsim.race import TERMINATION_REASONS, Race


def kart_info(race: Race, i: int, telemetry: bool = True) -> dict[str, Any]:
    new_lap = race.new_lap_time[i]
    info: dict[str, Any] = {
        "lap": int(race.laps[i]),
        "lap_times": list(race.stats.lap_times[i]),
        "best_lap": float(race.best_lap[i]) if np.isfinite(race.best_lap[i]) else None,
        "new_lap_time": None if np.isnan(new_lap) else float(new_lap),
        "progress": float(race.s[i]),
        "reward_terms": {name: float(v[i]) for name, v in race.terms.items()},
    }
    if telemetry:
        info["telemetry"] = race.telemetry(i)
    if race.terminated[i] or race.truncated[i]:
        info["episode_stats"] = race.episode_stats(i)
        info["termination"] = TERMINATION_REASONS[int(race.termination_reason[i])] or "time_limit"
    return info


def reset_info(race: Race, i: int) -> dict[str, Any]:
    return {"lap": 0, "lap_times": [], "best_lap": None, "progress": float(race.s[i]),
            "track": race.stack.tracks[int(race.state.track_idx[i])].name}
