"""Physics sanity: no input sequence sustains more acceleration than the measured g-g-v envelope.

The reference lap is only a yardstick if no driver can out-corner the envelope it is built on. Karts on
an open asphalt field drive input families the envelope measurement never saw (their own seed and
shapes): random steering and throttle held for 0.1 s, bang-bang and sinusoidal weaving at 0.2-3 s
periods, brake-and-turn, lift-off-and-turn. Over every 0.5 s and 1 s window without a spin (body slip
< 0.25 rad) above 8 m/s, the acceleration across the path must stay within the envelope at that
window's speed and acceleration along the path: within 5 % over 0.5 s (yaw transients) and 3 % over
1 s.
"""

import dataclasses

import numpy as np
import pytest

from kartsim.drivers.racing_line import GG_MAX_SLIP, GG_MIN_SPEED, _open_field, kart_limits, path_accelerations
from kartsim.sim.config import KartConfig


def _inputs(rng: np.random.Generator, n: int, steps: int, dt: float):
    t = np.arange(steps)[:, None] * dt
    kind = rng.integers(0, 5, n)
    amp = rng.uniform(0.05, 1.0, n)
    period = rng.uniform(0.2, 3.0, n)
    phase = rng.uniform(0, 2 * np.pi, n)
    held = np.repeat(rng.uniform(-1, 1, (steps // 5 + 1, n)), 5, axis=0)[:steps]
    wave = np.sin(2 * np.pi * t / period + phase)
    steer = np.select([kind == 0, kind == 1, kind == 2], [amp * held, amp * np.sign(wave), amp * wave],
                      default=amp * np.ones_like(wave))
    held_thr = np.repeat(rng.uniform(-1, 1, (steps // 5 + 1, n)), 5, axis=0)[:steps]
    # kind 3: brake into the turn then release; kind 4: full throttle, lift off in bursts
    brake_turn = np.where(t < period, -rng.uniform(0.2, 1.0, n), 1.0)
    lift = np.where(np.sin(2 * np.pi * t / period) > 0, 1.0, rng.uniform(-0.5, 0.3, n))
    thr = np.select([kind <= 2, kind == 3], [held_thr, brake_turn], default=lift)
    return steer, thr


@pytest.fixture(scope="module")
def drive():
    cfg = dataclasses.replace(KartConfig(), tyre_wear_per_mj=0.0)
    rng = np.random.default_rng(12345)
    steer, thr = _inputs(rng, 1500, 200, cfg.dt)
    return kart_limits(cfg), _open_field(cfg), steer, thr, rng.uniform(10.0, 24.0, 1500)


@pytest.mark.parametrize("window_s, tolerance", [(0.5, 0.05), (1.0, 0.03)])
def test_no_input_sustains_more_than_the_envelope(drive, window_s, tolerance):
    lim, ph, steer, thr, v0 = drive
    an, at, v, slip = path_accelerations(ph, steer, thr, v0, round(window_s / ph.cfg.dt))
    ok = (slip < GG_MAX_SLIP) & (v > GG_MIN_SPEED)
    assert ok.mean() > 0.3  # most windows are real cornering, not spins
    ratio = an[ok] / np.maximum(lim.lat_at(v[ok], at[ok]), 1e-3)
    assert ratio.max() <= 1 + tolerance, f"{ratio.max():.3f} of the envelope over {window_s} s"
    # and the envelope is no loose bound: some inputs come close to it
    assert ratio.max() >= 0.95
