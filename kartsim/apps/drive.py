"""Drive a kart yourself: ``kartsim drive --track-name circuit.png [--opponents 3 --ai-level medium]``.

A pygame window shows the chase camera and the track map with a HUD (speed, lap, lap time, last and
best lap, race position and gap). Keyboard: arrows or WASD (up/W throttle, down/S brake and reverse,
left/A and right/D steer), R restarts, Esc/Q quits. Inputs are smoothed like a real driver's hands and
feet (the steering and pedals move at a limited rate). The physics runs at 50 Hz; AI opponents and a
ghost model decide 10 times a second, like the envs.

Every step of your kart goes to a telemetry CSV with the training schema (:mod:`kartsim.telemetry`),
so ``kartsim compare my_laps.csv ai:hard --track circuit.png`` compares you with the AI.

Events come from an injectable source: :class:`PygameEvents` (the keyboard) or
:class:`ScriptedEvents` (timed key presses, for tests and demos: run headless with
``SDL_VIDEODRIVER=dummy``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Protocol

import numpy as np

from kartsim.errors import ConfigError

__all__ = ["KeyboardControl", "PygameEvents", "ScriptedEvents", "DriveResult", "drive_yourself", "KEYS"]

# key names (pygame.key.name) -> control
KEYS = {
    "up": "throttle", "w": "throttle",
    "down": "brake", "s": "brake",
    "left": "left", "a": "left",
    "right": "right", "d": "right",
    "escape": "quit", "q": "quit",
    "r": "restart",
}
AI_DECISION_STEPS = 5  # opponents and ghosts act every 5 physics steps (0.1 s)


class KeyboardControl:
    """Smoothed steering and pedals from the set of held controls.

    Steering moves towards full lock at ``steer_rate`` per second while a direction is held and
    returns to centre at ``centre_rate``; the throttle rises at ``throttle_rate``, the brake at
    ``brake_rate``, both release at ``release_rate``.
    """

    def __init__(self, steer_rate: float = 3.0, centre_rate: float = 5.0, throttle_rate: float = 4.0,
                 brake_rate: float = 8.0, release_rate: float = 6.0) -> None:
        self.steer_rate = steer_rate
        self.centre_rate = centre_rate
        self.throttle_rate = throttle_rate
        self.brake_rate = brake_rate
        self.release_rate = release_rate
        self.held: set[str] = set()
        self.steer = 0.0
        self.throttle = 0.0

    def reset(self) -> None:
        self.held.clear()
        self.steer = 0.0
        self.throttle = 0.0

    def press(self, control: str) -> None:
        self.held.add(control)

    def release(self, control: str) -> None:
        self.held.discard(control)

    def update(self, dt: float) -> tuple[float, float]:
        """Advance the smoothing by ``dt`` seconds; returns (steering, throttle) in [-1, 1]."""
        want = ("right" in self.held) - ("left" in self.held)
        if want != 0:
            rate = self.steer_rate if np.sign(want) == np.sign(self.steer) or self.steer == 0 else self.centre_rate + self.steer_rate
            self.steer = float(np.clip(self.steer + np.sign(want - self.steer) * rate * dt, -1.0, 1.0))
            if (want > 0 and self.steer > want) or (want < 0 and self.steer < want):
                self.steer = float(want)
        else:
            step = self.centre_rate * dt
            self.steer = 0.0 if abs(self.steer) <= step else self.steer - np.sign(self.steer) * step
        pedal = ("throttle" in self.held) - ("brake" in self.held)
        if pedal > 0:
            rate = self.throttle_rate if self.throttle >= 0 else self.release_rate + self.throttle_rate
            self.throttle = min(1.0, self.throttle + rate * dt)
        elif pedal < 0:
            rate = self.brake_rate if self.throttle <= 0 else self.release_rate + self.brake_rate
            self.throttle = max(-1.0, self.throttle - rate * dt)
        else:
            step = self.release_rate * dt
            self.throttle = 0.0 if abs(self.throttle) <= step else self.throttle - np.sign(self.throttle) * step
        return self.steer, self.throttle


class EventSource(Protocol):
    """Where key events come from. An optional ``attach(race)`` is called once with the race (so that
    a closed-loop source, a bot, can look at the karts)."""

    def poll(self, sim_time: float) -> list[Any]:
        """pygame events that happened up to ``sim_time`` (simulated seconds since the start)."""


class PygameEvents:
    """The real keyboard and window: ``pygame.event.get()``."""

    def poll(self, sim_time: float) -> list[Any]:
        import pygame

        return pygame.event.get()


class ScriptedEvents:
    """Timed key events: ``[(t_seconds, "down" | "up", "key name"), ...]`` or ``(t, "quit")``.

    Key names are pygame's (``"up"``, ``"left"``, ``"w"``, ``"escape"`` ...). The events are real
    ``pygame.event.Event`` objects, so the driving loop handles them exactly like the keyboard's.
    """

    def __init__(self, script: Iterable[tuple]) -> None:
        from kartsim.envs.render import init_display

        pygame = init_display()  # key codes need it; headless (SDL_VIDEODRIVER=dummy) nothing is shown
        self.pending: list[tuple[float, Any]] = []
        for item in script:
            t, kind = float(item[0]), item[1]
            if kind == "quit":
                ev = pygame.event.Event(pygame.QUIT)
            elif kind in ("down", "up"):
                key = pygame.key.key_code(item[2])
                ev = pygame.event.Event(pygame.KEYDOWN if kind == "down" else pygame.KEYUP, key=key)
            else:
                raise ConfigError(f"scripted event {item!r}: the kind must be 'down', 'up' or 'quit'")
            self.pending.append((t, ev))
        self.pending.sort(key=lambda p: p[0])

    def poll(self, sim_time: float) -> list[Any]:
        import pygame

        out = []
        while self.pending and self.pending[0][0] <= sim_time + 1e-9:
            out.append(self.pending.pop(0)[1])
        pygame.event.pump()  # keep the (dummy) window responsive
        return out


@dataclass
class DriveResult:
    laps: int = 0
    lap_times: list[float] = field(default_factory=list)
    best_lap: float | None = None
    position: int = 1
    steps: int = 0
    telemetry: Path | None = None
    standings: list[dict] = field(default_factory=list)
    quit: bool = False


def _hud_lines(race, i: int, target_laps: int | None) -> list[str]:
    st = race.state
    lap_no = int(race.laps[i]) + 1
    laps = f"lap {lap_no}" + (f"/{target_laps}" if target_laps else "")
    cur = f"{race.lap_time[i]:6.2f} s" if race.lap_started[i] else "  --  "
    times = race.stats.lap_times[i]
    last = f"{times[-1]:.2f}" if times else "--"
    best = f"{race.best_lap[i]:.2f}" if np.isfinite(race.best_lap[i]) else "--"
    lines = [f"{st.speed[i] * 3.6:5.1f} km/h   {laps}   {cur}", f"last {last}   best {best}"]
    if race.n > 1:
        n_racing = int(np.sum(race.in_race))
        lines.append(f"P{int(race.position[i])}/{n_racing}" + (f"   +{race.gap[i]:.1f} s" if race.position[i] > 1 else ""))
    if st.damage[i] > 0.01 or st.tyre_condition[i] < 0.99:
        lines.append(f"tyres {100 * st.tyre_condition[i]:.0f}%   damage {100 * st.damage[i]:.0f}%")
    return lines


DEFAULT_TELEMETRY = Path("runs") / "drive_laps.csv"
"""Where a drive's telemetry goes by default: beside the training runs (``kartsim dashboard`` lists it)."""


def _check_options(opponents: int, laps: int | None, weather: str, render_every: int, window: bool,
                   events: EventSource | None, telemetry: str | Path | None, force: bool) -> Path | None:
    """Rejects bad options with one-line errors; returns the telemetry path (None: no telemetry)."""
    from kartsim.envs.render import has_display
    from kartsim.sim.config import WEATHER

    if opponents < 0 or opponents > 11:
        raise ConfigError(f"--opponents must be between 0 and 11, got {opponents}")
    if laps is not None and laps < 1:
        raise ConfigError(f"--laps must be >= 1, got {laps}")
    if weather not in WEATHER and weather != "random":
        raise ConfigError(f"--weather must be dry, damp, wet or random, got {weather!r}")
    if render_every < 1:
        raise ConfigError("render_every must be >= 1")
    if window and events is None and not has_display():  # the keyboard needs a window: say so, do not hang
        raise ConfigError("No display found: kartsim drive needs a window for the keyboard; run it on a machine "
                          "with a display (headless, only scripted driving: SDL_VIDEODRIVER=dummy kartsim drive "
                          "--script keys.json)")
    tel_path = Path(telemetry) if telemetry is not None else None
    if tel_path is not None:
        if tel_path.suffix.lower() != ".csv":
            raise ConfigError(f"{tel_path}: the telemetry file must end in .csv")
        if tel_path.exists() and not force:
            raise ConfigError(f"{tel_path} already exists; pass --force to overwrite it or --telemetry another.csv")
    return tel_path


def _open_window(trk: Any) -> Any:
    """Opens the pygame window; returns the pygame module."""
    import pygame

    from kartsim.envs.render import init_display

    try:
        init_display()
        pygame.display.set_caption(f"kartsim drive - {trk.name}")
    except pygame.error as exc:
        raise ConfigError(f"cannot open a window ({exc}); drive on a machine with a display, or headless "
                          "with SDL_VIDEODRIVER=dummy and --script keys.json") from None
    return pygame


@dataclass
class _Session:
    """The karts of one drive: you (row 0), the AI opponents, the ghost (last row) and your telemetry."""

    race: Any
    rng: np.random.Generator
    slot: int
    opp_idx: np.ndarray
    opp: Any
    ghost_i: int | None
    ghost_model: Any
    ghost_obs: Any
    controls: KeyboardControl
    writer: Any
    trails: list[list[tuple[float, float]]]

    def start(self) -> None:
        order = [int(k) for k in self.opp_idx]
        order.insert(self.slot, 0)
        if self.ghost_i is not None:
            order.append(self.ghost_i)
        self.race.start(self.rng, order=np.array(order), track_index=0)
        if self.ghost_i is not None:
            # the ghost starts on pole, in a world of its own: nobody touches it
            self.race.add_ghost(self.ghost_i, *self.race.grid_poses(0, 1)[0])
            self.ghost_obs.reset(np.array([self.ghost_i]), [self.rng])

    def restart(self) -> None:
        self.start()
        self.controls.reset()
        if self.opp is not None:
            self.opp.reset()
        if self.writer is not None:
            self.writer.end_episode()
        self.trails = [[] for _ in range(self.race.n)]

    def handle(self, evs: Iterable[Any], pygame: Any, result: DriveResult) -> None:
        """Applies a batch of window / key events (quit, restart, press, release)."""
        for ev in evs:
            kind = getattr(ev, "type", None)
            if pygame is not None and kind == pygame.QUIT:
                result.quit = True
            elif kind in (_keydown(), _keyup()):
                control = KEYS.get(_key_name(ev.key))
                if control is None:
                    continue
                if kind != _keydown():
                    self.controls.release(control)
                elif control == "quit":
                    result.quit = True
                elif control == "restart":
                    self.restart()
                else:
                    self.controls.press(control)

    def decide(self, actions: np.ndarray) -> None:
        """The opponents' and the ghost's next actions (every AI_DECISION_STEPS steps)."""
        if self.opp is not None:
            actions[self.opp_idx] = self.opp.act()
        if self.ghost_i is not None:
            self.ghost_obs.observe(np.array([self.ghost_i]))
            a, _ = self.ghost_model.predict(self.ghost_obs.single(self.ghost_i), deterministic=True)
            actions[self.ghost_i] = np.asarray(a, np.float64).reshape(2)

    def record(self, live: Any, result: DriveResult, verbose: bool) -> None:
        """After a step: your telemetry row, the live feed, a finished lap, the map trails."""
        race = self.race
        if self.writer is not None:
            self.writer.log({"telemetry": race.telemetry(0), "lap": int(race.laps[0])}, reward=float(race.reward[0]))
        if live is not None and live.due():
            live.publish_race(race)
        if not np.isnan(race.new_lap_time[0]):
            result.lap_times.append(float(race.new_lap_time[0]))
            if verbose:
                print(f"lap {len(result.lap_times)}: {race.new_lap_time[0]:.2f} s", flush=True)
        for k in range(race.n):
            self.trails[k].append((float(race.state.x[k]), float(race.state.y[k])))
            del self.trails[k][:-300]


def _make_session(trk: Any, opponents: int, ai_level: str, ghost: str | None, laps: int | None, weather: str,
                  seed: int, grid_position: int | None, trust_model: bool) -> tuple[_Session, Any]:
    """Builds the race (you, the opponents, the ghost), puts it on the grid; returns it and its track stack."""
    from kartsim.drivers.opponents import Opponents
    from kartsim.sim.config import RaceConfig, RaceRules
    from kartsim.sim.multikart import GridRace
    from kartsim.sim.track import TrackStack

    stack = TrackStack.from_tracks([trk])
    n = 1 + opponents + (1 if ghost else 0)
    ghost_i = n - 1 if ghost else None
    cfg = RaceConfig(random_start=False, action_repeat=1, max_episode_steps=10 ** 9, stuck_time_s=1e9,
                     wrong_way_m=1e9, off_track_time_s=1e9)
    race = GridRace(stack, n, cfg, rules=RaceRules(laps=laps or 10 ** 6, weather=weather))
    rng = np.random.default_rng(seed)
    racers = 1 + opponents
    slot = racers - 1 if grid_position is None else int(grid_position) - 1
    if not 0 <= slot < racers:
        raise ConfigError(f"--grid-position must be between 1 and {racers}, got {grid_position}")
    opp_idx = np.arange(1, racers)

    ghost_obs = None
    ghost_model = None
    if ghost:
        from kartsim.envs.observations import make_observer
        from kartsim.rl.play import load_driver

        gd = load_driver(ghost, track=str(trk.path), evaluation=True, trust_model=trust_model)
        ghost_model = gd.model
        ghost_obs = make_observer(gd.env_config, race)
    opp = Opponents(race, opp_idx, "ai", ai_level, rng=rng) if opponents else None
    session = _Session(race, rng, slot, opp_idx, opp, ghost_i, ghost_model, ghost_obs, KeyboardControl(),
                       None, [[] for _ in range(n)])
    session.start()
    return session, stack


@dataclass
class _Display:
    """The window of a drive (``pygame`` None: headless): the chase camera and track map drawn every
    ``render_every`` steps, and the clock that holds the loop to real time (None: as fast as it runs)."""

    pygame: Any
    cam: Any
    track_map: Any
    view_size: int
    render_every: int
    clock: Any
    screen: Any = None

    @classmethod
    def open(cls, trk: Any, stack: Any, window: bool, realtime: bool, view_size: int, render_every: int) -> "_Display":
        from kartsim.envs.render import TrackMap
        from kartsim.sim.sensors import CameraConfig, CameraRenderer

        cam = CameraRenderer(stack.rgb, stack.scale, CameraConfig(mode="chase", size=view_size // 2))
        track_map = TrackMap(trk, max_size=view_size)
        pygame = _open_window(trk) if window else None
        clock = pygame.time.Clock() if (window and realtime) else None
        return cls(pygame, cam, track_map, view_size, render_every, clock)

    def show(self, session: _Session, step: int, target_laps: int | None) -> None:
        if self.pygame is not None and step % self.render_every == 0:
            frame = _frame(session.race, self.cam, self.track_map, session.trails, target_laps, self.view_size)
            self.screen = _show(self.pygame, self.screen, frame)

    def tick(self, dt: float) -> None:
        if self.clock is not None:
            self.clock.tick(1.0 / dt)

    def close(self) -> None:
        if self.pygame is not None:
            self.pygame.display.quit()


def _event_source(events: EventSource | None, window: bool, race: Any) -> EventSource:
    """The keyboard, or the given ``events`` (closed-loop sources, bots and tests, may look at the race)."""
    source = events if events is not None else PygameEvents()
    if hasattr(source, "attach"):
        source.attach(race)
    if window is False and events is None:
        raise ConfigError("driving without a window needs scripted events")
    return source


def drive_yourself(
    track: str = "circuit.png",
    *,
    opponents: int = 0,
    ai_level: str = "medium",
    ghost: str | None = None,
    telemetry: str | Path | None = DEFAULT_TELEMETRY,
    laps: int | None = None,
    max_time_s: float | None = None,
    events: EventSource | None = None,
    realtime: bool = True,
    window: bool = True,
    render_every: int = 1,
    weather: str = "dry",
    seed: int = 0,
    grid_position: int | None = None,
    view_size: int = 480,
    force: bool = False,
    verbose: bool = False,
    trust_model: bool = False,
) -> DriveResult:
    """Drive ``track`` with the keyboard (or ``events``), optionally against AI ``opponents`` and the
    ``ghost`` of a trained model; every step of your kart is written to ``telemetry`` (CSV).

    Ends after ``laps`` laps (None: when you quit), ``max_time_s`` simulated seconds, Esc/Q or closing
    the window. ``grid_position``: your slot on the grid (1 = pole; default last behind the opponents).
    """
    from kartsim.drivers.ai_driver import get_level
    from kartsim.sim.track import Track
    from kartsim.telemetry import TelemetryWriter
    from kartsim.telemetry.live import session_feed

    tel_path = _check_options(opponents, laps, weather, render_every, window, events, telemetry, force)
    get_level(ai_level)
    trk = Track.load(track)
    session, stack = _make_session(trk, opponents, ai_level, ghost, laps, weather, seed, grid_position, trust_model)
    display = _Display.open(trk, stack, window, realtime, view_size, render_every)
    source = _event_source(events, window, session.race)
    session.writer = TelemetryWriter(tel_path) if tel_path is not None else None
    live = session_feed("drive", trk.name)  # runs/_live/*.json for `kartsim dashboard` (or None)
    result = DriveResult(telemetry=tel_path)
    try:
        steps = _drive_loop(session, source, display, live, result, laps, max_time_s, verbose)
    finally:
        if session.writer is not None:
            session.writer.close()
        if live is not None:
            live.close()
        display.close()
    return _finish(result, session.race, steps)


def _drive_loop(session: _Session, source: EventSource, display: _Display, live: Any, result: DriveResult,
                laps: int | None, max_time_s: float | None, verbose: bool) -> int:
    """Steps the race at 50 Hz until you quit, finish ``laps`` or reach ``max_time_s``: events, your
    smoothed controls, the AI's decisions every AI_DECISION_STEPS, the record, a frame. Returns the steps."""
    race = session.race
    dt = race.step_dt
    actions = np.zeros((race.n, 2))
    sim_t = 0.0
    step = 0
    while True:
        session.handle(source.poll(sim_t), display.pygame, result)
        if result.quit:
            break
        actions[0] = session.controls.update(dt)
        if step % AI_DECISION_STEPS == 0:
            session.decide(actions)
        race.step(actions)
        step += 1
        sim_t += dt
        session.record(live, result, verbose)
        display.show(session, step, laps)
        display.tick(dt)
        if (laps is not None and race.laps[0] >= laps) or (max_time_s is not None and sim_t >= max_time_s):
            break
    return step


def _show(pygame: Any, screen: Any, frame: np.ndarray) -> Any:
    """Blits ``frame`` to the window (opened at the first frame's size); returns the screen surface."""
    if screen is None:
        screen = pygame.display.set_mode((frame.shape[1], frame.shape[0]))
    pygame.surfarray.blit_array(screen, np.ascontiguousarray(frame.transpose(1, 0, 2)))
    pygame.display.flip()
    return screen


def _finish(result: DriveResult, race: Any, steps: int) -> DriveResult:
    """Fills in the summary of a finished drive: steps, laps, best lap, your position, the standings."""
    result.steps = steps
    result.laps = int(race.laps[0])
    result.best_lap = min(result.lap_times) if result.lap_times else None
    result.position = int(race.position[0])
    result.standings = race.standings()
    return result


def _keydown():
    import pygame

    return pygame.KEYDOWN


def _keyup():
    import pygame

    return pygame.KEYUP


def _key_name(key: int) -> str:
    import pygame

    return pygame.key.name(key)


def _frame(race, cam, track_map, trails, target_laps, view_size: int) -> np.ndarray:
    """Chase camera (with the other karts and the weather) beside the track map, HUD on top."""
    import cv2

    st = race.state
    n = race.n
    others = race.others()
    # the ghost and karts of other worlds are drawn too (the ghost is "see-through" only physically)
    view = cam.render(st.track_idx[:1], st.x[:1], st.y[:1], st.yaw[:1], others=others,
                      self_rows=np.array([0]), wetness=st.wetness[:1], frame=int(race.steps[0]) // 5)[0]
    view = cv2.resize(view, (view_size, view_size), interpolation=cv2.INTER_NEAREST)
    poses = np.column_stack([st.x, st.y, st.yaw])
    mp = track_map.draw(poses, [np.asarray(t) for t in trails] if n <= 12 else None)
    h = max(view.shape[0], mp.shape[0])
    canvas = np.zeros((h, view.shape[1] + mp.shape[1], 3), np.uint8)
    canvas[: view.shape[0], : view.shape[1]] = view
    canvas[: mp.shape[0], view.shape[1]:] = mp
    for k, line in enumerate(_hud_lines(race, 0, target_laps if target_laps and target_laps < 10 ** 6 else None)):
        org = (10, 26 + 26 * k)
        cv2.putText(canvas, line, org, cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 4, cv2.LINE_AA)
        cv2.putText(canvas, line, org, cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 1, cv2.LINE_AA)
    return canvas
