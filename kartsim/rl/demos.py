"""Demonstrations: (observation, action) pairs to pre-train a policy by behaviour cloning, where they
come from, and the files that hold them.

Sources (``kartsim train --demos SOURCE``, ``kartsim demos record SOURCE``):

* ``ai:hard`` / ``ai:medium`` / ``ai:easy``: the AI driver (`kartsim.drivers.ai_driver`) drives karts in the
  run's own env; every step records the observation the policy would see (rays, or camera +
  telemetry with the run's camera settings) and the AI's action.
* a model zip: the model drives and its deterministic actions are the labels (distillation); it must
  see the same kind of observation as the run.
* a telemetry CSV (``kartsim drive``'s laps, a run's ``telemetry_log.csv``) or a folder of CSV / npz
  files: the observations are rebuilt by putting the kart in each recorded state on the track
  (`observe_states`); the label of a row is the steering and throttle recorded on the next row.
* a ``.npz`` written by ``kartsim demos record``.

File format (``kartsim demos record`` writes ``NAME.npz`` and ``NAME_telemetry.csv``)::

    actions        (N, 2) float32   [steering, throttle] commanded at each step, in [-1, 1]
    states         (N, S) float64   the kart when the observation was taken, columns STATE_FIELDS
    episode        (N,)   int32     the recorded drive of each step (one drive's steps are consecutive)
    obs            (N, 10) float32  rays observations, or for vision:
    obs_vision     (N, H, W, C) uint8 and obs_telemetry (N, 9) float32
    meta           ()     str       JSON: format, source, kind ("rays" | "vision"), env (EnvConfig dict),
                                    tracks, step_dt, laps, lap_times

``np.load(path)`` reads it without pickle. The telemetry CSV has the training schema
(`kartsim.telemetry.TELEMETRY_COLUMNS`), one drive after another (column ``episode``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from kartsim.errors import ConfigError

FORMAT_VERSION = 1
STATE_FIELDS = ("track_idx", "x", "y", "yaw", "vx", "vy", "yaw_rate", "steer", "throttle", "ax", "ay",
                "speed", "wetness")
AI_PREFIX = "ai:"
# Columns a telemetry CSV needs to rebuild observations and labels (the rest default to 0: slip_angle,
# longitudinal_g, lateral_g, time_s, progress).
CSV_REQUIRED = ("episode", "x", "y", "yaw", "speed", "yaw_rate", "steering", "throttle")
G = 9.81


class DemoError(ConfigError):
    """A demonstration source that cannot be used (one line naming the problem and the fix)."""


@dataclass
class DemoSet:
    """Demonstrations in the env's observation layout (images channels-last, as the env gives them)."""

    obs: np.ndarray | dict[str, np.ndarray]
    actions: np.ndarray
    states: np.ndarray
    episode: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def kind(self) -> str:
        return "vision" if isinstance(self.obs, dict) else "rays"

    def take(self, idx: np.ndarray) -> DemoSet:
        obs = {k: v[idx] for k, v in self.obs.items()} if isinstance(self.obs, dict) else self.obs[idx]
        return DemoSet(obs, self.actions[idx], self.states[idx], self.episode[idx], dict(self.meta))

    def obs_shapes(self) -> dict[str, tuple[int, ...]]:
        if isinstance(self.obs, dict):
            return {k: tuple(v.shape[1:]) for k, v in self.obs.items()}
        return {"obs": tuple(self.obs.shape[1:])}


def concat(sets: list[DemoSet]) -> DemoSet:
    """One DemoSet of several (same observation layout); episode ids are kept apart."""
    sets = [s for s in sets if len(s)]
    if not sets:
        raise DemoError("no demonstration steps to combine")
    shapes = {str(s.obs_shapes()) for s in sets}
    if len(shapes) > 1:
        raise DemoError(f"demonstrations with different observation shapes cannot be combined: {' vs '.join(sorted(shapes))}")
    episodes, offset = [], 0
    for s in sets:
        episodes.append(s.episode + offset)
        offset = int(episodes[-1].max()) + 1
    if isinstance(sets[0].obs, dict):
        obs: Any = {k: np.concatenate([s.obs[k] for s in sets]) for k in sets[0].obs}
    else:
        obs = np.concatenate([s.obs for s in sets])
    meta = dict(sets[0].meta)
    meta["lap_times"] = [t for s in sets for t in s.meta.get("lap_times", [])]
    meta["laps"] = len(meta["lap_times"])
    meta["parts"] = [s.meta.get("source") for s in sets]
    return DemoSet(obs, np.concatenate([s.actions for s in sets]), np.concatenate([s.states for s in sets]),
                   np.concatenate(episodes).astype(np.int32), meta)


# ----------------------------------------------------------------------------------- file format
def save_demos(demos: DemoSet, path: str | Path) -> Path:
    """Write `demos` as ``.npz`` (compressed; see the module doc for the arrays)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {"actions": demos.actions.astype(np.float32), "states": demos.states,
                                     "episode": demos.episode.astype(np.int32)}
    if isinstance(demos.obs, dict):
        arrays.update({f"obs_{k}": v for k, v in demos.obs.items()})
    else:
        arrays["obs"] = demos.obs
    meta = dict(demos.meta, format=FORMAT_VERSION, kind=demos.kind)
    np.savez_compressed(path, meta=np.array(json.dumps(meta, default=str)), **arrays)
    return path


def load_npz(path: str | Path) -> DemoSet:
    """Read a ``.npz`` written by `save_demos` (never unpickles); DemoError when it is not one."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise DemoError(f"{path} is not a readable demonstrations file ({exc.__class__.__name__}); "
                        "record one with `kartsim demos record`") from None
    missing = [k for k in ("actions", "states", "episode", "meta") if k not in arrays]
    if missing or not ("obs" in arrays or "obs_vision" in arrays):
        raise DemoError(f"{path} is not a kartsim demonstrations file (missing {', '.join(missing) or 'obs'}); "
                        "record one with `kartsim demos record`")
    meta = json.loads(str(arrays["meta"]))
    if "obs" in arrays:
        obs: Any = arrays["obs"]
    else:
        obs = {"vision": arrays["obs_vision"], "telemetry": arrays["obs_telemetry"]}
    demos = DemoSet(obs, arrays["actions"], arrays["states"], arrays["episode"], meta)
    if not (len(demos.actions) == len(demos.states) == len(demos.episode)):
        raise DemoError(f"{path}: its arrays have different lengths (a damaged file); record it again")
    return demos


# ------------------------------------------------------------------------------ replaying states
def _replay_env(env_cfg: Any, n: int):
    """A race of `n` karts and its observer, to observe karts put in given states."""
    from kartsim.envs.core import EnvCore

    core = EnvCore(env_cfg.replace(frame_stack=1), n)
    return core.race, core.observer


def observe_states(env_cfg: Any, states: np.ndarray, episode: np.ndarray, stride: int = 1,
                   seed: int = 0, chunk: int = 512) -> np.ndarray | dict[str, np.ndarray]:
    """The observations `env_cfg`'s env gives a kart in each of `states` (rows of STATE_FIELDS on the
    tracks of ``env_cfg.track``), with the env's sensor noise. Stacked frames (vision ``frame_stack``)
    are the frames `stride` rows apart in the same `episode` (the first frame repeated at its start,
    like the env after a reset)."""
    n = len(states)
    race, observer = _replay_env(env_cfg, min(chunk, max(n, 1)))
    rng = np.random.default_rng(seed)
    col = {name: i for i, name in enumerate(STATE_FIELDS)}
    frames: list[Any] = []
    for start in range(0, n, race.n):
        rows = states[start:start + race.n]
        m = len(rows)
        padded = np.concatenate([rows, np.repeat(rows[:1], race.n - m, axis=0)]) if m < race.n else rows
        st = race.state
        st.track_idx[:] = padded[:, col["track_idx"]].astype(np.int32)
        for name in STATE_FIELDS[1:]:
            getattr(st, name)[:] = padded[:, col[name]]
        race._update_frame()  # centerline index, lateral offset and track heading of the new poses
        race.steps[:] = rng.integers(0, 2**31, race.n)
        observer.noise_keys[:] = rng.integers(0, 2**63, race.n, dtype=np.int64).astype(np.uint64)
        out = observer.observe()
        frames.append({k: v[:m].copy() for k, v in out.items()} if isinstance(out, dict) else out[:m].copy())
    if not env_cfg.vision:
        return np.concatenate(frames) if frames else np.zeros((0,) + observer.space.shape, np.float32)
    vision = np.concatenate([f["vision"] for f in frames])
    telemetry = np.concatenate([f["telemetry"] for f in frames])
    return {"vision": stack_frames(vision, episode, int(env_cfg.frame_stack), stride), "telemetry": telemetry}


def stack_frames(frames: np.ndarray, episode: np.ndarray, k: int, stride: int) -> np.ndarray:
    """(N, H, W, C) frames -> (N, H, W, C*k): the frames ``stride*(k-1)``, ..., ``stride``, 0 rows back,
    oldest first, never reaching into the previous episode (its first frame repeats instead)."""
    if k == 1:
        return frames
    n = len(frames)
    idx = np.arange(n)
    starts = np.zeros(n, dtype=np.int64)
    new = np.flatnonzero(np.concatenate([[True], episode[1:] != episode[:-1]]))
    starts[new] = new
    starts = np.maximum.accumulate(starts)
    back = [np.maximum(idx - stride * (k - 1 - m), starts) for m in range(k)]
    return np.concatenate([frames[b] for b in back], axis=-1)


def kart_states(race: Any, idx: np.ndarray | slice = slice(None)) -> np.ndarray:
    """Rows of STATE_FIELDS for karts `idx` of `race`."""
    st = race.state
    return np.column_stack([np.asarray(getattr(st, name)[idx], dtype=np.float64) for name in STATE_FIELDS])


# ---------------------------------------------------------------------------------- telemetry CSVs
def _csv_states(df: Any, max_steer_rad: float) -> np.ndarray:
    """STATE_FIELDS rows (track index 0) from the columns of a telemetry CSV."""
    def column(name: str) -> np.ndarray:
        return df[name].to_numpy(dtype=np.float64) if name in df.columns else np.zeros(len(df))

    speed, slip = column("speed"), column("slip_angle")
    values = {"track_idx": np.zeros(len(df)), "x": column("x"), "y": column("y"), "yaw": column("yaw"),
              "vx": speed * np.cos(slip), "vy": speed * np.sin(slip), "yaw_rate": column("yaw_rate"),
              "steer": column("steering") * max_steer_rad, "throttle": column("throttle"),
              "ax": column("longitudinal_g") * G, "ay": column("lateral_g") * G, "speed": speed,
              "wetness": np.zeros(len(df))}
    return np.column_stack([values[name] for name in STATE_FIELDS])


def read_demo_csv(path: str | Path):
    """The CSV as a DataFrame with the columns demonstrations need; DemoError otherwise."""
    import pandas as pd

    path = Path(path)
    try:
        df = pd.read_csv(path)
    except Exception as exc:  # pandas raises several kinds
        raise DemoError(f"cannot read {path} as CSV ({exc.__class__.__name__}); give a telemetry CSV from "
                        "`kartsim drive` or a run's telemetry_log.csv") from None
    missing = [c for c in CSV_REQUIRED if c not in df.columns]
    if missing:
        raise DemoError(f"{path} lacks the column(s) {', '.join(missing)} that demonstrations need; give a "
                        "telemetry CSV from `kartsim drive` or a run's telemetry_log.csv")
    df = df.dropna(subset=list(CSV_REQUIRED))
    if "env" in df.columns:  # several karts in one log (--telemetry-envs): each kart's drives apart
        df = df.assign(env=df["env"].fillna(0)).sort_values("env", kind="stable").reset_index(drop=True)
        df["episode"] = df.groupby(["env", "episode"], sort=False).ngroup()
    if len(df) < 2:
        raise DemoError(f"{path} has fewer than 2 rows; drive a few laps with `kartsim drive` first")
    return df


def track_fit(track: Any, df: Any) -> float:
    """Share of the CSV's rows that lie on `track`'s drivable surface (and, when the CSV has a
    ``progress`` column, at the lap distance it says, within 5 m)."""
    from kartsim.sim.track import Surface

    x, y = df["x"].to_numpy(float), df["y"].to_numpy(float)
    ok = track.surface_at(x, y) != Surface.WALL
    if "progress" in df.columns:
        d = np.abs(track.progress(x, y) - df["progress"].to_numpy(float))
        ok &= np.minimum(d, track.length - d) < 5.0
    return float(ok.mean())


def demos_from_csv(path: str | Path, env_cfg: Any, seed: int = 0) -> DemoSet:
    """Demonstrations from a telemetry CSV driven on one of ``env_cfg``'s tracks: observation from the
    state on row t-1, label = (steering, throttle) on row t, within each episode."""
    from kartsim.envs.tracks import load_track_stack

    path = Path(path)
    df = read_demo_csv(path)
    tracks = load_track_stack(env_cfg.track, env_cfg.random_pool_size).tracks
    fits = [track_fit(t, df) for t in tracks]
    best = int(np.argmax(fits))
    if fits[best] < 0.9:
        names = ", ".join(t.name for t in tracks)
        raise DemoError(f"{path} was not driven on {names}: only {100 * fits[best]:.0f}% of its positions fit "
                        "the track; train on the track it was recorded on (--track-name) or record laps on this one")
    track = tracks[best]
    states = _csv_states(df, env_cfg.kart.max_steer_rad)
    episode = df["episode"].to_numpy(np.int64)
    same = episode[1:] == episode[:-1]
    obs_rows, label_rows = np.flatnonzero(same), np.flatnonzero(same) + 1
    if not len(obs_rows):
        raise DemoError(f"{path}: no episode has two consecutive rows; record at least a few seconds of driving")
    actions = np.clip(df[["steering", "throttle"]].to_numpy(np.float32)[label_rows], -1.0, 1.0)
    row_dt = _row_dt(df, episode)
    step_dt = env_cfg.kart.dt * env_cfg.race.action_repeat
    stride = max(1, int(round(step_dt / row_dt))) if row_dt else 1
    single = env_cfg.replace(track=str(track.path) if track.path else track.name)
    obs = observe_states(single, states[obs_rows], episode[obs_rows], stride=stride, seed=seed)
    meta = {"source": str(path), "tracks": [single.track], "row_dt": row_dt, "lap_times": _csv_lap_times(df),
            "env": single.to_dict()}
    meta["laps"] = len(meta["lap_times"])
    return DemoSet(obs, actions, states[obs_rows], episode[obs_rows].astype(np.int32), meta)


def _row_dt(df: Any, episode: np.ndarray) -> float | None:
    if "time_s" not in df.columns:
        return None
    dt = np.diff(df["time_s"].to_numpy(float))[episode[1:] == episode[:-1]]
    dt = dt[dt > 0]
    return float(np.median(dt)) if len(dt) else None


def _csv_lap_times(df: Any) -> list[float]:
    """Lap times of the CSV: the lap clock just before each increase of ``lap`` within an episode."""
    if "lap_time" not in df.columns or "lap" not in df.columns:
        return []
    lap, ep, clock = df["lap"].to_numpy(), df["episode"].to_numpy(), df["lap_time"].to_numpy(float)
    new = np.flatnonzero((lap[1:] > lap[:-1]) & (ep[1:] == ep[:-1])) + 1
    step = np.diff(df["time_s"].to_numpy(float)) if "time_s" in df.columns else np.zeros(len(df) - 1)
    return [round(float(clock[i - 1] + step[i - 1]), 3) for i in new]


# ------------------------------------------------------------------------------------- recording
class Teacher(Protocol):
    """Labels the karts of a race: ``act(obs, race) -> (N, 2)``; ``reset(idx)`` after karts restart;
    ``usable() -> (N,) bool``: whether the last labels are a function of the state (else not recorded)."""

    name: str

    def act(self, obs: Any, race: Any) -> np.ndarray: ...

    def reset(self, idx: np.ndarray) -> None: ...

    def usable(self) -> np.ndarray: ...


class AITeacher:
    """The AI driver at `level` (acts on the kart states, so it can label any state)."""

    def __init__(self, race: Any, level: str, seed: int | None = 0) -> None:
        from kartsim.drivers.ai_driver import AIDriver

        self.name = f"{AI_PREFIX}{level}"
        self.ai = AIDriver(race.stack, race.kart_cfg, level, n_karts=race.n, decision_dt=race.step_dt,
                           rng=np.random.default_rng(seed))
        self.world = np.arange(race.n)  # the env's karts do not meet: no traffic avoidance

    def act(self, obs: Any, race: Any) -> np.ndarray:
        return self.ai.act(race.state, world=self.world)

    def reset(self, idx: np.ndarray) -> None:
        self.ai.reset(idx)

    def usable(self) -> np.ndarray:
        # While reversing out of a stall the AI acts on what happened before (how long it crawled),
        # not on what the policy can observe: those labels are left out.
        return self.ai.recover_time <= 0.0


class PolicyTeacher:
    """An SB3 model (or policy) driving deterministically on the observations."""

    def __init__(self, model: Any, name: str) -> None:
        self.model, self.name = model, name

    def act(self, obs: Any, race: Any) -> np.ndarray:
        actions, _ = self.model.predict(obs, deterministic=True)
        return np.asarray(actions, dtype=np.float64)

    def reset(self, idx: np.ndarray) -> None:
        pass

    def usable(self) -> np.ndarray:
        return np.array([True])  # every label (for all karts): the model acts on the observation alone


class ActionNoise:
    """Persistent action noise: an AR(1) process per kart and action with `MEMORY_S` of memory (a
    driver's error lasts a few decisions, unlike white noise, which the kart's inertia averages out)."""

    MEMORY_S = 0.5

    def __init__(self, n: int, std: float, step_dt: float, seed: int | None) -> None:
        self.std, self.rho = float(std), float(np.exp(-step_dt / self.MEMORY_S))
        self.rng = np.random.default_rng(None if seed is None else seed + 7)
        self.state = np.zeros((n, 2))

    def __call__(self, actions: np.ndarray) -> np.ndarray:
        if self.std <= 0.0:
            return actions
        e = self.rng.standard_normal(self.state.shape)
        self.state = self.rho * self.state + np.sqrt(1.0 - self.rho ** 2) * e
        return np.clip(actions + self.std * self.state, -1.0, 1.0).astype(np.float32)

    def reset(self, idx: np.ndarray) -> None:
        self.state[idx] = 0.0


@dataclass
class _Recorder:
    """Step buffers of one recording."""

    obs: list[Any] = field(default_factory=list)
    actions: list[np.ndarray] = field(default_factory=list)
    states: list[np.ndarray] = field(default_factory=list)
    episode: list[np.ndarray] = field(default_factory=list)
    keep: list[np.ndarray] = field(default_factory=list)
    rows: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    lap_times: list[float] = field(default_factory=list)


def record(env_cfg: Any, teacher: str | Callable[[Any], Teacher], *, laps: int | None = None,
           steps: int | None = None, n_karts: int = 8, seed: int | None = 0, driver: Any = None,
           mix: float = 0.0, noise: float = 0.0, telemetry: bool = False) -> tuple[DemoSet, list[dict[str, Any]]]:
    """Drive `n_karts` karts of ``env_cfg``'s env and record every step's observation with the
    teacher's action, until `laps` laps are complete (all karts together) or `steps` steps are
    recorded. `teacher`: ``"ai:LEVEL"`` or a factory ``race -> Teacher``. `driver`: an SB3 model
    that drives instead of the teacher (DAgger: the teacher only labels the states it visits), except
    for a share `mix` of the steps (drawn per kart and step), where the teacher's action is applied.
    `noise`: the applied action is the label plus persistent Gaussian noise of this standard deviation
    (`ActionNoise`) while the clean label is recorded (DART: the demonstrations then show the teacher
    recovering from the kind of errors a clone makes, instead of one perfect line).
    Returns the DemoSet and, with `telemetry`, the telemetry CSV rows (one drive after another)."""
    from kartsim.envs.sb3 import KartVecEnv

    if laps is None and steps is None:
        raise DemoError("record needs a number of laps or of steps")
    venv = KartVecEnv(env_cfg, n_karts, seed=seed, telemetry_envs=list(range(n_karts)) if telemetry else [])
    race = venv.race
    tutor = make_teacher(teacher, race, seed) if isinstance(teacher, str) else teacher(race)
    rec, ep_id = _Recorder(), np.arange(n_karts, dtype=np.int32)
    mixer = np.random.default_rng(seed)
    perturb = ActionNoise(n_karts, noise, race.step_dt, seed)
    next_ep, n_steps, clock = n_karts, 0, np.zeros(n_karts, dtype=np.int64)
    cap = steps if steps is not None else 6000 * int(laps) + 4000 * n_karts  # a teacher that never laps
    obs = venv.reset()
    while n_steps < cap and (laps is None or len(rec.lap_times) < laps):
        labels = np.clip(tutor.act(obs, race), -1.0, 1.0).astype(np.float32)
        rec.obs.append({k: v.copy() for k, v in obs.items()} if isinstance(obs, dict) else obs.copy())
        rec.actions.append(labels)
        rec.states.append(kart_states(race))
        rec.episode.append(ep_id.copy())
        rec.keep.append(np.broadcast_to(np.asarray(tutor.usable(), dtype=bool), (n_karts,)).copy())
        act = labels
        if driver is not None:
            act = np.asarray(driver.predict(obs, deterministic=True)[0], dtype=np.float32)
            keep = mixer.random(n_karts) < mix
            act[keep] = labels[keep]
        act = perturb(act)
        obs, rewards, dones, infos = venv.step(act)
        n_steps += n_karts
        clock += 1
        for i, info in enumerate(infos):
            if info.get("new_lap_time") is not None:
                rec.lap_times.append(round(float(info["new_lap_time"]), 3))
            if telemetry:
                _telemetry_row(rec, info, int(ep_id[i]), int(clock[i]), float(rewards[i]))
        done = np.flatnonzero(dones)
        if len(done):
            tutor.reset(done)
            perturb.reset(done)
            ep_id[done] = np.arange(next_ep, next_ep + len(done))
            next_ep += len(done)
            clock[done] = 0
    venv.close()
    demos = _stack_recording(rec, env_cfg, tutor.name, race.step_dt)
    rows = [row for e in sorted(rec.rows) for row in rec.rows[e]]
    return demos, rows


def _telemetry_row(rec: _Recorder, info: dict[str, Any], episode: int, step: int, reward: float) -> None:
    from kartsim.telemetry import telemetry_row

    rec.rows.setdefault(episode, []).append(
        telemetry_row(info, step=step, episode=episode, time_s=float(info["telemetry"]["time_s"]), reward=reward))


def _stack_recording(rec: _Recorder, env_cfg: Any, source: str, step_dt: float) -> DemoSet:
    """Time-major step buffers -> a DemoSet ordered kart-episode by kart-episode (each drive contiguous)."""
    episode = np.stack(rec.episode).reshape(-1, order="F")
    keep = np.stack(rec.keep).reshape(-1, order="F")
    order = np.argsort(episode, kind="stable")
    order = order[keep[order]]
    # (T, N, ...) -> (N, T, ...) -> (N*T, ...): kart by kart, then the stable sort keeps time order
    def flat(parts: list[np.ndarray]) -> np.ndarray:
        a = np.stack(parts)
        return a.swapaxes(0, 1).reshape((-1,) + a.shape[2:])[order]

    if isinstance(rec.obs[0], dict):
        obs: Any = {k: flat([o[k] for o in rec.obs]) for k in rec.obs[0]}
    else:
        obs = flat(rec.obs)
    tracks = env_cfg.track if isinstance(env_cfg.track, list) else [env_cfg.track]
    meta = {"source": source, "tracks": tracks, "env": env_cfg.to_dict(), "step_dt": step_dt,
            "lap_times": rec.lap_times, "laps": len(rec.lap_times)}
    return DemoSet(obs, flat(rec.actions), flat(rec.states), episode[order], meta)


def check_ai_source(source: str) -> str:
    """The AI level of ``ai:LEVEL``; DemoError for an unknown level."""
    from kartsim.drivers.ai_driver import AI_LEVELS

    level = source[len(AI_PREFIX):]
    if not source.startswith(AI_PREFIX) or level not in AI_LEVELS:
        raise DemoError(f"unknown demonstration teacher {source!r}; use {', '.join(AI_PREFIX + k for k in AI_LEVELS)}")
    return level


def make_teacher(source: str, race: Any, seed: int | None = 0) -> Teacher:
    """``ai:LEVEL`` -> an AITeacher on `race`."""
    return AITeacher(race, check_ai_source(source), seed)


# ---------------------------------------------------------------------------------- loading sources
def is_ai_source(source: str) -> bool:
    return source.startswith(AI_PREFIX)


def model_kind(path: str | Path) -> str:
    """``"vision"`` or ``"rays"``: the observation kind a model zip was trained on (its config)."""
    from kartsim.rl.modelio import read_kartsim_config

    payload = read_kartsim_config(path)
    if payload is None:
        raise DemoError(f"{path} has no kartsim_config.json (not saved by kartsim train), so its observations are unknown")
    return "vision" if payload["env"].get("vision") else "rays"


def load_teacher_model(path: str | Path, env_cfg: Any, device: str = "cpu") -> Any:
    """The SB3 model of a model zip, checked to see the observations of ``env_cfg``'s env."""
    from kartsim.rl.play import load_driver

    kind, want = model_kind(path), "vision" if env_cfg.vision else "rays"
    if kind != want:
        raise DemoError(f"{path} is a {kind} model but this run trains a {want} policy; distil a {want} model "
                        f"(or train with{'' if kind == 'vision' else 'out'} --vision)")
    return load_driver(path, track=env_cfg.track, evaluation=False, device=device,
                       env_options=_layout_options(env_cfg)).model


def _layout_options(env_cfg: Any) -> dict[str, Any]:
    return {k: getattr(env_cfg, k) for k in ("camera", "image_size", "grayscale", "frame_stack")} if env_cfg.vision else {}


def files_of(source: Path) -> list[Path]:
    """The demonstration files of a folder: every ``.npz``, and every ``.csv`` that is not an npz's
    companion (``NAME_telemetry.csv`` next to ``NAME.npz``)."""
    npz = sorted(source.glob("*.npz"))
    companions = {p.with_name(p.stem + "_telemetry.csv") for p in npz}
    csvs = [p for p in sorted(source.glob("*.csv")) if p not in companions]
    return npz + csvs


def demos_from_npz(path: Path, env_cfg: Any, seed: int = 0) -> DemoSet:
    """A recorded npz in the layout of ``env_cfg``'s observations: as stored when they match,
    else rebuilt from its kart states (e.g. rays demonstrations for a vision run)."""
    demos = load_npz(path)
    want = _expected_shapes(env_cfg)
    if demos.obs_shapes() == want:
        return demos
    replay_cfg = env_cfg.replace(track=demos.meta.get("tracks") or env_cfg.track)
    obs = observe_states(replay_cfg, demos.states, demos.episode, stride=1, seed=seed)
    demos.obs = obs
    demos.meta["rebuilt"] = f"observations rebuilt from the kart states for {want}"
    return demos


def _expected_shapes(env_cfg: Any) -> dict[str, tuple[int, ...]]:
    if not env_cfg.vision:
        return {"obs": (10,)}
    c = (1 if env_cfg.grayscale else 3) * int(env_cfg.frame_stack)
    from kartsim.envs.observations import TELEMETRY_FIELDS

    return {"vision": (int(env_cfg.image_size), int(env_cfg.image_size), c), "telemetry": (len(TELEMETRY_FIELDS),)}


def open_source(source: str, env_cfg: Any, *, laps: int = 20, n_karts: int = 8, seed: int | None = 0,
                device: str = "cpu", noise: float = 0.0) -> tuple[DemoSet, str | Callable[[Any], Teacher] | None]:
    """The demonstrations of `source` (see the module doc) in the observation layout of ``env_cfg``,
    and the teacher that can label more states for DAgger (``"ai:LEVEL"``, a factory ``race ->
    Teacher`` for a model, or None for recorded driving such as human laps). `noise`: `record`'s,
    for a teacher that drives now (``ai:``, a model)."""
    if is_ai_source(source):
        check_ai_source(source)
        return record(env_cfg, source, laps=laps, n_karts=n_karts, seed=seed, noise=noise)[0], source
    path = check_source_path(source)
    s = 0 if seed is None else int(seed)
    if path.suffix.lower() == ".zip":
        model = load_teacher_model(path, env_cfg, device)

        def factory(race: Any) -> Teacher:
            return PolicyTeacher(model, str(path))

        return record(env_cfg, factory, laps=laps, n_karts=n_karts, seed=seed, noise=noise)[0], factory
    files = files_of(path) if path.is_dir() else [path]
    demos = concat([_load_file(f, env_cfg, s) for f in files])
    sources = {str(p) for p in demos.meta.get("parts") or [demos.meta.get("source")]}
    teacher = next(iter(sources)) if len(sources) == 1 and is_ai_source(next(iter(sources))) else None
    return demos, teacher


def check_source_path(source: str) -> Path:
    """`source` as a path to demonstrations that exist (a file of a known kind, or a folder that holds
    some); DemoError naming the problem otherwise."""
    path = Path(source)
    if not path.exists():
        raise DemoError(f"demonstrations not found: {source}; give ai:hard|medium|easy, a telemetry CSV, "
                        "a folder of them, a demos .npz or a model .zip")
    if path.is_dir():
        if not files_of(path):
            raise DemoError(f"{path} holds no demonstrations (.npz or telemetry .csv); record some with "
                            f"`kartsim demos record ai:hard --out {path}` or `kartsim drive`")
    elif path.suffix.lower() not in (".csv", ".npz", ".zip"):
        raise DemoError(f"{path}: demonstrations must be a telemetry .csv, a demos .npz, a model .zip or a folder")
    return path


def _load_file(path: Path, env_cfg: Any, seed: int) -> DemoSet:
    if path.suffix.lower() == ".csv":
        return demos_from_csv(path, env_cfg, seed=seed)
    return demos_from_npz(path, env_cfg, seed=seed)


# ---------------------------------------------------------------------------------------- summary
def summary(demos: DemoSet) -> dict[str, Any]:
    """Laps, steps, drives and lap times of a DemoSet (what ``kartsim demos info`` prints)."""
    times = [float(t) for t in demos.meta.get("lap_times", [])]
    return {
        "source": demos.meta.get("source"),
        "kind": demos.kind,
        "observations": demos.obs_shapes(),
        "tracks": demos.meta.get("tracks"),
        "steps": len(demos),
        "drives": len(np.unique(demos.episode)),
        "laps": len(times),
        "best_lap_s": min(times) if times else None,
        "mean_lap_s": round(sum(times) / len(times), 3) if times else None,
        "lap_times": times,
        "throttle_mean": round(float(demos.actions[:, 1].mean()), 3) if len(demos) else None,
        "steering_abs_mean": round(float(np.abs(demos.actions[:, 0]).mean()), 3) if len(demos) else None,
    }


def fmt_lap(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "--"
    return f"{seconds:.2f} s"
