"""Track loading: bundled tracks, geometry queries, checkpoints files, legends and bad input."""

from __future__ import annotations

import json
import math
import pickle
import shutil
import warnings

import cv2
import numpy as np
import pytest

from kartsim.errors import TrackError
from kartsim.sim.track import COLORS, Surface, Track, TrackLegend, TrackStack, bundled_tracks, resolve_track_path

GREEN = COLORS["grass"]
GREY = COLORS["asphalt"]


def write_png(path, rgb):
    img = np.asarray(rgb, np.uint8)
    if img.shape[-1] == 4:
        cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGBA2BGRA))
    else:
        cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return path


def ring_image(size=400, radius=120, width_px=36, color=GREY, bg=GREEN):
    img = np.zeros((size, size, 3), np.uint8)
    img[:] = bg
    cv2.circle(img, (size // 2, size // 2), radius, color, width_px)
    return img


@pytest.fixture(scope="module")
def circuit():
    return Track.load("circuit")


@pytest.fixture
def circuit_copy(tmp_path):
    """circuit.png alone in a temp folder (no checkpoints file)."""
    p = tmp_path / "circuit.png"
    shutil.copy(resolve_track_path("circuit"), p)
    return p


# ------------------------------------------------------------------------------- bundled tracks


def test_bundled_names():
    assert {"circuit", "oval", "technical"} <= set(bundled_tracks())
    assert resolve_track_path("circuit") == resolve_track_path("circuit.png")


@pytest.mark.parametrize("name", ["circuit", "oval", "technical"])
def test_bundled_track_loads(name):
    t = Track.load(name)
    m = len(t.centerline)
    assert t.centerline.shape == (m, 2) and m > 100
    # closed loop: last != first, but one spacing apart
    gap = np.hypot(*(t.centerline[0] - t.centerline[-1]))
    assert 0.3 < gap < 0.7
    spacing = np.hypot(*np.diff(t.centerline, axis=0).T)
    assert np.all((spacing > 0.3) & (spacing < 0.7))
    assert t.s[0] == 0 and np.all(np.diff(t.s) > 0) and t.s[-1] < t.length
    assert t.heading.shape == t.curvature.shape == t.width.shape == (m,)
    # counter-clockwise on the image: total turning is -2 pi
    ds = np.diff(np.append(t.s, t.length))
    assert np.sum(t.curvature * ds) == pytest.approx(-2 * math.pi, abs=0.05)
    assert t.direction == "ccw"
    assert t.gates_source == "file"
    assert t.gates.shape[1] == 4 and len(t.gates) == len(t.gate_s) >= 10
    assert t.gate_s[0] == 0 and np.all(np.diff(t.gate_s) > 0) and t.gate_s[-1] < t.length
    # gate midpoints on the road, gate 0 through centerline point 0
    mid = 0.5 * (t.gates[:, :2] + t.gates[:, 2:])
    assert np.all(np.isin(t.surface_at(mid[:, 0], mid[:, 1]), [Surface.ASPHALT, Surface.KERB]))
    assert np.hypot(*(mid[0] - t.centerline[0])) < 1.0
    # the whole centerline is on the road
    assert np.all(np.isin(t.surface_at(t.centerline[:, 0], t.centerline[:, 1]),
                          [Surface.ASPHALT, Surface.KERB]))
    assert t.wall_distance.dtype == np.float32 and t.surface.dtype == np.uint8
    assert t.rgb.shape == t.surface.shape + (3,)
    assert t.scale == 0.25
    assert not t.warnings


def test_circuit_dimensions(circuit):
    assert 800 <= circuit.length <= 1200
    assert 8 <= circuit.width.mean() <= 10
    assert circuit.width.min() >= 8
    # a hairpin (radius < 15 m) and fast sweepers
    assert np.abs(circuit.curvature).max() > 1 / 15
    assert circuit.surface.shape[0] <= 1600 and circuit.surface.shape[1] <= 1600


def test_oval_and_technical_dimensions():
    oval, tech = Track.load("oval"), Track.load("technical")
    assert 300 <= oval.length <= 700 and 9 <= oval.width.mean() <= 11
    assert 400 <= tech.length <= 1200 and 7 <= tech.width.mean() <= 9
    # technical: more turning per metre than the oval
    assert np.abs(tech.curvature).mean() > np.abs(oval.curvature).mean()


def test_start_at_white_line(circuit_copy):
    t = Track.load(circuit_copy)
    assert t.gates_source == "auto" and t.start_source == "line"
    x, y = t.centerline[0]
    row, col = int(y / t.scale), int(x / t.scale)
    patch = t.rgb[row - 3:row + 4, col - 3:col + 4]
    assert (patch.min(axis=-1) >= 200).any()  # white start/finish line there
    assert len(t.gates) == pytest.approx(t.length / 10, abs=1.5)


# ---------------------------------------------------------------------------------- geometry


def test_wall_distance(circuit):
    t = circuit
    assert np.all(t.wall_distance[t.surface == Surface.WALL] == 0)
    assert t.wall_distance[0, 0] == 0
    x, y = t.centerline[0]
    # centerline: at least half the road away from any wall
    assert t.wall_distance[int(y / t.scale), int(x / t.scale)] > 4.0


def test_progress_monotonic_and_wraps(circuit):
    t = circuit
    p = t.progress(t.centerline[:, 0], t.centerline[:, 1])
    assert p[0] == pytest.approx(0, abs=1e-9)
    assert np.all(np.diff(p) > 0)
    assert np.allclose(p, t.s)
    # just before the line: close to the lap length; just after: close to 0
    x, y, _ = t.pose_at(np.array([t.length - 0.2, 0.2]))
    p2 = t.progress(x, y)
    assert p2[0] == pytest.approx(t.length - 0.2, abs=0.05)
    assert p2[1] == pytest.approx(0.2, abs=0.05)
    # a fine walk along the lap only ever moves forwards, except once at the finish
    s = np.linspace(0, 3 * t.length, 20000)
    x, y, _ = t.pose_at(s)
    d = np.diff(t.progress(x, y))
    assert (d < 0).sum() == 2 and np.all(d[d < 0] < -0.9 * t.length)


def test_pose_at(circuit):
    t = circuit
    x, y, yaw = t.pose_at(np.array([0.0, t.s[10], t.length + t.s[10], -t.length + t.s[10]]))
    assert np.allclose(x[1:], t.centerline[10, 0]) and np.allclose(y[1:], t.centerline[10, 1])
    assert np.allclose(yaw[1:], t.heading[10])
    assert (x[0], y[0]) == pytest.approx(tuple(t.centerline[0]))
    xs, ys, yaws = t.pose_at(5.0)
    assert isinstance(xs, float)
    # yaw points along the direction of travel
    x2, y2, _ = t.pose_at(5.5)
    assert math.atan2(y2 - ys, x2 - xs) == pytest.approx(yaws, abs=0.05)


def test_frame_off_centerline(circuit):
    t = circuit
    idx = np.arange(0, len(t.centerline), 7)
    right = np.column_stack([-np.sin(t.heading[idx]), np.cos(t.heading[idx])])
    for off in (-3.0, -1.0, 2.5):
        q = t.centerline[idx] + off * right
        s, lat, h = t.frame(q[:, 0], q[:, 1])
        assert np.allclose(lat, off, atol=1e-6)
        assert np.allclose(s, t.s[idx], atol=1e-6)
        assert np.allclose(h, t.heading[idx])
        assert np.array_equal(t.locate(q[:, 0], q[:, 1]), idx)


def test_frame_sign_convention():
    """Lateral > 0 is to the driver's right: with y down, heading east, right is +y."""
    t = Track.load("oval")
    i = int(np.argmin(np.abs(t.heading)))  # a point heading east (bottom straight, ccw)
    assert abs(t.heading[i]) < 0.05
    x, y = t.centerline[i]
    _, lat, _ = t.frame(x, y + 2.0)
    assert lat[0] == pytest.approx(2.0, abs=0.05)


def test_locate_matches_brute_force(circuit):
    t = circuit
    rng = np.random.default_rng(0)
    road = np.argwhere(np.isin(t.surface, [Surface.ASPHALT, Surface.KERB]))
    pick = road[rng.choice(len(road), 3000, replace=False)]
    x = (pick[:, 1] + rng.random(3000)) * t.scale
    y = (pick[:, 0] + rng.random(3000)) * t.scale
    got = t.locate(x, y)
    d2 = (x[:, None] - t.centerline[None, :, 0]) ** 2 + (y[:, None] - t.centerline[None, :, 1]) ** 2
    best = d2.min(axis=1)
    assert np.allclose(d2[np.arange(3000), got], best, atol=1e-9)


def test_surface_at(circuit):
    t = circuit
    assert list(t.surface_at([-1.0, 1e6, 0.1], [5.0, 5.0, -0.1])) == [Surface.WALL] * 3
    x, y = t.centerline[100]
    assert t.surface_at(x, y)[0] in (Surface.ASPHALT, Surface.KERB)
    row, col = 500, 700
    assert t.surface_at((col + 0.5) * t.scale, (row + 0.5) * t.scale)[0] == t.surface[row, col]


def test_pickle(circuit):
    t2 = pickle.loads(pickle.dumps(circuit))
    assert t2.length == circuit.length and np.array_equal(t2.surface, circuit.surface)
    q = circuit.centerline[::50] + 1.0
    assert np.array_equal(t2.progress(q[:, 0], q[:, 1]), circuit.progress(q[:, 0], q[:, 1]))


def test_track_stack():
    tracks = [Track.load(n) for n in ("circuit", "oval", "technical")]
    st = TrackStack.from_tracks(tracks)
    h = max(t.surface.shape[0] for t in tracks)
    w = max(t.surface.shape[1] for t in tracks)
    assert st.surface.shape == (3, h, w) and st.surface.dtype == np.uint8
    assert st.wall_distance.shape == (3, h, w) and st.wall_distance.dtype == np.float32
    assert st.rgb.shape == (3, h, w, 3) and st.rgb.dtype == np.uint8
    assert st.scale.shape == (3,) and st.scale.dtype == np.float64
    assert st.tracks == tracks and len(st) == 3
    oh, ow = tracks[1].surface.shape
    assert np.array_equal(st.surface[1, :oh, :ow], tracks[1].surface)
    assert np.all(st.surface[1, oh:] == Surface.WALL) and np.all(st.surface[1, :, ow:] == Surface.WALL)
    assert np.all(st.rgb[1, oh:] == 0) and np.all(st.wall_distance[1, oh:] == 0)
    with pytest.raises(TrackError):
        TrackStack.from_tracks([])


# ------------------------------------------------------------------------------ checkpoints


def test_checkpoints_round_trip(circuit_copy):
    t = Track.load(circuit_copy)
    assert t.gates_source == "auto"
    path = t.save_checkpoints()
    assert path == circuit_copy.with_name("circuit.checkpoints.json")
    data = json.loads(path.read_text())
    assert data["track"] == "circuit.png" and data["direction"] == "ccw"
    assert len(data["gates"]) == len(t.gates) and len(data["gates"][0]) == 4
    t2 = Track.load(circuit_copy)
    assert t2.gates_source == "file"
    assert np.allclose(t2.gates, t.gates, atol=0.01 * t.scale)
    assert np.allclose(t2.gate_s, t.gate_s, atol=0.6)
    assert t2.direction == t.direction
    assert t2.length == pytest.approx(t.length, abs=1e-6)
    assert np.allclose(t2.centerline[0], t.centerline[0])


def test_shared_checkpoints_file(circuit_copy, circuit):
    gates = (circuit.gates / circuit.scale).tolist()
    shared = circuit_copy.with_name("checkpoints.json")
    shared.write_text(json.dumps({"track": "other.png", "gates": gates[::-1]}))
    assert Track.load(circuit_copy).gates_source == "auto"  # belongs to another track
    shared.write_text(json.dumps({"track": "circuit.png", "direction": "ccw", "gates": gates}))
    t = Track.load(circuit_copy)
    assert t.gates_source == "file" and len(t.gates) == len(gates)


def test_reversed_gates_mean_clockwise(circuit_copy, circuit):
    gates = (circuit.gates / circuit.scale)
    rev = np.vstack([gates[:1], gates[1:][::-1]])  # same start, driven the other way
    circuit_copy.with_name("circuit.checkpoints.json").write_text(
        json.dumps({"track": "circuit.png", "gates": rev.tolist()}))
    t = Track.load(circuit_copy)
    assert t.direction == "cw"
    assert t.gate_s[0] == 0 and np.all(np.diff(t.gate_s) > 0)
    ds = np.diff(np.append(t.s, t.length))
    assert np.sum(t.curvature * ds) == pytest.approx(2 * math.pi, abs=0.05)
    assert np.hypot(*(t.centerline[0] - circuit.centerline[0])) < 1.0


def test_direction_only_file(circuit_copy):
    circuit_copy.with_name("circuit.checkpoints.json").write_text(
        json.dumps({"track": "circuit.png", "direction": "cw", "gates": []}))
    t = Track.load(circuit_copy)
    assert t.direction == "cw" and t.gates_source == "auto" and t.start_source == "line"
    assert np.all(np.diff(t.gate_s) > 0)


def test_legacy_point_list(circuit_copy, circuit):
    idx = np.arange(0, len(circuit.centerline), 40)
    pts = (circuit.centerline[idx] / circuit.scale).round(1).tolist()
    for payload in (pts, {"track": "circuit.png", "gates": pts}):
        circuit_copy.with_name("circuit.checkpoints.json").write_text(json.dumps(payload))
        t = Track.load(circuit_copy)
        assert t.gates_source == "file" and len(t.gates) == len(pts)
        assert t.direction == "ccw"
        widths = np.hypot(t.gates[:, 2] - t.gates[:, 0], t.gates[:, 3] - t.gates[:, 1])
        assert np.all((widths > 8) & (widths < 11))
        assert np.allclose(t.gate_s, circuit.s[idx], atol=0.6)


# ----------------------------------------------------------------------------- legends, misc


def test_synthetic_ring_and_scale_legend(tmp_path):
    p = write_png(tmp_path / "ring.png", ring_image())
    t = Track.load(p)
    assert t.length == pytest.approx(2 * math.pi * 120 * 0.25, rel=0.02)
    assert t.width.mean() == pytest.approx(36 * 0.25, abs=0.5)
    assert t.start_source == "straight"
    (tmp_path / "ring.json").write_text(json.dumps({"scale_m_per_px": 0.5}))
    t2 = Track.load(p)
    assert t2.scale == 0.5 and t2.length == pytest.approx(2 * t.length, rel=0.01)


def test_legend_color_rule(tmp_path):
    p = write_png(tmp_path / "blue.png", ring_image(color=(20, 40, 230), bg=(230, 200, 150)))
    with pytest.raises(TrackError, match="no asphalt"):
        Track.load(p)
    (tmp_path / "blue.json").write_text(json.dumps({"colors": [
        {"rgb": [20, 40, 230], "surface": "asphalt", "tolerance": 10},
        {"rgb": [230, 200, 150], "surface": "grass"}]}))
    t = Track.load(p)
    assert (t.surface == Surface.GRASS).sum() > 0
    assert t.length == pytest.approx(2 * math.pi * 120 * 0.25, rel=0.02)
    legend = TrackLegend(scale_m_per_px=1.0)
    assert Track.load(p, legend=TrackLegend.from_dict(
        {"scale_m_per_px": 1.0, "colors": [{"rgb": [20, 40, 230], "surface": "kerb"}]})).scale == legend.scale_m_per_px


def test_default_colour_classes():
    legend = TrackLegend()
    colours = np.array([[[128, 128, 128], [30, 30, 30], [60, 160, 60], [220, 30, 30],
                         [250, 250, 250], [0, 0, 255], [0, 0, 0], [120, 110, 125]]], np.uint8)
    surface, white = legend.classify(colours)
    assert list(surface[0]) == [Surface.ASPHALT, Surface.WALL, Surface.GRASS, Surface.KERB,
                                Surface.KERB, Surface.WALL, Surface.WALL, Surface.ASPHALT]
    assert list(white[0]) == [False, False, False, False, True, False, False, False]


def test_transparent_is_wall(tmp_path):
    img = np.dstack([ring_image(), np.full((400, 400), 255, np.uint8)])
    img[:50, :, 3] = 0
    t = Track.load(write_png(tmp_path / "alpha.png", img))
    assert np.all(t.surface[:50] == Surface.WALL) and np.all(t.rgb[:50] == 0)
    assert (t.surface[60:] == Surface.GRASS).any()


def test_disconnected_regions_warn(tmp_path):
    img = ring_image()
    cv2.rectangle(img, (10, 10), (40, 40), GREY, -1)
    with pytest.warns(UserWarning, match=r"2 disconnected road regions.*961 road pixels"):
        t = Track.load(write_png(tmp_path / "two.png", img))
    assert t.length == pytest.approx(2 * math.pi * 120 * 0.25, rel=0.02)
    assert len(t.warnings) == 1


def test_island_in_road(tmp_path):
    """A small non-road island in a wide road does not confuse the centerline."""
    img = ring_image(width_px=60)
    cv2.circle(img, (200 + 120, 200), 4, (0, 0, 0), -1)
    t = Track.load(write_png(tmp_path / "island.png", img))
    assert t.length == pytest.approx(2 * math.pi * 120 * 0.25, rel=0.03)


# ---------------------------------------------------------------------------------- bad input


def expect(path, pattern, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(TrackError, match=pattern) as info:
            Track.load(path, **kw)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_missing_file_lists_bundled(tmp_path):
    msg = expect(tmp_path / "nope.png", "not found")
    assert "circuit" in msg and "oval" in msg
    expect("no_such_track", "bundled tracks: .*circuit")
    expect(tmp_path, "is a folder")


def test_not_an_image(tmp_path):
    p = tmp_path / "text.png"
    p.write_text("hello, I am not a picture")
    expect(p, "not an image")


def test_corrupt_png(tmp_path):
    good = write_png(tmp_path / "good.png", ring_image())
    data = good.read_bytes()
    bad = tmp_path / "bad.png"
    bad.write_bytes(data[: len(data) // 2])
    expect(bad, "corrupt or truncated")


@pytest.mark.parametrize("shape", [(100, 400), (400, 200), (300, 4200)])
def test_image_size_limits(tmp_path, shape):
    img = np.zeros(shape + (3,), np.uint8)
    img[:] = GREEN
    expect(write_png(tmp_path / "size.png", img), "256 to 4096 px")


def test_no_asphalt(tmp_path):
    img = np.zeros((300, 300, 3), np.uint8)
    img[:] = GREEN
    expect(write_png(tmp_path / "grass.png", img), "no asphalt")


def test_not_closed_loop(tmp_path):
    img = np.zeros((300, 300, 3), np.uint8)
    img[:] = GREEN
    img[100:140, 20:280] = GREY
    expect(write_png(tmp_path / "bar.png", img), "not a closed loop")


def test_a_track_drawn_on_white_says_the_background_is_road_and_how_to_map_it(tmp_path):
    path = write_png(tmp_path / "paper.png", ring_image(bg=(255, 255, 255)))
    msg = expect(path, "the background is road \\(100 % of the image's edge is white, which counts as kerb\\)")
    assert "paint it green" in msg and '"surface": "grass"' in msg
    legend = msg[msg.index("{"):]  # the legend the message suggests makes it load
    (tmp_path / "paper.json").write_text(legend)
    assert Track.load(path).width.mean() == pytest.approx(36 * 0.25, abs=0.5)
    assert "asphalt" in expect(write_png(tmp_path / "grey.png", ring_image(color=(90, 90, 90), bg=GREY)),
                               "the background is road")
    framed = ring_image()
    framed[:3], framed[-3:], framed[:, :3], framed[:, -3:] = 255, 255, 255, 255  # a white frame (an export)
    with pytest.warns(UserWarning, match="disconnected road regions"):
        assert Track.load(write_png(tmp_path / "framed.png", framed)).width.mean() == pytest.approx(9.0, abs=0.5)


def test_road_off_the_lap_warns(tmp_path):
    """A spur (or a figure-eight's second lobe) is road the lap does not follow: said, not silent."""
    img = ring_image()
    cv2.line(img, (200, 80), (200, 10), GREY, 30)  # a dead end out of the ring
    with pytest.warns(UserWarning, match=r"m2 of road lie off the lap the centerline follows \(a spur"):
        t = Track.load(write_png(tmp_path / "spur.png", img))
    assert len(t.warnings) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Track.load(write_png(tmp_path / "ring.png", ring_image())).warnings == []


def test_gate_off_road(circuit_copy, circuit):
    gates = (circuit.gates / circuit.scale).tolist()
    gates[3] = [5.0, 5.0, 10.0, 10.0]
    circuit_copy.with_name("circuit.checkpoints.json").write_text(json.dumps({"gates": gates}))
    msg = expect(circuit_copy, "gate 3 .*not on the road")
    assert "delete the file" in msg
    circuit_copy.with_name("circuit.checkpoints.json").write_text(json.dumps([[5, 5], [600, 870]]))
    expect(circuit_copy, "gate 0 .*not on the road")


def test_gates_out_of_order(circuit_copy, circuit):
    gates = (circuit.gates / circuit.scale).tolist()
    gates[5], gates[20] = gates[20], gates[5]
    circuit_copy.with_name("circuit.checkpoints.json").write_text(json.dumps({"gates": gates}))
    expect(circuit_copy, "out of driving order")


@pytest.mark.parametrize("text,pattern", [
    ("{not json", "not valid JSON"),
    ('{"gates": [[1, 2, 3]]}', r"gate 0 must be \[x1, y1, x2, y2\]"),
    ('{"gates": "abc"}', "must be a list"),
    ('{"direction": "left", "gates": []}', "direction"),
    ('{"gates": [], "colour": 1}', "unknown key"),
    ('42', "expected an object"),
    ('{"gates": [[600, 870], [1, 2, 3, 4]]}', "mixes"),
])
def test_malformed_checkpoints(circuit_copy, text, pattern):
    circuit_copy.with_name("circuit.checkpoints.json").write_text(text)
    msg = expect(circuit_copy, pattern)
    assert "circuit.checkpoints.json" in msg


@pytest.mark.parametrize("text,pattern", [
    ("{oops", "legend file .* not valid JSON"),
    ('{"scale": 0.5}', "unknown legend key"),
    ('{"scale_m_per_px": -1}', "scale_m_per_px must be"),
    ('{"colors": [{"rgb": [1, 2], "surface": "wall"}]}', r"colors\[0\].rgb"),
    ('{"colors": [{"rgb": [1, 2, 3], "surface": "lava"}]}', r"colors\[0\].surface"),
    ('[1, 2]', "must be a JSON object"),
])
def test_legend_errors(tmp_path, text, pattern):
    p = write_png(tmp_path / "ring.png", ring_image())
    (tmp_path / "ring.json").write_text(text)
    expect(p, pattern)


def test_save_checkpoints_needs_path():
    t = Track.from_image(ring_image(), name="mem")
    with pytest.raises(TrackError, match="give a path"):
        t.save_checkpoints()


def test_direction_disagreeing_with_gates_warns(circuit_copy, circuit):
    gates = (circuit.gates / circuit.scale).tolist()
    circuit_copy.with_name("circuit.checkpoints.json").write_text(
        json.dumps({"track": "circuit.png", "direction": "cw", "gates": gates}))
    with pytest.warns(UserWarning, match="disagrees with the order of the gates"):
        t = Track.load(circuit_copy)
    assert t.direction == "ccw"
