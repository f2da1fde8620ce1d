"""Racing line, kart limits measured on the physics, corners, reference lap time and `kartsim track info`."""

import numpy as np
import pytest

from kartsim.cli import main
from kartsim.drivers.racing_line import corners, kart_limits, racing_line, reference_lap_time, speed_profile
from kartsim.sim.config import KartConfig
from kartsim.sim.track import Track, is_road

G = 9.81


@pytest.fixture(scope="module")
def circuit():
    return Track.load("circuit.png")


def test_kart_limits_are_measured_kart_figures():
    lim = kart_limits(KartConfig())
    assert 1.8 * G <= lim.lateral.max() <= 2.1 * G  # ~1.9 g on asphalt
    assert 1.4 * G <= lim.brake.min() <= lim.brake.max() <= 2.0 * G
    assert 23.0 <= lim.top_speed <= 27.0
    assert lim.acc(5.0) > lim.acc(20.0) > 0 > lim.acc(27.0)
    # steering lock limits the lateral acceleration at walking pace
    assert lim.lat(3.0) < 0.5 * lim.lat(15.0)
    assert lim.cornering_drag(1.9 * G) > lim.cornering_drag(1.0 * G) > 0
    # more grip -> more lateral acceleration; cached per config
    grippy = kart_limits(KartConfig(mu_asphalt=2.6))
    assert grippy.lateral.max() > lim.lateral.max() * 1.1
    assert kart_limits(KartConfig()) is lim


def test_racing_line_stays_inside_the_track_limits(circuit):
    cfg = KartConfig()
    line = racing_line(circuit, cfg)
    assert 0.9 * circuit.length < line.length < circuit.length
    # the kart's sides on the line are on the road everywhere (to within one pixel of the image:
    # the line keeps them 0.05 m from edges drawn in 0.25 m pixels)
    right = np.column_stack([-np.sin(line.heading), np.cos(line.heading)])
    for side in (-1.0, 1.0):
        p = line.xy + side * (cfg.width_m / 2 - circuit.scale) * right
        assert is_road(circuit.surface_at(p[:, 0], p[:, 1])).all()
    # smoother than the centerline: less total squared curvature
    sp_c = circuit.length / len(circuit.s)
    assert np.sum(line.curvature ** 2) * (line.length / len(line.s)) < 0.8 * np.sum(circuit.curvature ** 2) * sp_c
    # offsets within the bounds, using the road's width
    lo, hi = line.bounds
    assert np.all(line.offset >= lo - 0.05) and np.all(line.offset <= hi + 0.05)
    assert line.offset.max() - line.offset.min() > 3.0


@pytest.mark.parametrize("method", ["min-time", "min-curvature"])
def test_speed_profile_is_grip_and_power_limited(circuit, method):
    line = racing_line(circuit, line=method)
    lim = line.limits
    a_lat = line.speed ** 2 * np.abs(line.curvature)
    assert np.all(a_lat <= lim.lat(line.speed) * lim.gg_peak * 1.01)
    assert line.speed.max() <= lim.top_speed + 1e-6
    ds = np.diff(np.append(line.s, line.length))
    dv2 = (np.roll(line.speed, -1) ** 2 - line.speed ** 2) / (2 * ds)
    # the g-g diagram: at each point the lateral acceleration is one the kart holds at that point's
    # longitudinal acceleration (one of the two neighbouring segments')
    held = np.maximum(lim.lat_at(line.speed, dv2), lim.lat_at(line.speed, np.roll(dv2, 1)))
    assert np.all(a_lat <= held * 1.02 + 0.05)
    assert np.all(dv2 <= lim.acc(line.speed) + 1e-6)  # never accelerates harder than the engine allows
    assert np.all(-dv2 <= lim.brk(line.speed) + 1e-6)  # nor brakes harder than the tyres (at the entry speed)
    assert line.lap_time == pytest.approx(np.sum(2 * ds / (line.speed + np.roll(line.speed, -1))))
    assert line.time[0] == 0 and np.all(np.diff(line.time) > 0)


def test_brake_scale_brakes_earlier_into_a_hairpin():
    """The AI's profile (``brake_scale`` < 1): from a straight into an 8 m hairpin it starts braking
    earlier, never brakes harder than its share of the straight-line brake, and keeps the corner
    speed; on the circuit the line is the same and the lap a little slower."""
    lim = kart_limits()
    seg = np.full(400, 0.5)
    curv = np.r_[np.zeros(300), np.full(100, 1 / 8.0)]
    full = speed_profile(seg, curv, lim, closed=False, v_start=lim.top_speed)
    soft = speed_profile(seg, curv, lim.scaled(1.0, brake=0.8), closed=False, v_start=lim.top_speed)
    assert np.all(soft[:300] <= full[:300] + 1e-9)  # the straight and its braking zone
    assert soft[300:].min() == pytest.approx(full[300:].min(), rel=1e-3)
    decel = (soft[:-1] ** 2 - soft[1:] ** 2) / (2 * seg[:-1])
    assert np.all(decel <= 0.8 * lim.brk(soft[:-1]) + 1e-6)
    assert np.argmax(soft < soft[0] - 0.1) < np.argmax(full < full[0] - 0.1)
    c = Track.load("circuit")
    full_c, soft_c = racing_line(c), racing_line(c, brake_scale=0.8)
    np.testing.assert_array_equal(soft_c.xy, full_c.xy)
    assert full_c.lap_time < soft_c.lap_time < 1.01 * full_c.lap_time

def test_straight_speed_profile_matches_the_physics():
    # an open path: accelerate from 0 on a straight; the profile is the kart's drive curve
    lim = kart_limits()
    k = np.zeros(400)
    v = speed_profile(np.full(400, 0.5), k, lim, closed=False, v_start=0.0)
    assert v[0] == 0.0 and np.all(np.diff(v) >= 0)
    assert v[-1] < lim.top_speed


def test_reference_lap_times_are_plausible():
    times = {}
    for name in ("circuit", "oval", "technical"):
        track = Track.load(name)
        t = reference_lap_time(track)
        times[name] = t
        mean_speed = racing_line(track).length / t
        assert 12.0 < mean_speed < 24.0, (name, mean_speed)
    assert times["oval"] < times["circuit"]
    # a weaker engine or less grip is slower
    circuit = Track.load("circuit")
    assert reference_lap_time(circuit, KartConfig(engine_power_w=6000.0)) > times["circuit"]
    assert racing_line(circuit, grip_scale=0.8).lap_time > times["circuit"]


def test_corners(circuit):
    line = racing_line(circuit)
    cs = corners(circuit, line)
    assert 8 <= len(cs) <= 20
    assert [c.index for c in cs] == list(range(1, len(cs) + 1))
    assert all(0 <= c.apex_s < circuit.length for c in cs)
    assert {c.direction for c in cs} == {"left", "right"}
    hairpin = min(cs, key=lambda c: c.radius_m)
    assert hairpin.radius_m < 12 and hairpin.angle_deg > 150  # the minimum-time line: ~10.3 m
    assert hairpin.min_speed == pytest.approx(min(c.min_speed for c in cs))
    oval = Track.load("oval")
    assert len(corners(oval, racing_line(oval))) == 2


def test_track_info_cli(capsys, tmp_path):
    png = tmp_path / "line.png"
    assert main(["track", "info", "oval.png", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "corners:    2" in out and "reference:" in out and "length:" in out
    assert png.stat().st_size > 1000
    assert main(["track", "info", "no_such_track.png"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1


def test_eval_table_has_ref_ratio():
    from kartsim.rl.evaluate import COLUMNS, ModelScore, format_table

    s = ModelScore("m.zip", "rays", "circuit.png", 1, 2, 1.0, 46.5, 47.0, 0.0, 18.0, 10.0, ref_lap=45.0)
    assert s.ref_ratio == pytest.approx(46.5 / 45.0)
    assert s.to_dict()["ref_ratio"] == pytest.approx(1.0333, abs=1e-3)
    assert "ref_ratio" in COLUMNS
    assert "1.033" in format_table([s])
    assert ModelScore("m", "rays", "t", 1, 0, 0.0, None, None, 0.0, 0.0, 0.0).ref_ratio is None


@pytest.mark.parametrize("name", ["circuit", "oval", "technical"])
def test_min_time_line_is_never_slower_than_min_curvature(name):
    track = Track.load(name)
    fast = racing_line(track)
    mc = racing_line(track, line="min-curvature")
    assert fast.method == "min-time" and mc.method == "min-curvature"
    assert fast.lap_time < mc.lap_time
    assert reference_lap_time(track) == fast.lap_time
    # inside the track limits: both sides of the kart on the road all round the lap (to a pixel)
    half = KartConfig().width_m / 2 - track.scale
    right = np.column_stack([-np.sin(fast.heading), np.cos(fast.heading)])
    for side in (-1.0, 1.0):
        p = fast.xy + side * half * right
        assert is_road(track.surface_at(p[:, 0], p[:, 1])).all()


def test_min_time_line_is_cached_on_disk(tmp_path, monkeypatch):
    from kartsim.drivers import racing_line as rl

    monkeypatch.setenv("KARTSIM_CACHE_DIR", str(tmp_path))
    track = Track.load("oval")
    first = racing_line(track)
    files = list(tmp_path.glob("oval-*.npz"))
    assert len(files) == 1
    rl._LINE_CACHE.clear()
    solves = []
    monkeypatch.setattr(rl, "min_time_offsets", lambda *a, **k: solves.append(1))
    again = racing_line(track)  # from the file: no solve
    assert not solves
    np.testing.assert_array_equal(again.xy, first.xy)
    assert again.lap_time == first.lap_time
    # another kart is another entry
    rl._LINE_CACHE.clear()
    monkeypatch.undo()
    monkeypatch.setenv("KARTSIM_CACHE_DIR", str(tmp_path))
    racing_line(track, KartConfig(engine_power_w=6000.0))
    assert len(list(tmp_path.glob("oval-*.npz"))) == 2
    # another margin (the hard AI's) is its own solve, inside its own bounds, never faster
    wider = racing_line(track, margin_m=0.3)
    assert len(list(tmp_path.glob("oval-*.npz"))) == 3
    assert wider.method == "min-time" and wider.lap_time >= first.lap_time
    assert np.all(wider.offset >= wider.bounds[0] - 0.05) and np.all(wider.offset <= wider.bounds[1] + 0.05)
    # a corrupt file is solved again (and rewritten), never trusted
    files[0].write_bytes(b"not a zip")
    rl._LINE_CACHE.clear()
    fixed = racing_line(track)
    assert fixed.lap_time == pytest.approx(first.lap_time, rel=1e-6)
    with np.load(files[0], allow_pickle=False) as z:
        assert z["offset"].shape == z["station"].shape


def test_pinch_narrower_than_the_kart_names_where(tmp_path):
    from kartsim.errors import TrackError
    from kartsim.sim.track import COLORS
    from kartsim.sim.trackgen import generate_track, save_track

    img = generate_track(3, size=768, style="oval")
    png = tmp_path / "pinch.png"
    save_track(img, png)
    track = Track.load(png)
    i = len(track.s) // 3
    (cx, cy), h = track.centerline[i], track.heading[i]
    yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    dx, dy = (xx + 0.5) * track.scale - cx, (yy + 0.5) * track.scale - cy
    along, across = dx * np.cos(h) + dy * np.sin(h), -dx * np.sin(h) + dy * np.cos(h)
    img[(np.abs(along) < 1.0) & (np.abs(across) > 0.5) & (np.abs(across) < 10.0)] = COLORS["grass"]
    save_track(img, png)
    (tmp_path / "pinch.checkpoints.json").unlink(missing_ok=True)
    with pytest.raises(TrackError, match=r"only 1\.\d m wide at \d+ m along the lap \(pixel \d+, \d+\).*narrower than the kart"):
        racing_line(Track.load(png))


def test_track_info_prints_both_lap_times(capsys):
    assert main(["track", "info", "oval"]) == 0
    out = capsys.readouterr().out
    ref = reference_lap_time(Track.load("oval"))
    mc = racing_line(Track.load("oval"), line="min-curvature").lap_time
    assert f"reference:  {ref:.2f} s (minimum-time line); minimum-curvature line: {mc:.2f} s" in out
    assert main(["track", "info", "oval", "--line", "min-curvature"]) == 0
    with pytest.raises(SystemExit):  # argparse: a one-line usage error
        main(["track", "info", "oval", "--line", "fastest"])


def test_a_kinked_centerline_is_smoothed_for_the_line_and_the_gates(tmp_path, monkeypatch):
    """On a hand-drawn track the centerline kinks at every corner: laid across its own normals (which
    cross inside the road there), the reference kept away from the apexes, 8-14 % slower than karts
    could drive; across the smoothed copy (`Track.unkinked`) it is the minimum-time line again. The
    generated and bundled tracks are not smoothed (their references stay as they were)."""
    from conftest import hand_drawn_track

    track = Track.load(hand_drawn_track(tmp_path / "hand.png"))
    assert track.unkinked()[-1] > 0 and Track.load("circuit.png").unkinked()[-1] == 0.0
    fast = racing_line(track)
    monkeypatch.setattr(Track, "unkinked", lambda self: (self.centerline, self._right, self._t_left,
                                                         self._t_right, 0.0))
    kinked = racing_line(Track.load(hand_drawn_track(tmp_path / "again.png")))
    assert fast.method == "min-time" and fast.lap_time < 0.97 * kinked.lap_time
    # the line stays on the road, and its offsets are from the track's own centerline
    road = is_road(track.surface)
    px = np.clip((fast.xy / track.scale).astype(int), 0, np.array(road.shape[::-1]) - 1)
    assert road[px[:, 1], px[:, 0]].all()
    assert np.allclose(fast.offset, track.frame(fast.xy[:, 0], fast.xy[:, 1])[1], atol=1e-6)


def test_gates_of_a_kinked_track_never_cross_each_other(tmp_path):
    from conftest import hand_drawn_track

    track = Track.load(hand_drawn_track(tmp_path / "hand.png"))
    g = track.gates

    def crosses(p, q):
        def side(a, b, c):
            return np.sign((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))
        return side(p[:2], p[2:], q[:2]) != side(p[:2], p[2:], q[2:]) and side(q[:2], q[2:], p[:2]) != side(q[:2], q[2:], p[2:])

    assert not any(crosses(g[i], g[(i + 1) % len(g)]) for i in range(len(g)))
