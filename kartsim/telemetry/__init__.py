"""Telemetry files: the one definition of the CSV schema, a writer, and plots.

A telemetry CSV has one row per logged simulation step of a kart (env 0 during training, or the
first N with ``--telemetry-envs N``; the kart being driven during play). The columns are `TELEMETRY_COLUMNS`, in that order:

=============== ==========================================================================
step            global step counter of the writer (training: total env steps so far)
episode         episode number of this kart, counted from 0 by the writer
env             which kart (vector env index) the row is of: 0 unless training logs several
                (``--telemetry-envs N``)
lap             completed laps in this episode
time_s          simulated seconds since the start of the episode
lap_time        simulated seconds since the start of the current lap
x, y            position in metres (image axes: y points down the image)
yaw             heading in rad (atan2 in image axes)
speed           m/s
longitudinal_g  body-frame longitudinal acceleration in g (> 0 = accelerating)
lateral_g       body-frame lateral acceleration in g (> 0 = towards the driver's right)
yaw_rate        rad/s (> 0 = turning right)
steering        applied steering in [-1, 1] (+1 = right)
throttle        applied throttle in [-1, 1] (< 0 = braking)
slip_angle      rad
progress        metres along the lap from the start/finish line
lateral_offset  metres from the centerline (> 0 = right of it)
surface         asphalt | kerb | grass | wall
off_track       1 when the kart is off the road, else 0
reward          reward of this step
tyre_condition  1.0 = new tyres, falling with wear
wetness         track wetness under the kart: 0 dry, 0.5 damp, 1 wet
damage          0 = undamaged .. 1 (impacts into walls and other karts)
position        race position, 1 = leading (multi-kart races; empty otherwise)
gap             seconds behind the kart ahead (multi-kart races; 0 for the leader)
=============== ==========================================================================

This module imports nothing from the simulator; plots that show the track take its image as an
array (see `plot_telemetry`).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import IO, Any, Mapping

from kartsim.errors import ConfigError

TELEMETRY_COLUMNS: tuple[str, ...] = (
    "step",
    "episode",
    "env",
    "lap",
    "time_s",
    "lap_time",
    "x",
    "y",
    "yaw",
    "speed",
    "longitudinal_g",
    "lateral_g",
    "yaw_rate",
    "steering",
    "throttle",
    "slip_angle",
    "progress",
    "lateral_offset",
    "surface",
    "off_track",
    "reward",
    "tyre_condition",
    "wetness",
    "damage",
    "position",
    "gap",
)

# Columns written from other sources (the training loop, or converted); every other column is
# copied as-is from info["telemetry"] (the env's per-step telemetry dict).
_WRITTEN_APART = ("step", "episode", "env", "time_s", "surface", "off_track", "reward")
_FROM_TELEMETRY = tuple(c for c in TELEMETRY_COLUMNS if c not in _WRITTEN_APART)


def _num(value: Any, digits: int = 4) -> Any:
    """Round floats so the CSV stays readable and small; pass other values through."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return value
    if math.isnan(f) or math.isinf(f):
        return f
    if f.is_integer():
        return int(f)
    return round(f, digits)


def telemetry_row(
    info: Mapping[str, Any], *, step: int, episode: int, time_s: float, reward: float = 0.0, env: int = 0
) -> dict[str, Any]:
    """One CSV row (a dict keyed by `TELEMETRY_COLUMNS`) from one env step's `info`."""
    tel = info.get("telemetry") or {}
    row: dict[str, Any] = {name: "" for name in TELEMETRY_COLUMNS}
    row["step"] = int(step)
    row["episode"] = int(episode)
    row["env"] = int(env)
    row["time_s"] = _num(time_s, 3)
    for name in _FROM_TELEMETRY:
        if name in tel:
            row[name] = _num(tel[name])
    if row["lap"] == "" and "lap" in info:
        row["lap"] = int(info["lap"])
    if row["progress"] == "" and "progress" in info:
        row["progress"] = _num(info["progress"], 2)
    row["surface"] = str(tel.get("surface", ""))
    row["off_track"] = int(bool(tel.get("off_track", False)))
    row["reward"] = _num(reward)
    return row


class TelemetryWriter:
    """Appends telemetry rows to a CSV file with the `TELEMETRY_COLUMNS` header.

    Usage: ``w = TelemetryWriter(path); w.log(info, reward=r); ...; w.end_episode(); w.close()``.
    ``time_s`` is the env's episode clock (``telemetry["time_s"]``) when it reports one, else the
    writer's own (``telemetry["step_time_s"]`` or `dt` per step, `advance` for unlogged steps);
    pass ``step=`` to use an outside step counter (training). Several karts can share one file:
    pass ``env=i`` to `log`, `advance` and `end_episode` (each kart keeps its own episode and clock).
    Appending to a file written with older columns keeps that file's header.
    """

    def __init__(self, path: str | Path, *, append: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        exists = append and self.path.exists() and self.path.stat().st_size > 0
        columns = list(TELEMETRY_COLUMNS)
        if exists:
            with open(self.path, newline="", encoding="utf-8") as f:
                columns = next(csv.reader(f), columns)
        self._file: IO[str] = open(self.path, "a" if exists else "w", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._file, fieldnames=columns, extrasaction="ignore")
        if not exists:
            self._writer.writeheader()
        self.first_episode = 0
        self._episode: dict[int, int] = {}
        self._time: dict[int, float] = {}
        self.step = 0
        self.rows = 0

    @property
    def episode(self) -> int:
        """Kart 0's episode number; setting it sets the number every kart's next episode starts from."""
        return self._episode.get(0, self.first_episode)

    @episode.setter
    def episode(self, value: int) -> None:
        self.first_episode = int(value)
        self._episode = {k: int(value) for k in self._episode} or {0: int(value)}

    @property
    def time_s(self) -> float:
        return self._time.get(0, 0.0)

    def log(
        self, info: Mapping[str, Any], *, reward: float = 0.0, step: int | None = None, dt: float | None = None,
        env: int = 0,
    ) -> None:
        """Write one row for a step that has just happened (advances the episode clock first)."""
        tel = info.get("telemetry") or {}
        if "time_s" in tel:
            self._time[env] = float(tel["time_s"])
        else:
            self.advance(float(dt if dt is not None else tel.get("step_time_s", 0.0)), env)
        self.step = int(step) if step is not None else self.step + 1
        episode = self._episode.setdefault(env, self.first_episode)
        self._writer.writerow(telemetry_row(info, step=self.step, episode=episode, time_s=self._time[env],
                                            reward=reward, env=env))
        self.rows += 1

    def advance(self, dt: float, env: int = 0) -> None:
        """Advance the episode clock for a step that is not written (logging every k steps)."""
        self._time[env] = self._time.get(env, 0.0) + float(dt)

    def end_episode(self, env: int = 0) -> None:
        self._episode[env] = self._episode.get(env, self.first_episode) + 1
        self._time[env] = 0.0

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> "TelemetryWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_telemetry(path: str | Path, env: int | None = 0):
    """The CSV as a pandas DataFrame (the rows of kart `env` when it holds several, ``--telemetry-envs``;
    None: all rows); raises ConfigError when it is missing or not a telemetry log."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"telemetry file not found: {path}")
    try:
        df = pd.read_csv(path)
    except Exception as exc:  # pandas raises several kinds
        raise ConfigError(f"cannot read {path} as CSV ({exc.__class__.__name__}); is it a telemetry_log.csv?") from None
    missing = [c for c in ("step", "episode", "x", "y", "speed", "lateral_g", "steering") if c not in df.columns]
    if missing:
        raise ConfigError(f"{path} is not a kartsim telemetry log: missing column(s) {', '.join(missing)}")
    if env is not None and "env" in df.columns and df["env"].nunique() > 1:
        df = df[df["env"] == env].reset_index(drop=True)
    if len(df) == 0:
        raise ConfigError(f"{path} has no rows yet; train or play for a few steps first")
    return df


def distance_driven(df) -> "Any":
    """Cumulative metres driven (x, y path length), continuing across episode boundaries."""
    import numpy as np

    x = df["x"].to_numpy(dtype=float)
    y = df["y"].to_numpy(dtype=float)
    ep = df["episode"].to_numpy()
    d = np.hypot(np.diff(x, prepend=x[:1]), np.diff(y, prepend=y[:1]))
    d[np.concatenate([[True], ep[1:] != ep[:-1]])] = 0.0
    return np.cumsum(d)


def plot_telemetry(
    csv_path: str | Path,
    out_dir: str | Path,
    *,
    x_axis: str = "step",
    track_rgb=None,
    track_scale: float | None = None,
    title: str | None = None,
) -> list[Path]:
    """Write PNG plots of a telemetry CSV into `out_dir`; returns the written paths.

    * ``telemetry.png``: speed, lateral g and steering against `x_axis` ("step" or "distance").
    * ``driven_line.png``: the driven line coloured by speed, over the track image when
      `track_rgb` ((H, W, 3) uint8) and `track_scale` (metres per pixel) are given.
    """
    if x_axis not in ("step", "distance"):
        raise ConfigError(f"--x must be 'step' or 'distance', not {x_axis!r}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = read_telemetry(csv_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    name = title or Path(csv_path).parent.name or "telemetry"

    xs = distance_driven(df) if x_axis == "distance" else df["step"].to_numpy()
    xlabel = "distance driven (m)" if x_axis == "distance" else "step"
    fig, axes = plt.subplots(3, 1, figsize=(11, 8), sharex=True)
    for ax, col, label in (
        (axes[0], "speed", "speed (m/s)"),
        (axes[1], "lateral_g", "lateral g"),
        (axes[2], "steering", "steering [-1, 1]"),
    ):
        ax.plot(xs, df[col].to_numpy(dtype=float), lw=0.8)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel(xlabel)
    axes[0].set_title(f"{name}: telemetry")
    fig.tight_layout()
    path = out / "telemetry.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    fig, ax = plt.subplots(figsize=(9, 7))
    if track_rgb is not None and track_scale:
        h, w = track_rgb.shape[:2]
        ax.imshow(track_rgb, extent=(0, w * track_scale, h * track_scale, 0))
    else:
        ax.invert_yaxis()  # image axes: y points down
    sc = ax.scatter(df["x"], df["y"], c=df["speed"], s=2, cmap="plasma")
    fig.colorbar(sc, ax=ax, label="speed (m/s)")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    ax.set_aspect("equal")
    ax.set_title(f"{name}: driven line coloured by speed")
    fig.tight_layout()
    path = out / "driven_line.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written
