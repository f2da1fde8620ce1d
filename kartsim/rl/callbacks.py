"""Training callbacks: checkpoints with configs, racing metrics for TensorBoard, telemetry CSV."""

from __future__ import annotations

import math
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from kartsim import faults
from kartsim.telemetry import TelemetryWriter


class FaultPointsCallback(BaseCallback):
    """Passes the `kartsim.faults` points ``rollout`` (every env step) and ``update`` (every
    minibatch of a PPO update: the policy's forward pass with gradients on; rollouts run without);
    added only when ``KARTSIM_FAULT`` is set (the fault tests). A module hook, not a patched method,
    so nothing of it is saved with the model."""

    def _on_training_start(self) -> None:
        import torch

        def on_forward(module: Any, args: Any) -> None:
            if torch.is_grad_enabled():
                faults.point("update")

        self._hook = self.model.policy.mlp_extractor.register_forward_pre_hook(on_forward)

    def _on_training_end(self) -> None:
        self._hook.remove()

    def _on_step(self) -> bool:
        faults.point("rollout")
        return True


class KartCheckpointCallback(BaseCallback):
    """Saves ``<dir>/<name>_<steps>_steps.zip`` each time the total env-step count passes a multiple
    of `every_steps` (steps of all vector envs together, as ``--timesteps`` counts them).

    `save` is ``save(model, path)``: it writes the zip with the kartsim configs inside.
    """

    def __init__(self, every_steps: int, directory: Path, name: str, save: Callable[[Any, Path], Path]) -> None:
        super().__init__()
        self.every_steps = int(every_steps)
        self.directory = Path(directory)
        self.name = name
        self._save = save
        self._next = 0
        self.saved: list[Path] = []

    def _on_training_start(self) -> None:
        self._next = (self.num_timesteps // self.every_steps + 1) * self.every_steps

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            path = self.directory / f"{self.name}_{self.num_timesteps}_steps.zip"
            self.saved.append(self._save(self.model, path))
            self._next = (self.num_timesteps // self.every_steps + 1) * self.every_steps
        return True


class RacingMetricsCallback(BaseCallback):
    """Logs racing metrics under ``racing/`` and the reward terms under ``reward/`` once per rollout
    (shown in TensorBoard and the console log).

    * ``racing/lap_time``: mean of the last 100 completed laps (s) (all envs)
    * ``racing/best_lap_time``: best lap so far in this run (s)
    * ``racing/laps_per_episode``, ``racing/progress_m``, ``racing/mean_speed`` (m/s),
      ``racing/off_track_share``, ``racing/lap_completion_rate`` (share of episodes with >= 1 lap):
      means over the last 100 finished episodes (from ``info["episode_stats"]``).
    * ``reward/<term>`` (``reward/progress``, ``reward/lap``, ``reward/off_track``, ``reward/wall``,
      ``reward/termination``; the race envs add ``reward/position``, ``reward/finish``): each term's
      contribution to the episode reward (weight × its per-episode sum, from
      ``episode_stats["reward_terms"]``), mean over the last 100 finished episodes. They add up to the
      mean episode reward of those episodes.
    """

    def __init__(self, window: int = 100) -> None:
        super().__init__()
        self.lap_times: deque[float] = deque(maxlen=window)
        self.episodes: deque[dict[str, Any]] = deque(maxlen=window)
        self.best_lap: float | None = None
        self.total_laps = 0

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", ()):
            lap = info.get("new_lap_time")
            if lap is not None:
                lap = float(lap)
                self.lap_times.append(lap)
                self.total_laps += 1
                if self.best_lap is None or lap < self.best_lap:
                    self.best_lap = lap
            stats = info.get("episode_stats")
            if stats is not None:
                self.episodes.append(stats)
        return True

    def _on_rollout_end(self) -> None:
        record = self.logger.record
        if self.lap_times:
            record("racing/lap_time", float(np.mean(self.lap_times)))
        if self.best_lap is not None:
            record("racing/best_lap_time", self.best_lap)
        if self.episodes:
            def mean(key: str) -> float:
                values = [float(e[key]) for e in self.episodes if e.get(key) is not None]
                return float(np.mean(values)) if values else float("nan")

            record("racing/laps_per_episode", mean("laps"))
            record("racing/progress_m", mean("progress_m"))
            record("racing/mean_speed", mean("mean_speed"))
            record("racing/off_track_share", mean("off_track_share"))
            record(
                "racing/lap_completion_rate",
                float(np.mean([float((e.get("laps") or 0) >= 1) for e in self.episodes])),
            )
            terms: dict[str, list[float]] = {}
            for e in self.episodes:
                for name, value in (e.get("reward_terms") or {}).items():
                    terms.setdefault(name, []).append(float(value))
            for name, values in terms.items():
                record(f"reward/{name}", float(np.mean(values)))
        record("racing/total_laps", self.total_laps)


class ValueWarmupCallback(BaseCallback):
    """Train only the value function in the first `updates` PPO updates of a pre-trained policy.

    A cloned policy starts PPO with a critic that knows nothing: its first advantages are noise, and
    the updates they drive pull the clone away from its line. With the actor frozen (no gradient) the
    critic first learns the clone's returns (measured, one seed: a 1.007 x rays clone was at 1.025 x
    after 100k PPO steps with 4 such updates, 1.052 x without; benchmarks/RESULTS.md)."""

    def __init__(self, updates: int) -> None:
        super().__init__()
        self.updates = int(updates)
        self.seen = 0
        self.frozen: list[Any] = []

    def _on_training_start(self) -> None:
        from kartsim.rl.bc import actor_parameters

        policy = self.model.policy
        self.frozen = actor_parameters(policy) + ([policy.log_std] if hasattr(policy, "log_std") else [])
        self._set(False)

    def _set(self, trainable: bool) -> None:
        for p in self.frozen:
            p.requires_grad_(trainable)
        if trainable:
            self.frozen = []

    def _on_rollout_end(self) -> None:
        # SB3 calls this just before each update: the update after the `updates`-th trains everything.
        self.seen += 1
        if self.seen > self.updates and self.frozen:
            self._set(True)

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        self._set(True)


def _last_episode_in_csv(path: Path) -> int:
    """The episode number of the last row of an existing telemetry CSV (-1 when none)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 4096))
            lines = f.read().decode("utf-8", "replace").strip().splitlines()
        header = path.open(encoding="utf-8").readline().strip().split(",")
        col = header.index("episode")
        if len(lines) >= 1 and lines[-1].split(",")[0] != "step":
            return int(float(lines[-1].split(",")[col]))
    except (OSError, ValueError, IndexError):
        pass
    return -1


class DeviceUsageCallback(BaseCallback):
    """Logs the training device's utilisation and memory once per rollout (`kartsim.telemetry.devices`):
    ``system/gpu_util_pct`` and ``system/gpu_mem_used_gb`` on CUDA (NVML), ``system/cpu_util_pct`` and
    ``system/cpu_mem_used_gb`` otherwise (the CPUs' busy share over the rollout and its update)."""

    def __init__(self) -> None:
        super().__init__()
        self.monitor = None
        self.last: dict[str, Any] | None = None

    def _on_training_start(self) -> None:
        from kartsim.telemetry.devices import DeviceMonitor

        self.monitor = DeviceMonitor(str(self.model.device))

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        sample = self.monitor.sample() if self.monitor is not None else None
        if sample is None:
            return
        self.last = sample.to_dict()
        self.logger.record(f"system/{sample.kind}_util_pct", sample.util_pct)
        self.logger.record(f"system/{sample.kind}_mem_used_gb", sample.mem_used_mb / 1024)


class TelemetryCSVCallback(BaseCallback):
    """Writes the telemetry of the first `n_envs` vector envs (env 0 by default) to one CSV (schema:
    `kartsim.telemetry.TELEMETRY_COLUMNS`, the ``env`` column says which) every `every` env steps;
    ``step`` is the total env-step count of the run. Appends when resuming."""

    def __init__(self, path: Path, every: int = 1, append: bool = False, n_envs: int = 1) -> None:
        super().__init__()
        self.path = Path(path)
        self.every = max(1, int(every))
        self.append = append
        self.n_envs = max(1, int(n_envs))
        self.writer: TelemetryWriter | None = None
        self._calls = 0
        self.live = None  # <run>/live.feed for `kartsim dashboard` (kartsim.telemetry.live)

    def _on_training_start(self) -> None:
        first_episode = _last_episode_in_csv(self.path) + 1 if self.append and self.path.exists() else 0
        self.writer = TelemetryWriter(self.path, append=self.append)
        self.writer.episode = first_episode
        from kartsim.telemetry.live import TrainingLiveFeed

        self.live = TrainingLiveFeed.for_run(self.path.parent)  # None when KARTSIM_LIVE=0
        if self.live is not None:
            self.live.start(self.model)

    def _on_step(self) -> bool:
        assert self.writer is not None
        infos, rewards, dones = self.locals["infos"], self.locals["rewards"], self.locals["dones"]
        log = self._calls % self.every == 0
        for i in range(min(self.n_envs, len(infos))):
            dt = float((infos[i].get("telemetry") or {}).get("step_time_s", 0.0))
            if log:
                self.writer.log(infos[i], reward=float(rewards[i]), step=self.num_timesteps, dt=dt, env=i)
            else:
                self.writer.advance(dt, env=i)
            if bool(dones[i]):
                self.writer.end_episode(env=i)
        self._calls += 1
        if self.live is not None:
            self.live.on_step(self)  # at most 20 times a second
        return True

    def _on_rollout_end(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def _on_training_end(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.live is not None:
            self.live.close(self)


def eval_key(row: dict[str, Any]) -> tuple[float, float, float]:
    """How evaluation rows rank (larger is better): completion first, then the lap against the
    reference (the best lap itself where a track has no reference), then the distance driven."""
    pace = row.get("ref_ratio") if row.get("ref_ratio") is not None else row.get("eval_best_lap")
    return (float(row.get("completion") or 0.0), -float(pace) if pace is not None else -math.inf,
            float(row.get("eval_progress_m") or 0.0))


def describe_eval(row: dict[str, Any]) -> str:
    """One line: completion, best lap and ratio of an evaluation row."""
    text = f"lapped in {100 * row['completion']:.0f}% of runs"
    if row.get("eval_best_lap") is not None:
        text += f", best lap {row['eval_best_lap']:.2f} s"
    if row.get("ref_ratio") is not None:
        text += f" = {row['ref_ratio']:.3f} x reference"
    if row.get("completion", 0) < 1:
        text += f", {row['eval_progress_m']:.0f} m driven"
    return text


class LapEvalCallback(BaseCallback):
    """Every `every` env steps (all vector envs together, as ``--timesteps`` counts them), drives the
    current policy deterministically from the start line of each evaluation track (`tracks`; one
    single env each, `episodes` episodes, at most `max_laps` laps) — SB3's ``EvalCallback``
    convention, scored for racing:

    * ``completion``: share of (track, episode) runs with at least one lap;
    * ``eval_best_lap``: the best lap (s), over all tracks;
    * ``ref_ratio``: mean over the tracks with a lap of best lap ÷ the track's reference lap
      (`kartsim.drivers.racing_line.reference_lap_time`);
    * off-track share, mean speed and progress; ``train_wall_s`` (seconds of training so far, less
      the evaluations) and ``tracks`` (the same per track).

    Rows go to `rows`, to ``eval/*`` in the logger (TensorBoard) and to `report`. With `save_best`
    (``save_best(model, row) -> Path``) the model is saved each time an evaluation beats the best so far
    (`eval_key`: completion first, then the ratio); `best` starts from `best_row` (a resumed run).
    Training stops when an evaluation completes `stop_when_laps` laps on every run, or when it laps
    every track within `stop_at_ratio` × reference. With `evaluate_final` the final model is
    evaluated too when training ends (`final`), so a run can say whether it ended worse than its best;
    with `evaluate_start` the policy is evaluated before the first PPO step too (a pre-trained policy:
    its clone may be the best model of the run). `started_at` (a ``time.perf_counter()``): count
    ``train_wall_s`` from then (e.g. the start of the run, demonstrations included) instead of from
    the start of PPO.
    """

    def __init__(
        self,
        env_config: Any,
        every: int,
        *,
        tracks: list[str] | None = None,
        max_steps: int | None = None,
        episodes: int = 1,
        max_laps: int | None = None,
        stop_when_laps: int | None = None,
        stop_at_ratio: float | None = None,
        save_best: Callable[[Any, dict[str, Any]], Path] | None = None,
        best_row: dict[str, Any] | None = None,
        report: Callable[[dict[str, Any]], None] | None = None,
        evaluate_final: bool = False,
        evaluate_start: bool = False,
        started_at: float | None = None,
    ) -> None:
        super().__init__()
        from kartsim.envs.config import apply_env_options
        from kartsim.envs.tracks import track_paths

        data = apply_env_options(env_config.to_dict(), {"random_start": False})
        self.env_config = type(env_config).from_dict(data)
        self.tracks = list(tracks) if tracks else track_paths(self.env_config.track, self.env_config.random_pool_size)
        self.every = int(every)
        self.max_steps = max_steps
        self.episodes = episodes
        self.max_laps = max(filter(None, (max_laps, stop_when_laps)), default=None)
        self.stop_when_laps = stop_when_laps
        self.stop_at_ratio = stop_at_ratio
        self.save_best = save_best
        self.best = best_row
        self.best_path: Path | None = None
        self.final: dict[str, Any] | None = None
        self.report = report
        self.evaluate_final = evaluate_final
        self.evaluate_start = evaluate_start
        self.started_at = started_at
        self.rows: list[dict[str, Any]] = []
        self.eval_seconds = 0.0
        self.refs: list[float | None] = []
        self._next = 0
        self._envs: list[Any] = []
        self._started = 0.0
        self._stop_now = False

    def prepare(self) -> None:
        """Build the evaluation envs and work out the reference laps (once). `kartsim train` calls it
        before training starts, so that a Ctrl-C during a reference solve is not inside SB3's learn."""
        from kartsim.envs import KartEnv

        if not self._envs:
            self._envs = [KartEnv(self.env_config.replace(track=t)) for t in self.tracks]
            self.refs = [_reference(env) for env in self._envs]

    def _on_training_start(self) -> None:
        self.prepare()
        self._next = (self.num_timesteps // self.every + 1) * self.every
        # Training time starts after the references are worked out, unless the caller counts from earlier.
        self._started = time.perf_counter() if self.started_at is None else self.started_at
        # A pre-trained policy that already meets the stop condition stops at the first step.
        self._stop_now = bool(self.evaluate_start) and self._should_stop(self.evaluate())

    def _on_step(self) -> bool:
        if self._stop_now:
            return False
        if self.num_timesteps < self._next:
            return True
        self._next = (self.num_timesteps // self.every + 1) * self.every
        return not self._should_stop(self.evaluate())

    def _should_stop(self, row: dict[str, Any]) -> bool:
        if self.stop_when_laps is not None and row["min_laps"] >= self.stop_when_laps:
            return True
        return (self.stop_at_ratio is not None and row["completion"] >= 1.0 and row["ref_ratio"] is not None
                and row["ref_ratio"] <= self.stop_at_ratio)

    def evaluate(self) -> dict[str, Any]:
        from kartsim.rl.play import Driver, run_episodes

        t0 = time.perf_counter()
        driver = Driver(model=self.model, env_config=self.env_config, path=Path("<training>"), payload=None)
        runs, ratios, laps, per_track = [], [], [], []
        for track, env, ref in zip(self.tracks, self._envs, self.refs):
            results = run_episodes(driver, env, episodes=self.episodes, max_steps=self.max_steps, seed=0,
                            stop_after_laps=self.max_laps)
            runs.extend(results)
            track_laps = [t for r in results for t in r.lap_times]
            laps.extend(track_laps)
            ratio = min(track_laps) / ref if track_laps and ref else None
            if ratio is not None:
                ratios.append(ratio)
            per_track.append({"track": Path(track).stem, "completion": float(np.mean([r.laps >= 1 for r in results])),
                              "best_lap": min(track_laps) if track_laps else None, "ref_lap": ref, "ratio": ratio,
                              "off_track": float(np.mean([r.off_track_share for r in results]))})
        buf = self.model.ep_info_buffer
        row = {
            "steps": int(self.num_timesteps),
            "wall_s": round(time.perf_counter() - self._started, 1),
            "train_ep_reward": round(float(np.mean([e["r"] for e in buf])), 1) if buf else None,
            "completion": round(float(np.mean([r.laps >= 1 for r in runs])), 3),
            "min_laps": min(r.laps for r in runs),
            "eval_best_lap": round(min(laps), 2) if laps else None,
            "eval_laps": max(r.laps for r in runs),
            "ref_ratio": round(float(np.mean(ratios)), 4) if ratios else None,
            "eval_progress_m": round(max(r.progress_m for r in runs), 1),
            "eval_return": round(float(np.mean([r.reward for r in runs])), 2),
            "eval_mean_speed": round(float(np.mean([r.mean_speed for r in runs])), 2),
            "eval_off_track": round(float(np.mean([r.off_track_share for r in runs])), 3),
            "eval_s": round(time.perf_counter() - t0, 1),
            "train_wall_s": round(t0 - self._started - self.eval_seconds, 1),
            "tracks": per_track,
        }
        self.eval_seconds += time.perf_counter() - t0
        self.rows.append(row)
        self._log(row)
        if self.best is None or eval_key(row) > eval_key(self.best):
            self.best = row
            if self.save_best is not None:
                self.best_path = self.save_best(self.model, row)
        if self.report is not None:
            self.report(row)
        return row

    def _log(self, row: dict[str, Any]) -> None:
        record = self.logger.record
        record("eval/completion_rate", row["completion"])
        record("eval/progress_m", row["eval_progress_m"])
        record("eval/off_track_share", row["eval_off_track"])
        record("eval/mean_speed", row["eval_mean_speed"])
        if row["eval_best_lap"] is not None:
            record("eval/best_lap_time", row["eval_best_lap"])
        if row["ref_ratio"] is not None:
            record("eval/ref_ratio", row["ref_ratio"])

    def _on_training_end(self) -> None:
        try:
            if self.rows and self.rows[-1]["steps"] == self.num_timesteps:
                self.final = self.rows[-1]
            elif self.evaluate_final and self.model is not None:
                self.final = self.evaluate()
        finally:
            for env in self._envs:
                env.close()


def _reference(env: Any) -> float | None:
    """The reference lap of a single-track env's track (None when it cannot be worked out)."""
    from kartsim.errors import KartsimError
    from kartsim.drivers.racing_line import reference_lap_time

    try:
        return float(reference_lap_time(env.race.stack.tracks[0], env.race.kart_cfg))
    except KartsimError:
        return None
