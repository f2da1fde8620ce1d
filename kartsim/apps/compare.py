"""Driver comparison: best laps of two or more drivers side by side, as PNG figures and an HTML page.

Each driver is a telemetry CSV (the schema of :mod:`kartsim.telemetry`: training logs, ``kartsim
drive`` laps, ``kartsim play`` ...), a trained model ``.zip`` (driven for a few laps first) or
``ai:<level>`` (the AI driver, see :mod:`kartsim.drivers.ai_driver`). From each driver the fastest complete
lap is compared:

* ``speed.png``: speed against distance along the lap (centerline metres from the line);
* ``inputs.png``: throttle/brake and steering against distance;
* ``gg.png``: the g-g diagram (lateral against longitudinal g);
* ``lines.png``: the driven lines on the track map;
* ``delta.png``: time gained or lost along the lap relative to the first driver;
* a table of lap and sector times (the lap split in equal thirds of the centerline).

``report.html`` shows all of it; ``summary.json`` holds the numbers.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kartsim.errors import ConfigError
from kartsim.telemetry import TelemetryWriter, read_telemetry
from kartsim.telemetry.laps import COLORS, Lap, best_lap, extract_laps, sector_times, time_at

__all__ = ["compare", "record_ai_laps", "CompareResult"]

@dataclass
class CompareResult:
    out_dir: Path
    html: Path
    figures: list[Path]
    table: list[dict[str, Any]]

    def format_table(self) -> str:
        cols = ["driver", "lap", "lap time", "S1", "S2", "S3", "gap", "top speed", "ref ratio"]
        rows = [cols]
        for r in self.table:
            rows.append([r["driver"], str(r["lap"]), f"{r['lap_time']:.3f} s"] +
                        [f"{s:.3f}" for s in r["sectors"]] +
                        [f"{r['gap']:+.3f} s", f"{r['top_speed']:.1f} m/s",
                         "-" if r.get("ref_ratio") is None else f"{r['ref_ratio']:.3f}"])
        widths = [max(len(row[i]) for row in rows) for i in range(len(cols))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)


def _load_track(track):
    if track is None:
        return None
    from kartsim.sim.track import Track

    return track if hasattr(track, "centerline") else Track.load(track)


def record_ai_laps(path: str | Path, track="circuit.png", level: str = "hard", laps: int = 3, seed: int = 0,
                   weather: str = "dry") -> Path:
    """Drive the AI for ``laps`` laps from the start line and write its telemetry CSV."""
    from kartsim.drivers.ai_driver import AIDriver
    from kartsim.envs import KartEnv
    from kartsim.sim.config import WEATHER, RaceConfig

    env = KartEnv(track=track if isinstance(track, str) else str(track.path),
                  race=RaceConfig(random_start=False, max_episode_steps=100000, stuck_time_s=30.0))
    try:
        env.reset(seed=seed)
        race = env.race
        race.state.wetness[:] = WEATHER[weather]
        ai = AIDriver(race.stack, race.kart_cfg, level, decision_dt=race.step_dt, rng=np.random.default_rng(seed))
        with TelemetryWriter(path) as w:
            for _ in range(int(laps * 400 + 400)):
                _, reward, term, trunc, info = env.step(ai.act(race.state)[0])
                w.log(info, reward=reward)
                if info["lap"] >= laps or term or trunc:
                    break
    finally:
        env.close()
    return Path(path)


def _check_out_dir(out: Path, drivers: list[str], force: bool) -> None:
    """Refuse to write into a folder that holds files (an earlier report, the user's own) without
    `force`; with it, still refuse when an input CSV lies in the folder (a recorded lap or the
    report could replace it)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder for the report")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not force:
        raise ConfigError(f"--out {out} already holds files; pass --force to replace its report, or give a new folder")
    for spec in drivers:
        p = Path(spec)
        if p.is_file() and p.resolve().parent == out.resolve():
            raise ConfigError(f"{spec} lies in the --out folder {out}, where the report is written; give another --out")


def _resolve_driver(spec: str, out_dir: Path, track, laps: int, trust_model: bool = False) -> tuple[str, Path]:
    """A driver spec -> (label, telemetry CSV)."""
    p = Path(spec)
    if spec.startswith("ai:"):
        level = spec[3:] or "hard"
        if track is None:
            raise ConfigError(f"{spec}: give --track to drive the AI on")
        csv = out_dir / f"ai_{level}.csv"
        record_ai_laps(csv, track if isinstance(track, str) else track.path, level, laps=laps)
        return f"AI {level}", csv
    if p.suffix.lower() == ".zip":
        return p.stem, _record_model(p, out_dir, track, laps, trust_model)
    if p.suffix.lower() != ".csv" and not p.is_file():
        raise ConfigError(f"{spec}: not a telemetry .csv, a model .zip or ai:<easy|medium|hard>")
    return p.stem, p


def _record_model(path: Path, out_dir: Path, track, laps: int, trust_model: bool = False) -> Path:
    from kartsim.envs import KartEnv
    from kartsim.rl.play import load_driver, run_episodes

    tr = None if track is None else (track if isinstance(track, str) else str(track.path))
    driver = load_driver(path, track=tr, evaluation=True, trust_model=trust_model)
    env = KartEnv(driver.env_config)
    csv = out_dir / f"{path.stem}.csv"
    with TelemetryWriter(csv) as w:
        try:
            run_episodes(driver, env, episodes=1, on_step=lambda e, info, r: w.log(info, reward=r), stop_after_laps=laps)
        finally:
            env.close()
    return csv


def compare(drivers: list[str], out_dir: str | Path = "compare_report", track=None, *, laps: int = 3,
            labels: list[str] | None = None, force: bool = False, trust_model: bool = False) -> CompareResult:
    """Compare the best laps of ``drivers`` (CSV paths, model zips or ``ai:<level>``) into ``out_dir``
    (a new or empty folder, or any with `force`; never one holding an input CSV)."""
    if len(drivers) < 2:
        raise ConfigError("give at least two drivers to compare (telemetry CSVs, model zips or ai:<level>)")
    if labels is not None and len(labels) != len(drivers):
        raise ConfigError(f"--labels: {len(labels)} label(s) for {len(drivers)} drivers")
    out = Path(out_dir)
    _check_out_dir(out, drivers, force)
    out.mkdir(parents=True, exist_ok=True)
    track_obj = _load_track(track)
    track_arg = track if isinstance(track, str) else track_obj
    length = track_obj.length if track_obj is not None else None
    picked: list[Lap] = []
    names: list[str] = []
    for k, spec in enumerate(drivers):
        label, csv = _resolve_driver(spec, out, track_arg, laps, trust_model)
        label = labels[k] if labels else label
        if label in names:
            label = f"{label} ({k + 1})"
        df = read_telemetry(csv)
        lap = best_lap(extract_laps(df, label, length))
        if lap is None:
            raise ConfigError(f"{csv}: no complete lap in this telemetry (a lap runs from the start/finish line "
                              "back to it); drive at least one full lap")
        picked.append(lap)
        names.append(label)
    if length is None:
        length = float(max(np.nanmax(lap.distance) for lap in picked))
    ref_time = None
    if track_obj is not None:
        from kartsim.drivers.racing_line import reference_lap_time

        ref_time = reference_lap_time(track_obj)
    figures = _figures(picked, out, length, track_obj)
    base = picked[0]
    table = []
    for lap in picked:
        table.append({
            "driver": lap.driver,
            "lap": lap.number,
            "episode": lap.episode,
            "lap_time": lap.time,
            "sectors": sector_times(lap, length),
            "gap": lap.time - base.time,
            "top_speed": float(lap.data["speed"].max()),
            "mean_speed": float(lap.data["speed"].mean()),
            "max_lateral_g": float(lap.data["lateral_g"].abs().max()),
            "ref_ratio": None if ref_time is None else lap.time / ref_time,
        })
    (out / "summary.json").write_text(json.dumps({"track_length_m": length, "reference_lap_s": ref_time,
                                                  "drivers": table}, indent=2))
    page = _html(table, figures, out, track_obj, ref_time)
    return CompareResult(out, page, figures, table)


# ------------------------------------------------------------------------------------------- figures


def _figures(laps: list[Lap], out: Path, length: float, track) -> list[Path]:
    """The report's PNGs in ``out``: speed, inputs, g-g, driven lines, delta (to the first lap)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []

    def save(fig, name):
        fig.tight_layout()
        p = out / name
        fig.savefig(p, dpi=80)
        plt.close(fig)
        paths.append(p)

    save(_speed_figure(plt, laps, length), "speed.png")
    save(_inputs_figure(plt, laps, length), "inputs.png")
    save(_gg_figure(plt, laps), "gg.png")
    save(_lines_figure(plt, laps, track), "lines.png")
    save(_delta_figure(plt, laps, length), "delta.png")
    return paths


def _speed_figure(plt: Any, laps: list[Lap], length: float) -> Any:
    fig, ax = plt.subplots(figsize=(10, 3.6))
    for k, lap in enumerate(laps):
        ax.plot(lap.distance, lap.data["speed"], color=COLORS[k % len(COLORS)], lw=1.2,
                label=f"{lap.driver} ({lap.time:.2f} s)")
    ax.set_xlabel("distance along the lap (m)")
    ax.set_ylabel("speed (m/s)")
    ax.set_xlim(0, length)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("speed")
    return fig


def _inputs_figure(plt: Any, laps: list[Lap], length: float) -> Any:
    fig, axes = plt.subplots(2, 1, figsize=(10, 4.6), sharex=True)
    for k, lap in enumerate(laps):
        c = COLORS[k % len(COLORS)]
        axes[0].plot(lap.distance, lap.data["throttle"], color=c, lw=1.0, label=lap.driver)
        axes[1].plot(lap.distance, lap.data["steering"], color=c, lw=1.0)
    axes[0].set_ylabel("throttle (< 0 brake)")
    axes[1].set_ylabel("steering (+ right)")
    axes[1].set_xlabel("distance along the lap (m)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.set_xlim(0, length)
    axes[0].legend(loc="lower right", fontsize=8)
    return fig


def _gg_figure(plt: Any, laps: list[Lap]) -> Any:
    fig, ax = plt.subplots(figsize=(5, 5))
    for k, lap in enumerate(laps):
        ax.scatter(lap.data["lateral_g"], lap.data["longitudinal_g"], s=4, alpha=0.6,
                   color=COLORS[k % len(COLORS)], label=lap.driver)
    ax.axhline(0, color="k", lw=0.5)
    ax.axvline(0, color="k", lw=0.5)
    ax.set_xlabel("lateral g (+ right)")
    ax.set_ylabel("longitudinal g (+ accelerating)")
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("g-g diagram")
    return fig


def _lines_figure(plt: Any, laps: list[Lap], track) -> Any:
    """The driven lines on the track image (no track: on blank axes, y down like the image)."""
    fig, ax = plt.subplots(figsize=(7, 5.5))
    if track is not None:
        h, w = track.rgb.shape[:2]
        ax.imshow(track.rgb, extent=(0, w * track.scale, h * track.scale, 0))
    else:
        ax.invert_yaxis()
    for k, lap in enumerate(laps):
        ax.plot(lap.data["x"], lap.data["y"], color=COLORS[k % len(COLORS)], lw=1.0, label=lap.driver)
    ax.set_aspect("equal")
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title("driven lines")
    return fig


def _delta_figure(plt: Any, laps: list[Lap], length: float) -> Any:
    """Time gained or lost along the lap against the first lap, the sector bounds dashed."""
    d = np.linspace(0.0, length, 600)
    base = time_at(laps[0], d)
    fig, ax = plt.subplots(figsize=(10, 3.2))
    for k, lap in enumerate(laps):
        ax.plot(d, time_at(lap, d) - base, color=COLORS[k % len(COLORS)], lw=1.2, label=lap.driver)
    for b in np.linspace(0.0, length, 4)[1:-1]:
        ax.axvline(b, color="k", lw=0.5, ls="--")
    ax.set_xlabel("distance along the lap (m)")
    ax.set_ylabel(f"delta to {laps[0].driver} (s)")
    ax.set_xlim(0, length)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("lap-time delta (> 0: behind)")
    return fig


def _html(table, figures, out: Path, track, ref_time) -> Path:
    esc = html.escape
    rows = []
    for r in table:
        cells = [esc(r["driver"]), str(r["lap"]), f"{r['lap_time']:.3f}"] + [f"{s:.3f}" for s in r["sectors"]] + [
            f"{r['gap']:+.3f}", f"{r['top_speed']:.1f}", f"{r['max_lateral_g']:.2f}",
            "-" if r["ref_ratio"] is None else f"{r['ref_ratio']:.3f}"]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = ["driver", "lap", "lap time (s)", "S1", "S2", "S3", "gap (s)", "top speed (m/s)", "max lat g", "ref ratio"]
    title = "kartsim driver comparison" + (f" — {esc(track.name)}" if track is not None else "")
    ref = f"<p>Reference lap (racing line, minimum-time profile): {ref_time:.3f} s</p>" if ref_time else ""
    imgs = "\n".join(f'<figure><img src="{esc(p.name)}" alt="{esc(p.stem)}"></figure>' for p in figures)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child{{text-align:left}}
img{{max-width:100%}}figure{{margin:12px 0}}</style></head>
<body><h1>{title}</h1>{ref}
<table><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr>
{chr(10).join(rows)}
</table>
{imgs}
</body></html>
"""
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
