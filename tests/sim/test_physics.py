"""Acceptance tests of the kart physics on small synthetic grids (no kartsim.sim.track)."""

import math
import pickle

import cv2
import numpy as np
import pytest

from kartsim.errors import ConfigError
from kartsim.sim.config import KartConfig
from kartsim.sim.physics import ASPHALT, GRASS, KART_COLUMNS, KERB, WALL, KartPhysics, KartState

FLOAT_COLUMNS = [c.name for c in KART_COLUMNS.columns if c.dtype is np.float64]

SCALE = 0.25
G = 9.81


def make_grid(h, w, fill=ASPHALT, border=True):
    surf = np.full((h, w), fill, np.uint8)
    if border:
        surf[0, :] = surf[-1, :] = WALL
        surf[:, 0] = surf[:, -1] = WALL
    return surf


def wall_distance(surf, scale=SCALE):
    # the image border counts as wall: pad with a wall ring before the transform
    padded = np.pad((surf != WALL).astype(np.uint8), 1)
    wd = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]
    return (wd * scale).astype(np.float32)


def make_physics(surf, cfg=None, scale=SCALE):
    return KartPhysics(cfg or KartConfig(), surf[None], wall_distance(surf, scale)[None], np.array([scale]))


@pytest.fixture(scope="module")
def open_field():
    """A large open asphalt field (1 km x 1 km)."""
    return make_physics(make_grid(4000, 4000))


def one_kart(x, y, yaw, vx=0.0):
    st = KartState(1)
    st.reset([0], x, y, yaw)
    st.vx[:] = vx
    st.speed[:] = abs(vx)
    return st


def run(ph, st, throttle, steer, steps, substeps=1):
    for _ in range(steps):
        ph.step(st, throttle, steer, substeps)


# ---------------------------------------------------------------------------------------------- config


def test_config_defaults_are_a_kart():
    cfg = KartConfig()
    assert 140 <= cfg.mass_kg <= 180
    assert 1.0 <= cfg.wheelbase_m <= 1.1
    assert 0.35 <= cfg.max_steer_rad <= 0.45
    assert cfg.dt == 0.02
    assert KartConfig.from_dict(cfg.to_dict()) == cfg


def test_config_errors_are_kartsim_errors():
    with pytest.raises(ConfigError):
        KartConfig(mass_kg=-1).validate()
    with pytest.raises(ConfigError):
        KartConfig.from_dict({"mass": 160})
    surf = make_grid(20, 20)
    with pytest.raises(ConfigError):
        KartPhysics(KartConfig(), surf[None], wall_distance(surf)[None, :10], np.array([SCALE]))
    ph = make_physics(surf)
    st = KartState(2)
    with pytest.raises(ConfigError):
        ph.step(st, np.zeros(3), np.zeros(2), 1)
    with pytest.raises(ConfigError):
        ph.step(st, np.zeros(2), np.zeros(2), 0)


def test_reset_zeroes_motion():
    st = KartState(3)
    st.vx[:] = 5
    st.steer[:] = 0.3
    st.wall_hit[:] = True
    st.reset(np.array([0, 2]), [1.0, 2.0], [3.0, 4.0], [0.0, 4.0])
    assert st.x.tolist() == [1.0, 0.0, 2.0]
    assert st.vx.tolist() == [0.0, 5.0, 0.0]
    assert st.steer[0] == 0.0 and st.steer[1] == 0.3
    assert not st.wall_hit[0] and st.wall_hit[1]
    assert -math.pi <= st.yaw[2] < math.pi and math.isclose(math.cos(st.yaw[2]), math.cos(4.0))


# ------------------------------------------------------------------------------------------ straight line


def top_speed(ph, x, y, steps=1500):
    st = one_kart(x, y, 0.0)
    run(ph, st, 1.0, 0.0, steps)
    return st


def test_top_speed_on_asphalt(open_field):
    st = top_speed(open_field, 10.0, 500.0)
    assert 22.0 <= st.vx[0] <= 28.0
    assert abs(st.vy[0]) < 1e-6 and abs(st.yaw[0]) < 1e-9
    assert st.surface[0] == ASPHALT
    assert abs(st.ax[0]) < 0.1  # reached a steady state
    assert st.speed[0] == pytest.approx(st.vx[0])


def test_acceleration_is_kart_like(open_field):
    st = one_kart(10.0, 500.0, 0.0)
    run(open_field, st, 1.0, 0.0, 200)  # 4 s
    assert 10.0 <= st.vx[0] <= 20.0  # 0-50 km/h in about 4 s
    assert st.x[0] > 10.0


def test_grass_slows_the_kart():
    asphalt = make_physics(make_grid(400, 4000, ASPHALT))
    grass = make_physics(make_grid(400, 4000, GRASS))
    sa = top_speed(asphalt, 10.0, 50.0)
    sg = top_speed(grass, 10.0, 50.0)
    assert sg.surface[0] == GRASS
    assert sg.vx[0] < 0.85 * sa.vx[0]
    # coasting from the same speed loses more speed on grass
    a = one_kart(10.0, 50.0, 0.0, 15.0)
    g = one_kart(10.0, 50.0, 0.0, 15.0)
    run(asphalt, a, 0.0, 0.0, 100)
    run(grass, g, 0.0, 0.0, 100)
    assert g.vx[0] < a.vx[0] - 1.0
    assert g.ax[0] < a.ax[0] < 0


def test_grass_has_less_grip():
    asphalt = make_physics(make_grid(2000, 2000, ASPHALT))
    grass = make_physics(make_grid(2000, 2000, GRASS))
    ays = []
    for ph in (asphalt, grass):
        st = one_kart(250.0, 250.0, 0.0, 15.0)
        best = 0.0
        for _ in range(150):
            ph.step(st, 0.3, 1.0, 1)
            best = max(best, st.ay[0])
        ays.append(best)
    assert ays[1] < 0.4 * ays[0]
    assert 0.25 * G <= ays[1] <= 0.6 * G


def test_kerb_is_road_like():
    kerb = make_physics(make_grid(400, 4000, KERB))
    sk = top_speed(kerb, 10.0, 50.0)
    sa = top_speed(make_physics(make_grid(400, 4000, ASPHALT)), 10.0, 50.0)
    assert sk.surface[0] == KERB
    assert 0.85 * sa.vx[0] < sk.vx[0] < sa.vx[0]


def test_braking_then_reverse(open_field):
    st = one_kart(200.0, 500.0, 0.0, 20.0)
    x0 = st.x[0]
    steps = 0
    decel = []
    while st.vx[0] > 0.0 and steps < 500:
        open_field.step(st, -1.0, 0.0, 1)
        decel.append(-st.ax[0])
        steps += 1
    dist = st.x[0] - x0
    # 1.3-2.2 g from 20 m/s: 9 to 16 m
    assert 9.0 <= dist <= 16.0, dist
    assert 1.4 * G <= max(decel) <= 2.2 * G
    run(open_field, st, -1.0, 0.0, 500)
    assert st.vx[0] < -1.0
    assert st.vx[0] >= -KartConfig().max_reverse_speed - 1e-9
    assert st.x[0] < x0 + dist  # went backwards
    assert st.throttle[0] == -1.0


def test_coasting_stops_without_reversing(open_field):
    st = one_kart(10.0, 500.0, 0.0, 5.0)
    run(open_field, st, 0.0, 0.0, 3000)
    assert st.vx[0] == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------------------------------------- turning


def test_steer_right_is_positive_yaw_rate(open_field):
    st = one_kart(500.0, 500.0, 0.0, 8.0)
    run(open_field, st, 0.2, 0.5, 25)
    assert st.yaw_rate[0] > 0 and st.yaw[0] > 0
    assert st.y[0] > 500.0  # yaw 0 faces +x; turning right goes down the image (+y)
    assert st.ay[0] > 0  # lateral acceleration towards the driver's right
    assert st.steer[0] > 0


def test_low_speed_turning_radius_matches_bicycle(open_field):
    cfg = KartConfig()
    st = one_kart(500.0, 500.0, 0.0)
    # creep at ~2-4 m/s with full lock until steady, then measure the circle
    for _ in range(300):
        open_field.step(st, float(np.clip(2.0 * (3.0 - st.speed[0]), 0, 1)), 1.0, 1)
    xs, ys = [], []
    for _ in range(400):
        open_field.step(st, float(np.clip(2.0 * (3.0 - st.speed[0]), 0, 1)), 1.0, 1)
        xs.append(st.x[0])
        ys.append(st.y[0])
    xs, ys = np.array(xs), np.array(ys)
    # least-squares circle fit
    A = np.stack([xs, ys, np.ones_like(xs)], 1)
    sol = np.linalg.lstsq(A, -(xs ** 2 + ys ** 2), rcond=None)[0]
    cx, cy = -sol[0] / 2, -sol[1] / 2
    radius = math.sqrt(cx ** 2 + cy ** 2 - sol[2])
    expected = cfg.wheelbase_m / math.tan(cfg.max_steer_rad)
    assert abs(radius - expected) / expected < 0.15, (radius, expected)
    assert st.speed[0] / st.yaw_rate[0] == pytest.approx(radius, rel=0.1)


def test_lateral_grip_at_the_limit_is_about_2g(open_field):
    best = 0.0
    for steer in (0.15, 0.2, 0.3):
        st = one_kart(500.0, 500.0, 0.0, 8.0)
        target = 8.0
        for _ in range(3000):
            target += 0.01  # slowly faster on a steady steering input
            open_field.step(st, float(np.clip(target - st.vx[0], -1, 1)), steer, 1)
            if abs(st.slip_angle[0]) < 0.2:
                best = max(best, st.ay[0])
    assert 1.6 * G <= best <= 2.4 * G, best / G


def test_tyres_saturate(open_field):
    # at speed, full lock cannot produce the kinematic lateral acceleration (v^2 tan(d) / L)
    st = one_kart(500.0, 500.0, 0.0, 20.0)
    peak = 0.0
    for _ in range(50):
        open_field.step(st, 0.0, 1.0, 1)
        peak = max(peak, abs(st.ay[0]))
    assert peak < 2.6 * G


def test_spin_is_possible(open_field):
    # full lock while braking hard at speed spins the kart
    st = one_kart(500.0, 500.0, 0.0, 25.0)
    max_slip = 0.0
    for _ in range(100):
        open_field.step(st, -1.0, 1.0, 1)
        if st.vx[0] > 0.5 or abs(st.vy[0]) > 0.5:
            max_slip = max(max_slip, abs(st.slip_angle[0]))
    assert max_slip > 1.0
    # full throttle and full lock at top speed slides the kart (large body slip and yaw rate)
    st = one_kart(500.0, 500.0, 0.0, 25.0)
    max_slip = max_yaw_rate = 0.0
    for _ in range(100):
        open_field.step(st, 1.0, 1.0, 1)
        max_slip = max(max_slip, abs(st.slip_angle[0]))
        max_yaw_rate = max(max_yaw_rate, abs(st.yaw_rate[0]))
    assert max_slip > 0.05 and max_yaw_rate > 1.0


def test_steering_rate_limit(open_field):
    cfg = KartConfig()
    st = one_kart(500.0, 500.0, 0.0, 10.0)
    open_field.step(st, 0.0, 1.0, 1)
    assert 0 < st.steer[0] <= cfg.steer_rate_rad_s * cfg.dt + 1e-9
    prev = st.steer[0]
    for _ in range(20):
        open_field.step(st, 0.0, -1.0, 1)
        assert abs(st.steer[0] - prev) <= cfg.steer_rate_rad_s * cfg.dt + 1e-9
        prev = st.steer[0]
    assert st.steer[0] == pytest.approx(-cfg.max_steer_rad)
    open_field.step(st, 0.0, -5.0, 1)  # commands are clipped to [-1, 1]
    assert st.steer[0] == pytest.approx(-cfg.max_steer_rad)


def test_substeps_equal_repeated_steps(open_field):
    a = one_kart(500.0, 500.0, 0.3, 12.0)
    b = a.copy()
    open_field.step(a, 0.7, 0.4, 5)
    for _ in range(5):
        open_field.step(b, 0.7, 0.4, 1)
    for name in ("x", "y", "yaw", "vx", "vy", "yaw_rate", "steer"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------------------------------------ walls


def thin_wall_world():
    """A 50 m x 50 m box with a 1-pixel (0.25 m) wall at x = 25 m and one at y = 25 m right side."""
    surf = make_grid(200, 200)
    surf[:, 100] = WALL  # vertical 1-px wall: x in [25, 25.25)
    return make_physics(surf)


@pytest.mark.parametrize("speed", [25.0, 40.0, 60.0])
@pytest.mark.parametrize("angle", [0.0, 0.5, 1.2, 1.45])
def test_no_tunnelling_through_thin_walls(speed, angle):
    ph = thin_wall_world()
    # drive towards the wall at x = 25 m; angle from the wall normal (1.45 rad = shallow, 6 deg)
    st = one_kart(22.0 if angle > 0 else 10.0, 5.0 if angle > 0 else 25.0, angle, speed)
    hit = False
    impact = 0.0
    for _ in range(100):
        ph.step(st, 1.0, 0.0, 1)
        assert st.x[0] < 25.0 - 0.5, "kart went through the wall"
        hit |= bool(st.wall_hit[0])
        impact = max(impact, st.impact_speed[0])
        if st.y[0] > 45.0:
            break
    assert hit
    normal_speed = speed * math.cos(angle)
    assert impact == pytest.approx(normal_speed, rel=0.15, abs=1.0)
    assert st.speed[0] < speed


def test_head_on_wall_loses_speed_and_bounces():
    ph = thin_wall_world()
    st = one_kart(20.0, 25.0, 0.0, 40.0)
    hit_step = None
    for i in range(30):
        ph.step(st, 0.0, 0.0, 1)
        if st.wall_hit[0] and hit_step is None:
            hit_step = i
            assert st.impact_speed[0] > 30.0
            assert st.vx[0] < 0  # bounced back
            assert abs(st.vx[0]) <= 0.35 * 40.0
    assert hit_step is not None
    assert st.x[0] < 25.0 - KartConfig().radius_m + 0.05


def test_outside_the_grid_is_wall():
    surf = make_grid(100, 100, border=False)  # no wall pixels at all
    ph = make_physics(surf)
    st = one_kart(20.0, 12.5, math.pi, 30.0)
    for _ in range(100):
        ph.step(st, 1.0, 0.0, 1)
        assert st.x[0] > 0.0
    assert st.wall_hit.any() or st.x[0] >= KartConfig().radius_m - 0.05


def test_karts_stay_inside_a_ring_with_random_inputs():
    surf = make_grid(240, 240)
    surf[60:180, 60:180] = WALL  # square ring road 15 m wide
    ph = make_physics(surf)
    wd = wall_distance(surf)
    n = 64
    rng = np.random.default_rng(1)
    st = KartState(n)
    st.reset(np.arange(n), rng.uniform(3, 12, n), rng.uniform(3, 57, n), rng.uniform(-3, 3, n))
    for _ in range(1500):
        ph.step(st, rng.uniform(-0.2, 1, n), rng.uniform(-1, 1, n), 2)
        assert np.all(np.isfinite(st.x)) and np.all(np.isfinite(st.vx))
    col = (st.x / SCALE).astype(int)
    row = (st.y / SCALE).astype(int)
    assert np.all(wd[row, col] > 0.3)


# ---------------------------------------------------------------------------------------------- batching


def test_batched_equals_one_at_a_time():
    surf = make_grid(400, 400)
    surf[200:, 150] = WALL
    surf[100:140, 250:300] = GRASS
    surf[300:310, 250:380] = KERB
    ph = make_physics(surf)
    n = 12
    rng = np.random.default_rng(3)
    batch = KartState(n)
    batch.reset(np.arange(n), rng.uniform(10, 90, n), rng.uniform(10, 90, n), rng.uniform(-3, 3, n))
    batch.vx[:] = rng.uniform(0, 30, n)
    singles = [batch.subset([k]) for k in range(n)]
    for _ in range(60):
        thr = rng.uniform(-1, 1, n)
        steer = rng.uniform(-1, 1, n)
        ph.step(batch, thr, steer, 3)
        for k in range(n):
            ph.step(singles[k], thr[k:k + 1], steer[k:k + 1], 3)
    for name in [c.name for c in KART_COLUMNS.columns if c.name not in ("world", "kart_hit")]:
        got = np.concatenate([getattr(s, name) for s in singles])
        np.testing.assert_array_equal(getattr(batch, name), got, err_msg=name)


def test_multi_track_stack_with_different_scales():
    a = make_grid(200, 200)  # 0.25 m/px: 50 m box
    b = make_grid(200, 200, GRASS)
    b[:, 100:] = WALL  # 0.5 m/px: left half open, 50 m x 100 m of grass
    surf = np.stack([a, b])
    wd = np.stack([wall_distance(a, 0.25), wall_distance(b, 0.5)])
    ph = KartPhysics(KartConfig(), surf, wd, np.array([0.25, 0.5]))
    st = KartState(2)
    st.track_idx[:] = [0, 1]
    st.reset(np.arange(2), [10.0, 10.0], [25.0, 25.0], [0.0, 0.0])
    run(ph, st, 1.0, 0.0, 300)
    assert st.surface.tolist() == [ASPHALT, GRASS]
    assert st.x[0] < 50.0 and st.x[1] < 50.0  # track 1's wall is at x = 50 m
    assert st.wall_hit[0] or st.x[0] > 48.0 - 0.7
    assert st.x[1] > 30.0


# ------------------------------------------------------------------------------------------- robustness


def test_no_nan_at_zero_speed_with_random_inputs():
    ph = make_physics(make_grid(200, 200))
    n = 32
    st = KartState(n)
    st.reset(np.arange(n), np.full(n, 25.0), np.full(n, 25.0), np.linspace(-3, 3, n))
    rng = np.random.default_rng(0)
    ph.step(st, np.zeros(n), np.zeros(n), 1)
    assert np.all(st.x == 25.0) and np.all(st.speed == 0.0) and np.all(st.slip_angle == 0.0)
    for _ in range(500):
        ph.step(st, rng.uniform(-1, 1, n) * (rng.random(n) < 0.5), rng.uniform(-1, 1, n), 1)
        for name in FLOAT_COLUMNS:
            assert np.all(np.isfinite(getattr(st, name))), name
    assert st.speed.max() < 15.0
    # NaN commands are treated as 0
    ph.step(st, np.full(n, np.nan), np.full(n, np.nan), 1)
    assert np.all(np.isfinite(st.x))


def test_low_speed_is_smooth(open_field):
    st = one_kart(500.0, 500.0, 0.0)
    rates = []
    for _ in range(300):
        open_field.step(st, float(np.clip(2.0 * (1.0 - st.speed[0]), 0, 1)), 1.0, 1)
        rates.append(st.yaw_rate[0])
    rates = np.array(rates[150:])
    assert 0.7 < st.speed[0] < 1.3
    assert rates.std() < 0.05 * abs(rates.mean())  # no chatter at walking pace
    assert abs(st.vy[0]) < 0.5


def test_telemetry_fields(open_field):
    st = one_kart(500.0, 500.0, 0.0, 15.0)
    run(open_field, st, 0.5, 0.5, 30)
    assert st.speed[0] == pytest.approx(math.hypot(st.vx[0], st.vy[0]))
    assert st.slip_angle[0] == pytest.approx(math.atan2(st.vy[0], st.vx[0]))
    assert st.throttle[0] == 0.5
    assert not st.wall_hit[0] and st.impact_speed[0] == 0.0


# ------------------------------------------------------------------------------------ state and records


def test_state_columns_are_the_kernel_record_and_cannot_be_rebound():
    st = KartState(3)
    assert st.x is st.arrays.x and st.world.tolist() == [0, 1, 2] and np.all(st.tyre_condition == 1.0)
    with pytest.raises(AttributeError, match="write into it"):
        st.x = np.ones(3)
    st.vx[:] = 5.0
    st.damage[:] = 0.5
    st.wetness[:] = 1.0
    st.reset([1], 2.0, 3.0, 4.0, tyre_condition=0.5)
    assert st.vx.tolist() == [5.0, 0.0, 5.0] and st.damage.tolist() == [0.5, 0.0, 0.5]
    assert st.wetness.tolist() == [1.0, 1.0, 1.0] and st.tyre_condition.tolist() == [1.0, 0.5, 1.0]
    assert st.yaw[1] == pytest.approx(4.0 - 2 * math.pi)
    back = pickle.loads(pickle.dumps(st))  # a pickled env's state: attributes and record still one set of arrays
    assert back.x is back.arrays.x and np.array_equal(back.vx, st.vx)


def test_kernels_take_every_config_number_by_name_and_compile_once():
    from kartsim.sim.physics import _step_kernel

    field = make_grid(100, 100)
    cfg = KartConfig(mass_kg=200.0, wet_grip=0.5)
    ph = make_physics(field, cfg)
    params = ph._params[0]
    for name, value in cfg.to_dict().items():
        assert params[name] == value, name
    assert params["cg_to_rear_m"] == cfg.wheelbase_m - cfg.cg_to_front_m
    st = one_kart(10.0, 10.0, 0.0)
    ph.step(st, 1.0, 0.0, 2)
    n_sigs = len(_step_kernel.signatures)
    make_physics(field, KartConfig(mass_kg=120.0)).step(KartState(4), np.ones(4), np.zeros(4), 3)
    assert len(_step_kernel.signatures) == n_sigs  # another config and kart count: the same compiled kernel
