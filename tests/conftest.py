"""Shared test helpers: a scripted centerline-following driver and small env factories."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")


@pytest.fixture(autouse=True, scope="session")
def _racing_line_cache(tmp_path_factory):
    """Solved minimum-time lines go to a folder of this test session, not the user's cache."""
    os.environ.setdefault("KARTSIM_CACHE_DIR", str(tmp_path_factory.mktemp("racing_lines")))


def follow_centerline(race, i: int = 0, lookahead_m: float = 7.0, target_speed: float = 12.0) -> np.ndarray:
    """Pure-pursuit steering towards the centerline point `lookahead_m` ahead, throttle to a target speed."""
    st = race.state
    track = race.stack.tracks[int(st.track_idx[i])]
    s_target = (race.s[i] + lookahead_m) % track.length
    tx, ty, _ = (float(v[0]) for v in track.pose_at(np.array([s_target])))
    angle = np.arctan2(ty - st.y[i], tx - st.x[i]) - st.yaw[i]
    angle = (angle + np.pi) % (2 * np.pi) - np.pi
    steer = np.clip(angle * 2.5, -1.0, 1.0)
    throttle = np.clip((target_speed - st.speed[i]) * 0.5, -1.0, 1.0)
    return np.array([steer, throttle])


@pytest.fixture
def follower():
    return follow_centerline
