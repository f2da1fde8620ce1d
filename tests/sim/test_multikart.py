"""Multi-kart races: grid, collisions, positions and gaps (scripted overtake), finishing, rescue."""

import numpy as np
import pytest

from kartsim.errors import ConfigError
from kartsim.drivers.opponents import Opponents
from kartsim.sim.multikart import GridRace, RaceRules
from kartsim.sim.config import RaceConfig
from kartsim.sim.physics import KART_COLUMNS
from kartsim.sim.track import Track, TrackStack, is_road

FLOAT_COLUMNS = [c.name for c in KART_COLUMNS.columns if c.dtype is np.float64]


@pytest.fixture(scope="module")
def oval():
    return TrackStack.from_tracks([Track.load("oval.png")])


def make_race(stack, n, **rules):
    cfg = RaceConfig(random_start=False, max_episode_steps=100000, stuck_time_s=1e9, wrong_way_m=1e9,
                     off_track_time_s=1e9)
    return GridRace(stack, n, cfg, rules=RaceRules(**rules))


def lane_driver(race, i, lane_m, speed):
    """Scripted: pure pursuit of a lane `lane_m` right of the centerline at a constant target speed."""
    st = race.state
    track = race.stack.tracks[0]
    s_t = race.s[i] + 6.0
    x, y, yaw = track.pose_at(s_t)
    tx, ty = x - np.sin(yaw) * lane_m, y + np.cos(yaw) * lane_m
    a = np.arctan2(ty - st.y[i], tx - st.x[i]) - st.yaw[i]
    a = (a + np.pi) % (2 * np.pi) - np.pi
    return [float(np.clip(2.5 * a, -1, 1)), float(np.clip(0.6 * (speed - st.speed[i]), -1, 1))]


def test_grid_start(oval):
    race = make_race(oval, 6)
    race.start(np.random.default_rng(0), order=np.array([3, 1, 0, 2, 5, 4]))
    st, track = race.state, oval.tracks[0]
    assert np.all(st.world == 0) and st.collisions_possible()
    assert is_road(track.surface_at(st.x, st.y)).all()
    d = np.hypot(st.x[:, None] - st.x[None], st.y[:, None] - st.y[None])[np.triu_indices(6, 1)]
    assert d.min() > 2.5
    # everybody behind the line, pole closest to it, in the given order
    assert np.all(race.total_progress < 0)
    assert race.position.tolist() == [3, 2, 4, 1, 6, 5]
    assert race.grid_slot.tolist() == [2, 1, 3, 0, 5, 4]
    assert np.all(st.speed == 0) and np.all(race.laps == 0)
    with pytest.raises(ConfigError):
        race.start(np.random.default_rng(0), order=np.array([0, 0, 1, 2, 3, 4]))
    with pytest.raises(ConfigError):
        make_race(oval, 2, weather="snow")


def test_scripted_overtake_positions_and_gaps(oval):
    race = make_race(oval, 2, laps=2)
    race.start(np.random.default_rng(0), order=np.array([0, 1]))  # kart 0 on pole, kart 1 behind
    assert race.position.tolist() == [1, 2]
    overtaken_at = None
    for step in range(700):
        race.step(np.array([lane_driver(race, 0, -2.0, 9.0), lane_driver(race, 1, 2.0, 14.0)]))
        # positions always follow race distance
        expect = [1, 2] if race.best[0] >= race.best[1] else [2, 1]
        assert race.position.tolist() == expect
        if overtaken_at is None and race.position[1] == 1:
            overtaken_at = step
    assert overtaken_at is not None and race.position.tolist() == [2, 1]
    assert not race.state.kart_hit.any()
    # the gap of kart 0 is the time since kart 1 passed the same place: about distance / speed
    ahead_m = race.best[1] - race.best[0]
    assert race.gap[1] == 0.0 and race.gap_to_leader[0] == race.gap[0]
    assert race.gap[0] == pytest.approx(ahead_m / race.state.speed[1], rel=0.25)
    tel = race.telemetry(0)
    assert tel["position"] == 2 and tel["gap"] == pytest.approx(race.gap[0])
    assert {"tyre_condition", "damage", "wetness"} <= set(tel)
    board = race.standings()
    assert [r["kart"] for r in board] == [1, 0]


def test_collisions_in_a_race_are_sane(oval):
    race = make_race(oval, 8)
    race.start(np.random.default_rng(1))
    rng = np.random.default_rng(2)
    contacts = 0
    for _ in range(150):
        a = np.column_stack([rng.uniform(-0.3, 0.3, 8), rng.uniform(0.5, 1.0, 8)])
        race.step(a)
        st = race.state
        for name in FLOAT_COLUMNS:
            assert np.all(np.isfinite(getattr(st, name))), name
        d = np.hypot(st.x[:, None] - st.x[None], st.y[:, None] - st.y[None])[np.triu_indices(8, 1)]
        assert d.min() >= 2 * race.kart_cfg.radius_m - 1e-3
        contacts += int(st.kart_hit.sum())
    assert contacts > 0  # a drag race of 8 karts steering at random touches


def test_ai_race_finishes_with_a_classification(oval):
    race = make_race(oval, 4, laps=1)
    race.start(np.random.default_rng(3), order=np.arange(4))
    opp = Opponents(race, np.arange(4), "ai", ["hard", "medium", "easy", "hard"], rng=np.random.default_rng(0))
    for _ in range(900):
        race.step(opp.act())
        if race.finished.all():
            break
    assert race.finished.all()
    assert sorted(race.finish_order.tolist()) == [1, 2, 3, 4]
    board = race.standings()
    assert [r["position"] for r in board] == [1, 2, 3, 4]
    times = [r["finish_time_s"] for r in board]
    assert times == sorted(times)
    assert board[0]["gap_s"] == 0 and all(r["gap_s"] >= 0 for r in board)


def test_rescue_puts_a_stuck_kart_back(oval):
    race = make_race(oval, 2)
    race.start(np.random.default_rng(0), order=np.array([0, 1]))
    track = oval.tracks[0]
    st = race.state
    # kart 1 parked on the grass far from the road, the same distance along the lap
    x, y, yaw = track.pose_at(100.0)
    st.x[1], st.y[1] = x + np.sin(yaw) * 8.0, y - np.cos(yaw) * 8.0
    race.step(np.zeros((2, 2)))
    s_before = race.s[1]
    st.damage[1] = 0.3
    assert race.rescue(1)
    assert is_road(track.surface_at(st.x[1:], st.y[1:])).all()
    assert race.s[1] == pytest.approx(s_before, abs=1.0) and st.damage[1] == 0.3
    # not onto another kart
    st.x[0], st.y[0] = st.x[1], st.y[1]
    st.x[1] += 10.0
    race._update_frame(np.array([1]))
    assert not race.rescue(1, clearance_m=30.0)
