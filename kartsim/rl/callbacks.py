"""Training callbacks: checkpoints with configs, racing metrics for TensorBoard, telemetry CSV."""

from __future__ import annotations

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


class LapEvalCallback(BaseCallback):
    """Every `every` env steps, drives the current policy deterministically from the start line (a
    separate single env) and records laps / best lap / progress in `rows` and under ``eval/`` in the
    logger. With `stop_when_laps`, training stops once an evaluation episode completes that many laps.
    """

    def __init__(
        self,
        env_config: Any,
        every: int,
        *,
        max_steps: int = 2000,
        episodes: int = 1,
        stop_when_laps: int | None = None,
        report: Callable[[dict[str, Any]], None] | None = None,
        also_stochastic: bool = False,
    ) -> None:
        super().__init__()
        self.also_stochastic = also_stochastic
        from kartsim.envs.config import apply_env_options

        data = apply_env_options(env_config.to_dict(), {"random_start": False})
        self.env_config = type(env_config).from_dict(data)
        self.every = int(every)
        self.max_steps = max_steps
        self.episodes = episodes
        self.stop_when_laps = stop_when_laps
        self.report = report
        self.rows: list[dict[str, Any]] = []
        self.eval_seconds = 0.0
        self._next = 0
        self._env = None
        self._started = 0.0

    def _on_training_start(self) -> None:
        import time

        from kartsim.envs import KartEnv

        self._started = time.perf_counter()
        self._next = (self.num_timesteps // self.every + 1) * self.every
        self._env = KartEnv(self.env_config)

    def _on_step(self) -> bool:
        if self.num_timesteps < self._next:
            return True
        self._next = (self.num_timesteps // self.every + 1) * self.every
        row = self.evaluate()
        return not (self.stop_when_laps is not None and row["eval_laps"] >= self.stop_when_laps)

    def evaluate(self) -> dict[str, Any]:
        import time

        from kartsim.rl.play import Driver, drive

        t0 = time.perf_counter()
        driver = Driver(model=self.model, env_config=self.env_config, path=Path("<training>"), payload=None)
        results = drive(driver, self._env, episodes=self.episodes, max_steps=self.max_steps, seed=0,
                        stop_after_laps=self.stop_when_laps)
        laps = [t for r in results for t in r.lap_times]
        buf = self.model.ep_info_buffer
        row = {
            "steps": int(self.num_timesteps),
            "wall_s": round(time.perf_counter() - self._started, 1),
            "train_ep_reward": round(float(np.mean([e["r"] for e in buf])), 1) if buf else None,
            "eval_laps": max(r.laps for r in results),
            "eval_best_lap": round(min(laps), 2) if laps else None,
            "eval_progress_m": round(max(r.progress_m for r in results), 1),
            "eval_return": round(float(np.mean([r.reward for r in results])), 2),
            "eval_mean_speed": round(float(np.mean([r.mean_speed for r in results])), 2),
            "eval_off_track": round(float(np.mean([r.off_track_share for r in results])), 3),
            "eval_s": round(time.perf_counter() - t0, 1),
        }
        if self.also_stochastic:
            sto = drive(driver, self._env, episodes=self.episodes, max_steps=self.max_steps, seed=0,
                        deterministic=False, stop_after_laps=self.stop_when_laps)
            row["stoch_laps"] = max(r.laps for r in sto)
            row["stoch_progress_m"] = round(max(r.progress_m for r in sto), 1)
            row["eval_s"] = round(time.perf_counter() - t0, 1)
        self.eval_seconds += time.perf_counter() - t0
        self.rows.append(row)
        self.logger.record("eval/laps", row["eval_laps"])
        self.logger.record("eval/progress_m", row["eval_progress_m"])
        if row["eval_best_lap"] is not None:
            self.logger.record("eval/best_lap_time", row["eval_best_lap"])
        if self.report is not None:
            self.report(row)
        return row

    def _on_training_end(self) -> None:
        if self._env is not None:
            self._env.close()
