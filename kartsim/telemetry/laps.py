"""Laps of a telemetry log: the complete laps, their times, sector times and where each metre was reached.

Read by the driver comparison (:mod:`kartsim.apps.compare`) and the dashboard's lap charts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kartsim.errors import ConfigError

__all__ = ["Lap", "extract_laps", "best_lap", "time_at", "sector_times", "COLORS"]

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


@dataclass
class Lap:
    """One complete lap of a telemetry log (rows from the line to the line)."""

    driver: str
    episode: int
    number: int
    """1-based lap number within its episode."""
    time: float
    """Lap time (s), as the race counted it."""
    distance: np.ndarray
    """Centerline metres from the start/finish line (0 .. track length)."""
    elapsed: np.ndarray
    """Seconds since the lap started at each row."""
    data: Any = field(repr=False, default=None)
    """The lap's rows (a pandas DataFrame)."""


def extract_laps(df, driver: str = "driver", track_length: float | None = None) -> list[Lap]:
    """All complete laps of a telemetry DataFrame.

    A lap's rows are those of ``lap == L - 1`` with a running lap clock (``lap_time > 0``) up to the
    row where ``lap`` becomes ``L``; its time is the lap clock of the last row before that (exactly
    the time the race counted).
    """
    laps: list[Lap] = []
    if "lap" not in df.columns or "lap_time" not in df.columns or "progress" not in df.columns:
        raise ConfigError(f"{driver}: the telemetry has no lap/lap_time/progress columns; is it a kartsim telemetry log?")
    for ep, g in df.groupby("episode", sort=True):
        g = g.reset_index(drop=True)
        lap = g["lap"].to_numpy(dtype=float)
        lt = g["lap_time"].to_numpy(dtype=float)
        changes = np.nonzero(np.diff(lap) == 1)[0] + 1  # first row of each new lap count
        for r in changes:
            prev = int(lap[r - 1])
            rows = np.nonzero((lap == prev) & (lt > 0))[0]
            rows = rows[rows < r]
            if len(rows) < 3:
                continue
            # the rows of this lap only: after the last reset of the lap clock before r
            resets = np.nonzero(np.diff(lt[rows]) < 0)[0]
            if len(resets):
                rows = rows[resets[-1] + 1:]
            lap_time = float(lt[r - 1])  # the race's lap clock when it crossed the line
            sub = g.iloc[rows]
            elapsed = sub["lap_time"].to_numpy(dtype=float)
            dist = sub["progress"].to_numpy(dtype=float).copy()
            length = track_length or float(np.nanmax(g["progress"]))
            # rows just after the line can still read "end of the lap": unwrap them
            head = np.arange(len(dist)) < len(dist) // 4
            dist[head & (dist > 0.5 * length)] -= length
            laps.append(Lap(driver, int(ep), prev + 1, lap_time, dist, elapsed, sub))
    return laps


def best_lap(laps: list[Lap]) -> Lap | None:
    return min(laps, key=lambda lap: lap.time) if laps else None


def time_at(lap: Lap, d: np.ndarray) -> np.ndarray:
    """Lap time elapsed when the driver reached distance d (monotone envelope of the distance)."""
    dist = np.maximum.accumulate(lap.distance)
    el = lap.elapsed
    keep = np.concatenate([[True], np.diff(dist) > 1e-6])
    return np.interp(d, dist[keep], el[keep])


def sector_times(lap: Lap, length: float, n: int = 3) -> list[float]:
    bounds = np.linspace(0.0, length, n + 1)
    t = time_at(lap, bounds[1:-1])
    marks = np.concatenate([[0.0], t, [lap.time]])
    return [float(v) for v in np.diff(marks)]
