"""``kartsim eval``: drive several models the same way and compare them in one table.

Every model starts on the start line (``random_start=False``), drives `episodes` episodes with
deterministic actions (unless asked otherwise) on its own training track or on `track`, and is
summarised as: laps completed, completion rate (share of episodes with at least one lap), best and
mean lap time, off-track share and mean speed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from kartsim.errors import ConfigError
from kartsim.rl.play import EpisodeResult, end_text, load_driver, run_episodes, track_value


@dataclass
class ModelScore:
    model: str
    kind: str
    track: str
    episodes: int
    laps: int
    completion_rate: float
    best_lap: float | None
    mean_lap: float | None
    off_track_share: float
    mean_speed: float
    mean_reward: float
    ref_lap: float | None = None
    """Reference lap time of the track (kartsim.drivers.racing_line) when the model drove a single track."""
    ends: dict[str, int] = field(default_factory=dict)
    """How many episodes ended for each reason (`kartsim.rl.play.END_REASONS` keys)."""

    @property
    def ref_ratio(self) -> float | None:
        """Best lap ÷ reference lap time (1.0 = as fast as the minimum-time reference)."""
        if self.best_lap is None or not self.ref_lap:
            return None
        return self.best_lap / self.ref_lap

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ref_ratio": self.ref_ratio}


def score(label: str, kind: str, track: str, results: list[EpisodeResult]) -> ModelScore:
    laps = [t for r in results for t in r.lap_times]
    return ModelScore(
        model=label,
        kind=kind,
        track=track,
        episodes=len(results),
        laps=int(sum(r.laps for r in results)),
        completion_rate=float(np.mean([r.laps >= 1 for r in results])) if results else 0.0,
        best_lap=min(laps) if laps else None,
        mean_lap=float(np.mean(laps)) if laps else None,
        off_track_share=float(np.mean([r.off_track_share for r in results])) if results else 0.0,
        mean_speed=float(np.mean([r.mean_speed for r in results])) if results else 0.0,
        mean_reward=float(np.mean([r.reward for r in results])) if results else 0.0,
        ends=dict(Counter(r.end for r in results).most_common()),
    )


def evaluate_model(
    model_path: str | Path,
    *,
    episodes: int = 3,
    track: list[str] | str | None = None,
    deterministic: bool = True,
    max_steps: int | None = None,
    seed: int = 0,
    vision: bool | None = None,
    trust_model: bool = False,
) -> ModelScore:
    """Drive one model for `episodes` episodes from the start line and score it."""
    from kartsim.envs import KartEnv

    driver = load_driver(model_path, track=track, vision=vision, evaluation=True, trust_model=trust_model)
    env = KartEnv(driver.env_config, render_mode=None)
    try:
        results = run_episodes(driver, env, episodes=episodes, deterministic=deterministic, max_steps=max_steps, seed=seed)
        ref = _reference_lap(env)
    finally:
        env.close()
    result = score(driver.label, "vision" if driver.vision else "rays", str(track_value(driver.env_config.track)), results)
    result.ref_lap = ref
    return result


def _reference_lap(env) -> float | None:
    """The reference lap time of the env's track (None for a pool of several tracks)."""
    from kartsim.drivers.racing_line import reference_lap_time

    tracks = env.race.stack.tracks
    return reference_lap_time(tracks[0], env.race.kart_cfg) if len(tracks) == 1 else None


def evaluate_models(
    model_paths: list[str | Path],
    *,
    episodes: int = 3,
    track: list[str] | str | None = None,
    deterministic: bool = True,
    max_steps: int | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    trust_model: bool = False,
) -> list[ModelScore]:
    if episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, not {episodes}")
    if max_steps is not None and max_steps < 1:
        raise ConfigError(f"--max-steps must be >= 1, not {max_steps}")
    if not model_paths:
        raise ConfigError("give at least one model .zip to evaluate")
    scores = []
    for path in model_paths:
        if progress is not None:
            progress(f"Evaluating {path} ({episodes} episode(s))...")
        scores.append(
            evaluate_model(path, episodes=episodes, track=track, deterministic=deterministic, max_steps=max_steps, seed=seed,
                           trust_model=trust_model)
        )
    return scores


COLUMNS = ("model", "kind", "track", "laps", "completed", "best lap", "mean lap", "ref_ratio", "off track", "mean speed",
           "ended")


def table_rows(scores: list[ModelScore]) -> list[tuple[str, ...]]:
    def t(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f} s"

    return [
        (
            s.model,
            s.kind,
            s.track,
            str(s.laps),
            f"{100 * s.completion_rate:.0f}% of {s.episodes}",
            t(s.best_lap),
            t(s.mean_lap),
            "-" if s.ref_ratio is None else f"{s.ref_ratio:.3f}",
            f"{100 * s.off_track_share:.1f}%",
            f"{s.mean_speed:.1f} m/s",
            ", ".join(f"{end_text(k)} {n}" for k, n in s.ends.items()) or "-",
        )
        for s in scores
    ]


def format_table(scores: list[ModelScore]) -> str:
    """A plain-text table (fixed-width columns) of the scores."""
    rows = [COLUMNS] + table_rows(scores)
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def print_table(scores: list[ModelScore], *, title: str = "Model comparison") -> None:
    """Print with rich when stdout is a terminal, plain text otherwise (pipes, logs, tests)."""
    import sys

    if sys.stdout.isatty():
        try:
            from rich.console import Console
            from rich.table import Table

            table = Table(title=title)
            for i, col in enumerate(COLUMNS):
                table.add_column(col, justify="left" if i < 3 else "right")
            for row in table_rows(scores):
                table.add_row(*row)
            Console().print(table)
            return
        except ImportError:
            pass
    print(title)
    print(format_table(scores))
