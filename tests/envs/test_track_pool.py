"""Streamed track pools: a pool larger than ``resident_tracks`` keeps only a few tracks in memory and
drives exactly as if every track were loaded."""

from __future__ import annotations

import numpy as np
import pytest

from kartsim.envs import EnvConfig, KartEnv
from kartsim.envs.tracks import load_track_stack, track_sources
from kartsim.errors import ConfigError
from kartsim.sim.track import Track, TrackPool, TrackStack

BUNDLED = ["oval.png", "technical.png", "circuit.png"]


def _episodes(resident: int, corner_share: float, steps: int = 150) -> tuple[list[str], np.ndarray]:
    """Track names of each episode and every observation of a random-action drive (short episodes)."""
    cfg = EnvConfig(track=BUNDLED, resident_tracks=resident, ray_observation="rich")
    cfg.race.max_episode_steps = 20
    cfg.race.start_corner_share = corner_share
    env = KartEnv(cfg)
    obs, _ = env.reset(seed=5)
    rng = np.random.default_rng(1)
    names, seen = [env.race.stack.tracks[int(env.race.state.track_idx[0])].name], [obs]
    for _ in range(steps):
        obs, _, term, trunc, _ = env.step(rng.uniform(-1, 1, 2))
        seen.append(obs)
        if term or trunc:
            obs, _ = env.reset()
            names.append(env.race.stack.tracks[int(env.race.state.track_idx[0])].name)
            seen.append(obs)
    return names, np.array(seen)


@pytest.mark.parametrize("corner_share", [0.0, 0.5])  # uniform random starts / the corner curriculum
def test_a_streamed_pool_drives_exactly_like_the_whole_pool_in_memory(corner_share, tmp_path, monkeypatch):
    import kartsim.envs.tracks as tracks

    monkeypatch.setattr(tracks, "CACHE_DIR", tmp_path)  # the streamed pool's built-track cache
    all_names, all_obs = _episodes(32, corner_share)
    names, obs = _episodes(1, corner_share)  # one slot: every new track is loaded into it
    assert len(set(names)) == 3 and len(names) > 5  # episodes on every track, switching between them
    assert names == all_names
    np.testing.assert_array_equal(obs, all_obs)


def test_acquire_loads_into_the_least_recently_used_free_slot():
    tracks = [Track.load(n) for n in BUNDLED]
    loads: list[int] = []
    changed: list[int] = []

    def load(i: int) -> Track:
        loads.append(i)
        return tracks[i]

    stack = TrackStack.streamed(TrackPool(3, load, (1024, 1280)), slots=2)  # the largest H and W
    stack.listeners.append(changed.append)
    assert loads == [0] and list(stack.slot_track) == [0, -1]
    assert stack.acquire(1, np.array([True, False])) == 1  # slot 0 has a kart on it
    assert stack.acquire(2, np.array([False, True])) == 0  # evicts track 0
    assert stack.acquire(2, np.array([True, True])) == 0  # in memory: no load, shared
    assert stack.acquire(0, np.array([True, True])) == 0  # no free slot: shares slot 0 % 2
    assert loads == [0, 1, 2] and changed == [1, 0] and list(stack.slot_track) == [2, 1]
    assert stack.names == ["circuit", "technical"] and stack.pool_size == 3
    np.testing.assert_array_equal(stack.surface[0, :960, :1280], tracks[2].surface)
    assert not stack.surface[0, 960:].any()  # the rest of the slot is wall
    full = TrackStack.streamed(TrackPool(1, lambda i: tracks[1], (1024, 1024)), slots=1)
    assert full.tracks[0].surface.base is full.surface  # a full-size track keeps a view, not a copy


def test_a_large_random_pool_generates_only_the_tracks_it_draws(tmp_path, monkeypatch):
    import kartsim.envs.tracks as tracks

    monkeypatch.setattr(tracks, "CACHE_DIR", tmp_path)
    assert len(track_sources("random", 1000)) == 1000
    stack = load_track_stack("random", 1000, resident_tracks=4)
    assert len(stack) == 4 and stack.pool_size == 1000
    assert len(list((tmp_path / "generated-tracks").glob("*.png"))) == 1  # the first one only
    assert load_track_stack("random", 1000, resident_tracks=4) is not stack  # never shared between envs


def test_vision_refuses_a_streamed_pool():
    with pytest.raises(ConfigError, match="track-pool"):
        KartEnv(EnvConfig(track=BUNDLED, resident_tracks=1, vision=True))


def test_a_built_track_comes_back_from_the_cache_as_it_was_built(tmp_path, monkeypatch):
    import shutil

    png = tmp_path / "t.png"
    shutil.copy(Track.load("oval.png").path, png)
    built = Track.load_cached(png, tmp_path / "cache")
    (entry,) = (tmp_path / "cache").glob("*.npz")
    monkeypatch.setattr(Track, "load", classmethod(lambda cls, *a, **k: pytest.fail("built again")))
    cached = Track.load_cached(png, tmp_path / "cache")
    for key, value in vars(built).items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(getattr(cached, key), value, err_msg=key)
            assert getattr(cached, key).dtype == value.dtype
        elif key != "legend":
            assert getattr(cached, key) == value, key
    monkeypatch.undo()
    entry.write_bytes(b"not an npz")  # a damaged entry is built again
    assert Track.load_cached(png, tmp_path / "cache").length == built.length
    png.with_suffix(".json").write_text('{"scale_m_per_px": 0.3}')  # a new legend: a new entry
    assert Track.load_cached(png, tmp_path / "cache").scale == 0.3
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2


def test_the_largest_pool_never_uses_a_held_out_seed():
    largest = EnvConfig.LIMITS["random_pool_size"][1]
    assert max(track_sources("random", int(largest))) < 50_000  # benchmarks hold out seeds 50000 on
