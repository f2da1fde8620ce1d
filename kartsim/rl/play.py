"""Drive a trained model: in a window, headless, or recording a GIF / MP4.

`load_driver` opens a model zip, rebuilds the env it was trained on from the ``kartsim_config.json``
inside (optionally on another track), checks that the model fits that env, and returns both.
`run_episodes` runs episodes and reports laps through callbacks; `play` is ``kartsim play`` /
``play_ppo.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from kartsim.errors import ConfigError, ModelFileError


@dataclass
class Driver:
    """A loaded model and the env config it drives."""

    model: Any
    env_config: Any
    path: Path
    payload: dict[str, Any] | None

    @property
    def vision(self) -> bool:
        return bool(self.env_config.vision)

    @property
    def label(self) -> str:
        return self.path.name


def _infer_vision(model_space: Any) -> bool:
    import gymnasium as gym

    return isinstance(model_space, gym.spaces.Dict)


def _vision_layout(model_space: Any) -> dict[str, Any]:
    """Best guess of camera settings from a plain SB3 vision model's image space."""
    from stable_baselines3.common.preprocessing import is_image_space_channels_first

    image = model_space["vision"]
    if is_image_space_channels_first(image):
        channels, size = image.shape[0], image.shape[1]
    else:
        channels, size = image.shape[2], image.shape[0]
    if channels % 3 == 0:
        return {"image_size": int(size), "grayscale": False, "frame_stack": channels // 3}
    return {"image_size": int(size), "grayscale": True, "frame_stack": int(channels)}


def track_value(tracks: list[str] | str | None) -> Any:
    if tracks is None:
        return None
    if isinstance(tracks, str):
        return tracks
    return tracks[0] if len(tracks) == 1 else list(tracks)


def load_driver(
    model_path: str | Path,
    *,
    track: list[str] | str | None = None,
    vision: bool | None = None,
    evaluation: bool = True,
    env_options: dict[str, Any] | None = None,
    device: str = "cpu",
    trust_model: bool = False,
) -> Driver:
    """Load a model zip and the EnvConfig it drives.

    :param track: another track (or tracks) than the one it was trained on.
    :param vision: only for plain SB3 models without ``kartsim_config.json``: which env they drive
        (None: inferred from the model's observation space).
    :param evaluation: start on the start line (``random_start=False``) instead of a random place.
    :param trust_model: also load models not saved by kartsim, which unpickles code from the file
        (see `kartsim.rl.modelio`).
    """
    from kartsim.envs import EnvConfig
    from kartsim.rl.modelio import describe_space, load_ppo, read_kartsim_config, spaces_match

    path = Path(model_path)
    payload = read_kartsim_config(path)  # checks: missing, not a zip, corrupted, not an SB3 model
    model = load_ppo(path, device=device, trust=trust_model)
    if payload is not None:
        env_dict = dict(payload["env"])
        if vision is not None and bool(vision) != bool(env_dict.get("vision")):
            kind = "vision" if env_dict.get("vision") else "rays"
            raise ConfigError(f"{path} is a {kind} model (says its kartsim_config.json); drop --vision/--rays")
    else:
        is_vision = _infer_vision(model.observation_space) if vision is None else bool(vision)
        env_dict = EnvConfig().to_dict()
        env_dict["vision"] = is_vision
        if is_vision and _infer_vision(model.observation_space):
            env_dict.update({k: v for k, v in _vision_layout(model.observation_space).items() if k in env_dict})
    if track is not None:
        env_dict["track"] = track_value(track)
    from kartsim.envs.config import apply_env_options

    if evaluation:
        apply_env_options(env_dict, {"random_start": False})
    apply_env_options(env_dict, dict(env_options or {}))
    env_cfg = EnvConfig.from_dict(env_dict)

    # Does the model fit the env? (Build the spaces without simulating anything heavy twice.)
    from kartsim.envs import KartEnv

    probe = KartEnv(env_cfg, render_mode=None)
    try:
        env_space = probe.observation_space
        action_space = probe.action_space
    finally:
        probe.close()
    if not spaces_match(model.observation_space, env_space):
        hint = "" if payload is not None else " (pass --vision or --rays to say which env it drives)"
        raise ModelFileError(
            f"{path} expects observations {describe_space(model.observation_space)} but this env gives "
            f"{describe_space(env_space)}{hint}"
        )
    if tuple(model.action_space.shape) != tuple(action_space.shape):
        raise ModelFileError(
            f"{path} outputs actions of shape {tuple(model.action_space.shape)}, this env takes {tuple(action_space.shape)}"
        )
    return Driver(model=model, env_config=env_cfg, path=path, payload=payload)


# Why an episode ended, as `play` prints it and `eval` counts it (info["termination"] names).
END_REASONS = {
    "time_limit": "time limit",
    "wrong_way": "wrong way",
    "stuck": "stuck (no progress)",
    "off_track": "off track too long",
    "damage": "damage",
    "finished": "finished the race",
    "stopped": "stopped (--max-steps / --laps)",
}


def end_text(reason: str) -> str:
    """The words for an episode-end reason (`END_REASONS`); unknown ones as they are."""
    return END_REASONS.get(reason, reason.replace("_", " "))


@dataclass
class EpisodeResult:
    end: str = ""
    """Why the episode ended: a key of `END_REASONS` (``info["termination"]``, or ``stopped``)."""
    laps: int = 0
    lap_times: list[float] = field(default_factory=list)
    steps: int = 0
    mean_speed: float = 0.0
    off_track_share: float = 0.0
    progress_m: float = 0.0
    reward: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def best_lap(self) -> float | None:
        return min(self.lap_times) if self.lap_times else None


def run_episodes(
    driver: Driver,
    env: Any,
    *,
    episodes: int = 1,
    deterministic: bool = True,
    max_steps: int | None = None,
    seed: int | None = 0,
    on_step: Callable[[Any, dict[str, Any], float], None] | None = None,
    on_lap: Callable[[int, int, float], None] | None = None,
    on_episode: Callable[[int, EpisodeResult], None] | None = None,
    stop_after_laps: int | None = None,
) -> list[EpisodeResult]:
    """Run `episodes` episodes of `driver` in `env` (a KartEnv). Callbacks: ``on_step(env, info,
    reward)``, ``on_lap(episode, lap_number, lap_time_s)``, ``on_episode(episode, result)``.
    `max_steps` ends an episode early (None: the env's own limit), so does completing
    `stop_after_laps` laps."""
    results: list[EpisodeResult] = []
    for episode in range(episodes):
        obs, info = env.reset(seed=None if seed is None else seed + episode)
        result = EpisodeResult()
        speeds: list[float] = []
        off: list[bool] = []
        while True:
            action, _ = driver.model.predict(obs, deterministic=deterministic)
            obs, reward, terminated, truncated, info = env.step(action)
            result.steps += 1
            result.reward += float(reward)
            tel = info.get("telemetry") or {}
            speeds.append(float(tel.get("speed", 0.0)))
            off.append(bool(tel.get("off_track", False)))
            if on_step is not None:
                on_step(env, info, float(reward))
            lap_time = info.get("new_lap_time")
            if lap_time is not None:
                result.lap_times.append(float(lap_time))
                if on_lap is not None:
                    on_lap(episode, len(result.lap_times), float(lap_time))
            if terminated or truncated or (max_steps is not None and result.steps >= max_steps):
                break
            if stop_after_laps is not None and len(result.lap_times) >= stop_after_laps:
                break
        stats = info.get("episode_stats") or {}
        result.stats = dict(stats)
        result.end = str(info.get("termination") or ("time_limit" if truncated else "stopped"))
        result.laps = int(stats.get("laps", info.get("lap", len(result.lap_times))))
        result.mean_speed = float(stats.get("mean_speed", np.mean(speeds) if speeds else 0.0))
        result.off_track_share = float(stats.get("off_track_share", np.mean(off) if off else 0.0))
        if "progress_m" in stats:
            result.progress_m = float(stats["progress_m"])
        else:  # stopped early (max_steps): the race's furthest progress so far, as at an episode's end
            result.progress_m = _progress_so_far(env, info, result.laps)
        results.append(result)
        if on_episode is not None:
            on_episode(episode, result)
    return results


def _progress_so_far(env: Any, info: dict[str, Any], laps: int) -> float:
    """Metres of the furthest progress of the env's (first) kart this episode; for an env without a
    race, laps driven plus the position on the lap (which reads almost a lap for a kart that backed
    over the start line)."""
    try:
        return float(env.unwrapped.race.episode_stats(0)["progress_m"])
    except (AttributeError, IndexError, KeyError, TypeError):
        return float(info.get("progress", 0.0)) + laps * _lap_length(env)


def _lap_length(env: Any) -> float:
    """Length of the lap of the env's (first) kart, 0 when the env does not say."""
    try:
        race = env.unwrapped.race
        return float(race.stack.tracks[int(race.state.track_idx[0])].length)
    except (AttributeError, IndexError, TypeError):
        return 0.0


def default_video(folder: Path, stem: str = "lap") -> Path:
    """``folder/stem.mp4`` where MP4s can be written with H.264 (imageio-ffmpeg installed: a lap is
    well under 1 MB), else ``.gif``."""
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        return folder / f"{stem}.gif"
    return folder / f"{stem}.mp4"


GIF_COLOURS = 64  # one palette, from the first frame, for every frame: small files, no flicker


class Recorder:
    """Records ``env.render()`` frames (rgb_array: the track map with the kart, its trail and, for
    vision envs, the camera inset) at `fps` frames per second of simulated time, so the video plays in
    real time at the rate asked for. MP4: H.264 through imageio-ffmpeg (OpenCV's mp4v without it),
    every frame written. GIF (Pillow): one shared palette, and a frame that repeats (``fps`` above
    the env's 10 decisions a second) is one image shown longer; past `max_gif_frames` neighbouring
    images are merged (GIFs live in memory)."""

    def __init__(self, path: Path, *, fps: float = 15.0, max_width: int = 640, max_gif_frames: int = 1200) -> None:
        if not fps > 0:
            raise ConfigError(f"--fps must be > 0, not {fps}")
        self.path = path
        self.gif = path.suffix.lower() == ".gif"
        self.fps = float(fps)
        self.max_width = max_width
        self.max_gif_frames = max_gif_frames
        self.frames: list[Any] = []      # GIF images
        self.durations: list[int] = []   # GIF: milliseconds each image shows
        self.written = 0                 # video frames so far (at `fps`)
        self._sim_t = 0.0                # simulated seconds recorded
        self._video = None
        self._palette = None

    def _compose(self, env: Any) -> np.ndarray:
        frame = env.render()
        if frame is None:
            raise ConfigError("the env returned no frame to record (render_mode must be rgb_array)")
        frame = np.ascontiguousarray(frame[..., :3], dtype=np.uint8)
        import cv2

        h, w = frame.shape[:2]
        if w > self.max_width:
            scale = self.max_width / w
            frame = cv2.resize(frame, (self.max_width, int(round(h * scale))), interpolation=cv2.INTER_AREA)
        return frame

    def capture(self, env: Any, info: dict[str, Any] | None = None) -> None:
        """After an env step: add the video frames that fall due during it (0, 1 or more)."""
        dt = float(((info or {}).get("telemetry") or {}).get("step_time_s", 0.0) or 0.0)
        if dt <= 0:
            dt = 1.0 / float(getattr(env, "metadata", {}).get("render_fps", 30) or 30)
        self._sim_t += dt
        due = int(math.floor(self._sim_t * self.fps + 1e-9)) - self.written
        if due <= 0:
            return
        frame = self._compose(env)
        self.written += due
        if self.gif:
            self._add_gif(frame, due)
        else:
            for _ in range(due):
                self._write_video(frame)

    def _add_gif(self, frame: np.ndarray, repeats: int) -> None:
        from PIL import Image

        img = Image.fromarray(frame)
        if self._palette is None:
            self._palette = img.quantize(colors=GIF_COLOURS, method=Image.Quantize.MEDIANCUT)
        self.frames.append(img.quantize(palette=self._palette, dither=Image.Dither.NONE))
        self.durations.append(repeats)  # in video frames; milliseconds at close()
        if len(self.frames) > self.max_gif_frames:  # merge neighbours: half the images, same duration
            self.frames = self.frames[::2]
            self.durations = [sum(self.durations[i:i + 2]) for i in range(0, len(self.durations), 2)]

    def _write_video(self, frame: np.ndarray) -> None:
        h, w = frame.shape[:2]
        if self._video is None:
            self._size = (w - w % 2, h - h % 2)
            self._video = self._open_video()
        frame = np.ascontiguousarray(frame[: self._size[1], : self._size[0]])
        if isinstance(self._video, tuple):  # imageio-ffmpeg's generator
            self._video[0].send(frame)
        else:
            import cv2

            self._video.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))

    def _open_video(self) -> Any:
        try:
            import imageio_ffmpeg
        except ImportError:
            import cv2

            video = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self._size)
            if not video.isOpened():
                raise ConfigError(f"cannot write {self.path}: OpenCV has no mp4v encoder here; record a .gif instead")
            return video
        writer = imageio_ffmpeg.write_frames(str(self.path), self._size, fps=self.fps, codec="libx264",
                                             pix_fmt_out="yuv420p", quality=6, macro_block_size=2,
                                             ffmpeg_log_level="error")
        writer.send(None)  # start ffmpeg
        return (writer,)

    def close(self) -> int:
        """Write the file; returns the number of video frames (at `fps`)."""
        if self._video is not None:
            if isinstance(self._video, tuple):
                self._video[0].close()
            else:
                self._video.release()
            self._video = None
        elif self.frames:
            ms = [int(round(1000.0 * n / self.fps)) for n in self.durations]
            self.frames[0].save(self.path, save_all=True, append_images=self.frames[1:], duration=ms, loop=0,
                                optimize=False)
        return self.written


def check_record_path(record: str | Path | None, force: bool) -> Path | None:
    if record is None:
        return None
    path = Path(record)
    if path.suffix.lower() not in (".gif", ".mp4"):
        raise ConfigError(f"--record {path}: give a .gif or .mp4 file name")
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists; pass --force to overwrite it")
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    return path


def fmt_time(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.3f} s"


def play(
    model_path: str | Path,
    *,
    episodes: int = 1,
    track: list[str] | None = None,
    deterministic: bool = True,
    max_steps: int | None = None,
    record: str | Path | None = None,
    force: bool = False,
    vision: bool | None = None,
    record_fps: float = 15.0,
    window: bool | None = None,
    stop_after_laps: int | None = None,
    echo: Callable[[str], None] = print,
    trust_model: bool = False,
) -> list[EpisodeResult]:
    """``kartsim play``: drive `episodes` episodes, printing each lap time as it happens."""
    if episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, not {episodes}")
    if max_steps is not None and max_steps < 1:
        raise ConfigError(f"--max-steps must be >= 1, not {max_steps}")
    record_path = check_record_path(record, force)
    driver = load_driver(model_path, track=track, vision=vision, trust_model=trust_model)
    env = _play_env(driver, record_path, window)
    kind = "vision" if driver.vision else "rays"
    echo(f"Driving {driver.path} ({kind} model) on {driver.env_config.track}, {episodes} episode(s), "
         f"{'deterministic' if deterministic else 'stochastic'} actions")
    if env.render_mode is None:
        echo("No display found: driving without a window (use --record lap.gif to save a video)")

    recorder = None
    if record_path is not None:  # GIFs are held in memory and big: a smaller picture than MP4s
        width = 400 if record_path.suffix.lower() == ".gif" else 640
        recorder = Recorder(record_path, fps=record_fps, max_width=width)
    from kartsim.telemetry.live import session_feed

    live = session_feed("play", driver.path.stem)  # runs/_live/*.json for `kartsim dashboard` (or None)

    def on_step(env_: Any, info: dict[str, Any], reward: float) -> None:
        if recorder is not None:
            recorder.capture(env_, info)
        if live is not None and live.due():
            live.publish_race(env_.race)

    def on_lap(episode: int, lap: int, seconds: float) -> None:
        echo(f"  Lap {lap}: {seconds:.3f} s")

    def on_episode(episode: int, result: EpisodeResult) -> None:
        echo(
            f"Episode {episode + 1}: {result.laps} lap(s), best {fmt_time(result.best_lap)}, "
            f"mean speed {result.mean_speed:.1f} m/s, off track {100 * result.off_track_share:.0f}%, "
            f"{result.steps} steps, ended: {end_text(result.end)}"
        )

    results: list[EpisodeResult] = []
    try:
        results = run_episodes(driver, env, episodes=episodes, deterministic=deterministic, max_steps=max_steps,
                        on_step=on_step, on_lap=on_lap, on_episode=on_episode, stop_after_laps=stop_after_laps)
    except KeyboardInterrupt:
        echo("Stopped.")
    finally:
        env.close()
        if live is not None:
            live.close()
        if recorder is not None:
            n = recorder.close()
            if n:
                echo(f"Recorded {n} frames ({n / recorder.fps:.1f} s at {recorder.fps:g} fps) to {record_path}")
    _echo_summary(results, echo)
    return results


def _play_env(driver: Driver, record_path: Path | None, window: bool | None) -> Any:
    """The KartEnv `play` drives: a window when there is a display and nothing is recorded (or
    `window` says so), frames in memory when recording, neither otherwise."""
    from kartsim.envs import KartEnv
    from kartsim.envs.render import has_display

    if window is None:
        window = record_path is None and has_display()
    render_mode = "human" if window else ("rgb_array" if record_path is not None else None)
    return KartEnv(driver.env_config, render_mode=render_mode)


def _echo_summary(results: list[EpisodeResult], echo: Callable[[str], None]) -> None:
    laps = [t for r in results for t in r.lap_times]
    if results:
        if laps:
            echo(f"Best lap: {min(laps):.3f} s ({len(laps)} lap(s) completed in {len(results)} episode(s))")
        else:
            echo(f"No lap completed in {len(results)} episode(s)")
