"""Tyre wear, weather, damage and kart-to-kart collisions in the physics (synthetic grids, no track)."""

import math

import cv2
import numpy as np
import pytest

from kartsim.errors import ConfigError
from kartsim.sim.config import WEATHER, KartConfig
from kartsim.sim.physics import ASPHALT, KART_COLUMNS, WALL, KartPhysics, KartState, weather_grip

FLOAT_COLUMNS = [c.name for c in KART_COLUMNS.columns if c.dtype is np.float64]

SCALE = 0.25
G = 9.81


def physics(h=800, w=800, cfg=None, walls=True):
    surf = np.full((h, w), ASPHALT, np.uint8)
    if walls:
        surf[0, :] = surf[-1, :] = WALL
        surf[:, 0] = surf[:, -1] = WALL
    wd = cv2.distanceTransform(np.pad((surf != WALL).astype(np.uint8), 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
    return KartPhysics(cfg or KartConfig(), surf[None], (wd * SCALE).astype(np.float32)[None], np.array([SCALE]))


@pytest.fixture(scope="module")
def field():
    return physics()  # 200 m x 200 m


def kart(x=100.0, y=100.0, yaw=0.0, vx=0.0, n=1):
    st = KartState(n)
    st.reset(np.arange(n), x, y, yaw)
    st.vx[:] = vx
    st.speed[:] = np.abs(st.vx)
    return st


def peak_lateral(ph, st, steps=150):
    best = 0.0
    for _ in range(steps):
        ph.step(st, np.clip(15.0 - st.vx, -1, 1) * 0.5 + 0.3, 0.35, 1)
        best = max(best, float(np.max(st.ay)))
    return best


def braking_distance(ph, st):
    x0 = st.x.copy()
    for _ in range(500):
        ph.step(st, -1.0, 0.0, 1)
        if st.vx[0] <= 0.0:
            break
    return float(st.x[0] - x0[0])


# ------------------------------------------------------------------------------------------ defaults


def test_defaults_keep_new_dry_undamaged_karts_apart():
    st = KartState(4)
    assert np.all(st.tyre_condition == 1.0) and np.all(st.wetness == 0.0) and np.all(st.damage == 0.0)
    assert st.world.tolist() == [0, 1, 2, 3] and not st.collisions_possible()
    cfg = KartConfig()
    assert cfg.tyre_start_condition == 1.0
    assert float(weather_grip(cfg, WEATHER["dry"])) == 1.0
    with pytest.raises(ConfigError):
        KartConfig(wet_grip=1.5).validate()
    with pytest.raises(ConfigError):
        KartConfig(tyre_start_condition=-0.1).validate()


# ---------------------------------------------------------------------------------------------- wear


def test_tyres_wear_and_sliding_wears_faster(field):
    gentle = kart(vx=12.0)
    for _ in range(250):  # 5 s of a steady ~1 g turn
        field.step(gentle, 0.35, 0.12, 1)
    slide = kart(vx=20.0)
    for _ in range(250):  # 5 s of full lock and throttle: sliding
        field.step(slide, 1.0, 1.0, 1)
    assert 0.99 < gentle.tyre_condition[0] < 1.0
    assert slide.tyre_condition[0] < 1.0 - 5 * (1.0 - gentle.tyre_condition[0])
    straight = kart(vx=10.0)
    for _ in range(250):
        field.step(straight, 0.2, 0.0, 1)
    assert straight.tyre_condition[0] > gentle.tyre_condition[0]


def test_worn_tyres_have_less_grip(field):
    new = kart(vx=15.0)
    worn = kart(vx=15.0)
    worn.reset([0], 100.0, 100.0, 0.0, tyre_condition=0.2)  # start on worn tyres
    worn.vx[:] = 15.0
    assert worn.tyre_condition[0] == 0.2
    a_new, a_worn = peak_lateral(field, new), peak_lateral(field, worn)
    assert a_worn < 0.85 * a_new
    cfg = KartConfig()
    assert a_worn == pytest.approx(a_new * (1 - cfg.tyre_worn_grip_loss * 0.8), rel=0.08)


# ------------------------------------------------------------------------------------------- weather


def test_wet_track_has_less_grip_and_longer_braking(field):
    lat, dist = {}, {}
    for name, wet in WEATHER.items():
        st = kart(vx=15.0)
        st.wetness[:] = wet
        lat[name] = peak_lateral(field, st)
        st = kart(x=20.0, vx=20.0)
        st.wetness[:] = wet
        dist[name] = braking_distance(field, st)
        assert st.wetness[0] == wet  # kept through steps
    assert lat["dry"] > lat["damp"] > lat["wet"]
    assert lat["wet"] < 0.75 * lat["dry"]
    assert dist["dry"] < dist["damp"] < dist["wet"]
    assert dist["wet"] > 1.4 * dist["dry"]
    # the wetness survives a reset (it is the track's, not the kart's)
    st.reset([0], 10.0, 10.0, 0.0)
    assert st.wetness[0] == 1.0


# -------------------------------------------------------------------------------------------- damage


def test_wall_impacts_damage_the_kart_and_bend_the_steering():
    ph = physics(400, 400)  # 100 m box
    # a slow touch does no damage
    st = kart(x=95.0, y=50.0, vx=3.0)
    for _ in range(100):
        ph.step(st, 0.1, 0.0, 1)
    assert st.wall_hit.any() or st.x[0] > 98.0
    assert st.damage[0] == 0.0
    # a hard hit with the wall on the kart's right (heading up the image, wall at x = 100 m)
    st = kart(x=92.0, y=50.0, yaw=-math.pi / 2 + 0.6, vx=20.0)
    impacts = []
    for _ in range(60):
        ph.step(st, 1.0, 0.0, 1)
        impacts.append(st.impact_speed[0])
    cfg = KartConfig()
    assert max(impacts) > cfg.damage_threshold_mps + 2.0
    assert 0.0 < st.damage[0] <= 1.0
    assert st.steer_bias[0] > 0.0  # pulls to the right, the side that was hit
    # a damaged kart straight-lines to the right with the wheel centred and is slower
    field = physics()
    hurt = kart(x=20.0, y=100.0)
    hurt.damage[:] = 0.8
    hurt.steer_bias[:] = 0.8 * cfg.damage_steer_pull_rad
    ok = kart(x=20.0, y=100.0)
    for _ in range(200):
        field.step(hurt, 1.0, 0.0, 1)
        field.step(ok, 1.0, 0.0, 1)
    assert hurt.yaw[0] > 0.1 and abs(ok.yaw[0]) < 1e-9
    assert hurt.speed[0] < ok.speed[0] - 1.0
    # a reset repairs the kart
    hurt.reset([0], 20.0, 100.0, 0.0)
    assert hurt.damage[0] == 0.0 and hurt.steer_bias[0] == 0.0


# ----------------------------------------------------------------------------------------- collisions


def pair_distances(st):
    d = np.hypot(st.x[:, None] - st.x[None, :], st.y[:, None] - st.y[None, :])
    return d[np.triu_indices(st.n, 1)]


def test_head_on_collision_bounces_without_overlap(field):
    st = kart(n=2)
    st.reset([0, 1], [90.0, 110.0], [100.0, 100.0], [0.0, math.pi])
    st.vx[:] = 10.0
    st.world[:] = 0
    assert st.collisions_possible()
    cfg = KartConfig()
    touched = False
    for _ in range(100):
        field.step(st, 0.0, 0.0, 5)
        assert pair_distances(st)[0] >= 2 * cfg.radius_m - 1e-6
        touched |= bool(st.kart_hit.any())
        if st.kart_hit.any():
            assert st.kart_impact_speed[0] == pytest.approx(st.kart_impact_speed[1])
    assert touched
    # they bounced: moving apart now, slower than before
    gx = st.vx * np.cos(st.yaw)
    assert gx[0] < 0.0 < gx[1]
    assert np.all(st.speed < 10.0 * cfg.kart_restitution + 1.0)
    assert np.all(st.damage > 0)  # closing speed 20 m/s is well above the threshold


def test_karts_in_different_worlds_pass_through_each_other(field):
    st = kart(n=2)
    st.reset([0, 1], [90.0, 110.0], [100.0, 100.0], [0.0, math.pi])
    st.vx[:] = 10.0  # default worlds 0 and 1
    for _ in range(30):
        field.step(st, 0.0, 0.0, 5)
    assert not st.kart_hit.any()
    assert st.x[0] > 110.0 and st.x[1] < 90.0


def test_rear_end_push_transfers_momentum(field):
    st = kart(n=2)
    st.reset([0, 1], [90.0, 95.0], [100.0, 100.0], [0.0, 0.0])
    st.vx[:] = [15.0, 5.0]
    st.world[:] = 7
    for _ in range(10):
        field.step(st, 0.0, 0.0, 5)
    assert st.kart_hit.any() or st.vx[1] > 6.0
    assert st.vx[1] > 6.0 and st.vx[0] < 14.0  # the one hit from behind was pushed
    assert np.all(pair_distances(st) >= 2 * KartConfig().radius_m - 1e-6)


def test_crowd_of_karts_never_overlaps_nor_nans():
    ph = physics(160, 160)  # a 40 m box: lots of contacts and walls
    n = 14
    rng = np.random.default_rng(4)
    st = KartState(n)
    gx, gy = np.meshgrid(np.arange(4) * 8.0 + 8.0, np.arange(4) * 8.0 + 8.0)
    st.reset(np.arange(n), gx.ravel()[:n], gy.ravel()[:n], rng.uniform(-3, 3, n))
    st.world[:] = 0
    hits = 0
    for _ in range(400):
        ph.step(st, rng.uniform(-0.3, 1.0, n), rng.uniform(-1, 1, n), 5)
        for name in FLOAT_COLUMNS:
            assert np.all(np.isfinite(getattr(st, name))), name
        assert pair_distances(st).min() >= 2 * KartConfig().radius_m - 1e-3
        hits += int(st.kart_hit.sum())
        assert np.all((st.damage >= 0) & (st.damage <= 1))
    assert hits > 10
    assert np.all((st.x > 0) & (st.x < 40) & (st.y > 0) & (st.y < 40))


def test_collisions_only_on_the_same_track():
    a = np.full((200, 200), ASPHALT, np.uint8)
    wd = np.full((200, 200), 20.0, np.float32)
    ph = KartPhysics(KartConfig(), np.stack([a, a]), np.stack([wd, wd]), np.array([SCALE, SCALE]))
    st = KartState(2)
    st.track_idx[:] = [0, 1]
    st.world[:] = 0
    st.reset([0, 1], [20.0, 21.0], [25.0, 25.0], [0.0, 0.0])
    assert not st.collisions_possible()
    ph.step(st, 0.0, 0.0, 1)
    assert not st.kart_hit.any() and st.x[1] - st.x[0] == pytest.approx(1.0)


# -------------------------------------------------------------------------------------------- camera


@pytest.mark.parametrize("mode", ["chase", "driver"])
@pytest.mark.parametrize("gray", [False, True])
def test_weather_changes_the_camera_image(mode, gray):
    from kartsim.sim.sensors import CameraConfig, CameraRenderer

    rng = np.random.default_rng(0)
    rgb = np.full((1, 400, 400, 3), 108, np.uint8)
    rgb[0, :, :200] = (70, 140, 55)
    rgb[0] += rng.integers(0, 20, (400, 400, 1), dtype=np.uint8)
    cam = CameraRenderer(rgb, np.array([0.25]), CameraConfig(mode=mode, size=64, grayscale=gray))
    args = (np.zeros(3, np.int64), np.full(3, 50.0), np.full(3, 50.0), np.zeros(3))
    dry = cam.render(*args)
    same = cam.render(*args, wetness=np.zeros(3))
    np.testing.assert_array_equal(dry, same)  # dry = no effect
    img = cam.render(*args, wetness=np.array([0.0, 0.5, 1.0]), frame=3)
    np.testing.assert_array_equal(img[0], dry[0])
    assert img[1].mean() < dry[1].mean() - 5  # damp: darker
    assert img[2].mean() < img[1].mean()  # wet: darker still
    # rain streaks: bright pixels that the dry image does not have, moving between frames
    assert (img[2].astype(int) - dry[2].astype(int) > 20).sum() > 10
    assert (img[1].astype(int) - dry[1].astype(int) > 20).sum() == 0  # no rain when damp
    later = cam.render(*args, wetness=np.array([0.0, 0.5, 1.0]), frame=4)
    assert not np.array_equal(later[2], img[2])
    np.testing.assert_array_equal(later[1], img[1])


def test_rays_see_other_karts():
    from kartsim.sim.sensors import cast_rays

    surf = np.full((400, 400), ASPHALT, np.uint8)
    surf[:, -1] = WALL
    wd = cv2.distanceTransform(np.pad((surf != WALL).astype(np.uint8), 1), cv2.DIST_L2, 5)[1:-1, 1:-1] * SCALE
    wd = wd.astype(np.float32)[None]
    x, y = np.array([20.0, 40.0]), np.array([50.0, 50.0])
    yaw = np.zeros(2)
    angles = np.array([0.0, 0.5])
    plain = cast_rays(wd, np.array([SCALE]), np.zeros(2, np.int64), x, y, yaw, angles, 200.0)
    others = np.column_stack([x, y, yaw, np.zeros(2)])
    seen = cast_rays(wd, np.array([SCALE]), np.zeros(2, np.int64), x, y, yaw, angles, 200.0, others=others,
                     self_rows=np.arange(2))
    assert seen[0, 0] == pytest.approx(20.0 - 0.7, abs=1e-4)  # kart 1 straight ahead
    assert seen[0, 1] == plain[0, 1]  # the slanted ray misses it
    np.testing.assert_array_equal(seen[1], plain[1])  # kart 0 is behind kart 1
    # karts on another track are invisible
    others[:, 3] = 1
    far = cast_rays(wd, np.array([SCALE]), np.zeros(2, np.int64), x, y, yaw, angles, 200.0, others=others,
                    self_rows=np.arange(2))
    np.testing.assert_array_equal(far, plain)
