"""Rays and camera on small synthetic grids (no kartsim.sim.track)."""

import math

import cv2
import numpy as np
import pytest

from kartsim.errors import ConfigError
from kartsim.sim.sensors import CameraConfig, CameraRenderer, cast_rays, compact_ray_field, luma

SCALE = 0.25
WALL, ASPHALT, KERB, GRASS = 0, 1, 2, 3
COLOURS = {WALL: (0, 0, 0), ASPHALT: (90, 90, 90), KERB: (220, 30, 30), GRASS: (40, 140, 40)}


def wall_distance(surf, scale=SCALE):
    padded = np.pad((surf != WALL).astype(np.uint8), 1)
    return (cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1] * scale).astype(np.float32)


def texture(surf):
    rgb = np.zeros(surf.shape + (3,), np.uint8)
    for code, col in COLOURS.items():
        rgb[surf == code] = col
    return rgb


def corridor():
    """A horizontal corridor: walls on rows 0..39 and 80..119 (y < 10 m, y >= 20 m), open ends
    closed by walls at columns 0..3 and 396..399 (x < 1 m, x >= 99 m)."""
    surf = np.full((120, 400), ASPHALT, np.uint8)
    surf[:40] = WALL
    surf[80:] = WALL
    surf[:, :4] = WALL
    surf[:, 396:] = WALL
    return surf


def rays(surf, x, y, yaw, angles, max_range=200.0, scale=SCALE):
    n = len(x)
    out = np.empty((n, len(angles)), np.float32)
    r = cast_rays(wall_distance(surf, scale)[None], np.array([scale]), np.zeros(n, np.int32),
                  np.asarray(x, float), np.asarray(y, float), np.asarray(yaw, float),
                  np.asarray(angles, float), max_range, out)
    assert r is out
    return out


# ------------------------------------------------------------------------------------------------- rays


@pytest.mark.parametrize("x,y", [(10.0, 15.0), (50.3, 12.1), (80.0, 18.7), (33.3, 10.9)])
def test_rays_measure_corridor_within_a_pixel(x, y):
    surf = corridor()
    out = rays(surf, [x], [y], [0.0], [0.0, math.pi / 2, -math.pi / 2, math.pi])[0]
    expected = [99.0 - x, 20.0 - y, y - 10.0, x - 1.0]  # ahead, right (+y), left (-y), behind
    np.testing.assert_allclose(out, expected, atol=SCALE)


def test_rays_diagonal_and_rotated():
    surf = corridor()
    x, y = 40.0, 15.0
    # facing down the image (yaw = +90 deg): ahead hits y = 20, 45 deg to the left hits y = 20
    out = rays(surf, [x], [y], [math.pi / 2], [0.0, -math.pi / 4, math.pi / 4])[0]
    np.testing.assert_allclose(out, [5.0, 5.0 * math.sqrt(2), 5.0 * math.sqrt(2)], atol=SCALE * 1.5)


def test_rays_capped_at_max_range():
    surf = corridor()
    out = rays(surf, [10.0], [15.0], [0.0], [0.0, math.pi / 2], max_range=30.0)[0]
    assert out[0] == pytest.approx(30.0)
    assert out[1] == pytest.approx(5.0, abs=SCALE)
    assert out.dtype == np.float32


def test_rays_thin_wall_and_outside_grid():
    surf = np.full((100, 100), ASPHALT, np.uint8)  # no walls: the grid edge is the wall
    surf[:, 60] = WALL  # 1-px wall at x = 15 m
    out = rays(surf, [5.0, 20.0], [12.5, 12.5], [0.0, 0.0], [0.0, math.pi], max_range=100.0)
    np.testing.assert_allclose(out[0], [10.0, 5.0], atol=SCALE)
    np.testing.assert_allclose(out[1], [5.0, 4.75], atol=SCALE)
    # a kart inside a wall sees 0
    out = rays(surf, [15.1], [12.5], [0.0], [0.0])
    assert out[0, 0] == 0.0


def _exact_first_wall(surf, x, y, yaw, max_range, scale=SCALE, samples=40000):
    """Brute force: sample the ray every 1/200 px and return where it first enters a wall pixel."""
    t = np.linspace(0.0, max_range, samples * 5)
    px, py = (x + np.cos(yaw) * t) / scale, (y + np.sin(yaw) * t) / scale
    inside = (px >= 0) & (py >= 0) & (px < surf.shape[1]) & (py < surf.shape[0])
    wall = ~inside
    wall[inside] = surf[py[inside].astype(int), px[inside].astype(int)] == WALL
    return t[np.argmax(wall)] if wall.any() else max_range


def test_rays_find_a_wall_corner_they_only_clip():
    """A single wall pixel the ray crosses for a fraction of a pixel near its corner still stops it."""
    surf = np.full((100, 200), ASPHALT, np.uint8)
    surf[40, 100] = WALL  # pixel (100, 40): x 25.0..25.25 m, y 10.0..10.25 m
    yaw = math.atan2(10.0 - 10.3, 25.03 - 5.0)  # from (5, 10.3) through (25.03, 10.0): clips the top-left corner
    out = rays(surf, [5.0], [10.3], [yaw], [0.0], max_range=60.0)[0, 0]
    assert out == pytest.approx(_exact_first_wall(surf, 5.0, 10.3, yaw, 60.0), abs=0.01)
    assert out < 21.0  # not the grid edge 45 m away


def test_rays_match_brute_force_on_a_random_maze():
    rng = np.random.default_rng(3)
    surf = np.where(rng.random((80, 80)) < 0.04, WALL, ASPHALT).astype(np.uint8)
    n = 40
    x, y = rng.uniform(1.0, 19.0, n), rng.uniform(1.0, 19.0, n)
    yaw = rng.uniform(-math.pi, math.pi, n)
    out = rays(surf, x, y, yaw, [0.0, 0.3], max_range=15.0)
    for k in range(n):
        for j, a in enumerate([0.0, 0.3]):
            assert out[k, j] == pytest.approx(_exact_first_wall(surf, x[k], y[k], yaw[k] + a, 15.0), abs=0.01)


def test_compact_field_gives_the_same_rays():
    surf = corridor()
    wd = wall_distance(surf)[None]
    rng = np.random.default_rng(0)
    n = 64
    x, y, yaw = rng.uniform(2.0, 98.0, n), rng.uniform(10.5, 19.5, n), rng.uniform(-math.pi, math.pi, n)
    angles = np.linspace(-1.5, 1.5, 8)
    args = (np.array([SCALE]), np.zeros(n, np.int32), x, y, yaw, angles, 50.0)
    compact = compact_ray_field(wd, SCALE)
    assert compact.dtype == np.uint8 and compact.nbytes * 4 == wd.nbytes
    np.testing.assert_allclose(cast_rays(compact, *args), cast_rays(wd, *args), atol=1e-4)


def test_rays_batched_multi_track():
    a = corridor()
    b = np.full((120, 400), ASPHALT, np.uint8)
    b[:, 200:] = WALL
    wd = np.stack([wall_distance(a, 0.25), wall_distance(b, 0.5)])
    angles, scale = np.array([0.0, 0.5]), np.array([0.25, 0.5])
    out = cast_rays(wd, scale, np.array([0, 1, 1], np.int32), np.array([10.0, 10.0, 60.0]),
                    np.array([15.0, 15.0, 30.0]), np.zeros(3), angles, 150.0)
    assert out.shape == (3, 2)
    assert out[0, 0] == pytest.approx(89.0, abs=0.25)
    assert out[1, 0] == pytest.approx(90.0, abs=0.5)  # track 1: wall at x = 100 m (0.5 m/px)
    assert out[2, 0] == pytest.approx(40.0, abs=0.5)
    single = cast_rays(wd, scale, np.array([1], np.int32), np.array([60.0]), np.array([30.0]), np.zeros(1), angles,
                       150.0)
    np.testing.assert_array_equal(single[0], out[2])


# ----------------------------------------------------------------------------------------------- camera


@pytest.fixture(scope="module")
def world():
    """A 100 m x 100 m field: grass, an asphalt band with kerbs and a wall border."""
    surf = np.full((400, 400), GRASS, np.uint8)
    surf[120:280, :] = ASPHALT
    surf[116:120, :] = KERB
    surf[280:284, :] = KERB
    surf[:8] = WALL
    surf[-8:] = WALL
    surf[:, :8] = WALL
    surf[:, -8:] = WALL
    rng = np.random.default_rng(0)
    rgb = texture(surf)
    rgb = np.clip(rgb.astype(int) + rng.integers(-20, 20, rgb.shape), 0, 255).astype(np.uint8)
    return rgb


def cam(world, **kw):
    return CameraRenderer(world[None], np.array([SCALE]), CameraConfig(**kw))


def render_one(c, x, y, yaw, **kw):
    out = c.empty(1)
    return c.render(np.zeros(1, np.int32), np.array([x]), np.array([y]), np.array([yaw]), out, **kw)[0]


@pytest.mark.parametrize("mode", ["chase", "driver"])
@pytest.mark.parametrize("size,gray", [(84, False), (84, True), (64, False), (96, True), (40, False)])
def test_camera_shapes(world, mode, size, gray):
    c = cam(world, mode=mode, size=size, grayscale=gray)
    out = c.empty(3)
    assert out.shape == (3, size, size, 1 if gray else 3)
    r = c.render(np.zeros(3, np.int32), np.array([50.0, 30.0, 70.0]), np.array([50.0, 40.0, 60.0]),
                 np.array([0.0, 1.0, -2.0]), out)
    assert r is out and r.dtype == np.uint8
    assert r.std() > 5  # not blank
    with pytest.raises(ConfigError):
        c.render(np.zeros(3, np.int32), np.zeros(3), np.zeros(3), np.zeros(3), np.empty((3, size, size, 2), np.uint8))


def test_camera_config_errors(world):
    with pytest.raises(ConfigError):
        cam(world, mode="top")
    with pytest.raises(ConfigError):
        cam(world, size=2)


@pytest.mark.parametrize("mode", ["chase", "driver"])
def test_camera_changes_when_the_kart_turns(world, mode):
    c = cam(world, mode=mode)
    a = render_one(c, 50.0, 40.0, 0.0)
    b = render_one(c, 50.0, 40.0, 0.6)
    assert np.mean(np.any(a != b, axis=-1)) > 0.2


def test_chase_view_geometry(world):
    """Facing +x at y = 40 m: the road (y in [30, 70]) is ahead; grass lies to the left (y < 29)."""
    c = cam(world, mode="chase", draw_self=False)
    img = render_one(c, 50.0, 40.0, 0.0).astype(int)
    S = 84
    # column for a lateral offset r (m): S/2 + r * S / width
    col_left = int(S / 2 + (-15.0) * S / 36.0)  # 15 m to the left = y 25 m = grass
    col_centre = S // 2
    green = img[20, col_left]
    grey = img[20, col_centre]
    assert green[1] > green[0] + 50  # grass is green
    assert abs(grey[0] - grey[1]) < 45 and grey[1] < 130  # asphalt is grey
    # facing down the image (+y) the left side of the view is +x
    img2 = render_one(c, 50.0, 25.0, math.pi / 2).astype(int)
    # ahead (y > 29 m) is asphalt/kerb, behind the kart is grass
    assert img2[10, S // 2][1] < 130 and img2[S - 2, S // 2][1] > img2[S - 2, S // 2][0] + 50


def test_outside_texture_is_black(world):
    c = cam(world, mode="chase", draw_self=False)
    img = render_one(c, 3.0, 50.0, math.pi)  # facing out of the image at its left edge
    assert np.all(img[:30] == 0)


def test_ego_sprite_at_bottom_centre(world):
    cfg = CameraConfig(mode="chase")
    c = cam(world, mode="chase")
    img = render_one(c, 50.0, 40.0, 0.3)
    S = cfg.size
    row = int(S * cfg.chase_ahead_m / (cfg.chase_ahead_m + cfg.chase_behind_m))
    col = S // 2
    assert row > S * 0.75
    patch = img[row - 2:row + 2, col - 1:col + 1].reshape(-1, 3)
    assert any(tuple(p) == cfg.self_rgb for p in patch)
    # the sprite is at the same place whatever the pose
    img2 = render_one(c, 20.0, 70.0, -2.0)
    ii, jj = c.ego_pixels
    np.testing.assert_array_equal(img[ii, jj], img2[ii, jj])
    assert len(ii) >= 6
    # no sprite when disabled
    c2 = cam(world, mode="chase", draw_self=False)
    img3 = render_one(c2, 50.0, 40.0, 0.3)
    assert not np.all(img3[ii, jj] == img[ii, jj])


def test_grayscale_is_luma_of_rgb(world):
    rgb_cam = cam(world, mode="chase")
    gray_cam = cam(world, mode="chase", grayscale=True)
    a = render_one(rgb_cam, 50.0, 40.0, 0.4)
    b = render_one(gray_cam, 50.0, 40.0, 0.4)
    ref = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)
    # mip levels are filtered in each colour space separately: allow small rounding differences
    assert np.mean(np.abs(ref.astype(int) - b[..., 0].astype(int))) < 2.0
    np.testing.assert_array_equal(luma(np.array([[255, 0, 0]], np.uint8)), [76])


@pytest.mark.parametrize("mode", ["chase", "driver"])
def test_other_kart_is_drawn(world, mode):
    cfg = CameraConfig(mode=mode)
    c = cam(world, mode=mode)
    x, y, yaw = 50.0, 40.0, 0.0
    others = np.array([[x + 10.0, y + 1.0, 0.5, 0.0]])
    img = render_one(c, x, y, yaw, others=others)
    mask = np.all(img == np.array(cfg.other_rgb, np.uint8), axis=-1) | \
        np.all(img == np.array(cfg.other_nose_rgb, np.uint8), axis=-1)
    assert mask.sum() >= 3
    rows, cols = np.nonzero(mask)
    assert cols.mean() > cfg.size / 2  # 1 m to the right
    assert rows.mean() < cfg.size * 0.8  # ahead of the kart
    # not drawn when on another track, nor when behind (driver) / out of view
    none = render_one(c, x, y, yaw)
    other_track = render_one(c, x, y, yaw, others=np.array([[x + 10.0, y + 1.0, 0.5, 1.0]]))
    np.testing.assert_array_equal(other_track, none)
    far = render_one(c, x, y, yaw, others=np.array([[x - 30.0, y, 0.0, 0.0]]))
    np.testing.assert_array_equal(far, none)


def test_others_skip_self(world):
    c = cam(world, mode="chase")
    n = 3
    x = np.array([50.0, 60.0, 50.0])
    y = np.array([40.0, 41.0, 60.0])
    yaw = np.zeros(n)
    t = np.zeros(n, np.int32)
    all_karts = np.stack([x, y, yaw, t], 1)
    a = c.render(t, x, y, yaw, c.empty(n), others=all_karts, self_rows=np.arange(n))
    b = c.render(t, x, y, yaw, c.empty(n), others=all_karts)  # self found by position
    np.testing.assert_array_equal(a, b)
    plain = c.render(t, x, y, yaw, c.empty(n))
    ii, jj = c.ego_pixels
    np.testing.assert_array_equal(a[:, ii, jj], plain[:, ii, jj])  # own sprite untouched
    assert np.any(a[0] != plain[0])  # kart 1 is 10 m ahead of kart 0
    # kart 2 sees kart 0 20 m and kart 1 19 m to its left: outside its 18 m half-width view
    np.testing.assert_array_equal(a[2], plain[2])


@pytest.mark.parametrize("mode", ["chase", "driver"])
@pytest.mark.parametrize("gray", [False, True])
def test_batched_render_equals_one_at_a_time(world, mode, gray):
    c = cam(world, mode=mode, grayscale=gray)
    rng = np.random.default_rng(0)
    n = 7
    x = rng.uniform(5, 95, n)
    y = rng.uniform(5, 95, n)
    yaw = rng.uniform(-4, 4, n)
    t = np.zeros(n, np.int32)
    others = np.stack([x, y, yaw, t], 1)
    batch = c.render(t, x, y, yaw, c.empty(n), others=others, self_rows=np.arange(n))
    for k in range(n):
        one = c.render(t[k:k + 1], x[k:k + 1], y[k:k + 1], yaw[k:k + 1], c.empty(1), others=others,
                       self_rows=np.array([k]))
        np.testing.assert_array_equal(batch[k], one[0])


def test_driver_view_has_sky_and_ground(world):
    cfg = CameraConfig(mode="driver")
    c = cam(world, mode="driver")
    img = render_one(c, 50.0, 40.0, 0.0)
    horizon = int(cfg.horizon * cfg.size)
    assert np.all(img[: horizon - 1] == np.array(cfg.sky_rgb, np.uint8))
    assert not np.any(np.all(img[horizon + 3:] == np.array(cfg.sky_rgb, np.uint8), axis=-1))
    # the bottom rows show the ground right in front (asphalt, grey)
    bottom = img[-1, cfg.size // 2].astype(int)
    assert abs(bottom[0] - bottom[1]) < 45


def test_multi_track_camera(world):
    other = world.copy()
    other[:] = (200, 0, 200)
    c = CameraRenderer(np.stack([world, other]), np.array([SCALE, 0.5]), CameraConfig(draw_self=False))
    out = c.render(np.array([0, 1], np.int32), np.array([50.0, 50.0]), np.array([40.0, 40.0]), np.zeros(2),
                   c.empty(2))
    assert np.all(out[1][:40] == (200, 0, 200))
    assert not np.all(out[0][:40] == (200, 0, 200))
