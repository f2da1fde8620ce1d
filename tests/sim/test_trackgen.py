"""Track generator: determinism, every style and size loads, bundled tracks rebuild, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kartsim.cli import main
from kartsim.errors import KartsimError
from kartsim.sim.track import BUNDLED_DIR, Surface, Track
from kartsim.sim.trackgen import build_bundled_tracks, generate_track, save_track


def load(img, tmp_path, name):
    return Track.load(save_track(img, tmp_path / f"{name}.png"))


def check_generated(t: Track, width=9.0):
    assert t.start_source == "line"  # the drawn start/finish line was found
    assert t.width.mean() == pytest.approx(width, abs=0.6)
    assert t.width.min() > width - 1.0
    assert not t.warnings
    assert np.all(np.isin(t.surface_at(t.centerline[:, 0], t.centerline[:, 1]),
                          [Surface.ASPHALT, Surface.KERB]))
    # walls all round the image border
    assert np.all(t.surface[0] == Surface.WALL) and np.all(t.surface[:, -1] == Surface.WALL)
    # ccw, gates every ~10 m
    assert t.direction == "ccw"
    assert len(t.gates) == pytest.approx(t.length / 10, abs=1.5)


def test_same_seed_same_image():
    a = generate_track(3, size=512)
    b = generate_track(3, size=512)
    c = generate_track(4, size=512)
    assert a.shape == (512, 512, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("size", [512, 2048])
def test_generated_sizes_load(tmp_path, seed, size):
    style = ("circuit", "technical", "oval", "random", "circuit")[seed]
    img = generate_track(seed, size=size, style=style)
    assert img.shape == (size, size, 3)
    t = load(img, tmp_path, f"gen{seed}")
    check_generated(t)
    side = size * 0.25
    assert 1.2 * side < t.length < 6 * side


@pytest.mark.parametrize("style", ["circuit", "oval", "technical", "grandprix", "drawn", "random"])
def test_styles_1024(tmp_path, style):
    t = load(generate_track(11, size=1024, style=style), tmp_path, style)
    check_generated(t)


def test_grand_prix_layouts_have_long_straights(tmp_path):
    from kartsim.sim.trackgen import _curvature

    for seed in (1, 2, 3):
        t = load(generate_track(seed, size=1024, style="grandprix"), tmp_path, f"gp{seed}")
        check_generated(t)
        straight = np.abs(_curvature(t.centerline, 2.0)) < 1 / 150  # radius over 150 m
        run, longest = 0, 0
        for flag in np.concatenate([straight, straight]):  # the lap wraps around
            run = run + 1 if flag else 0
            longest = max(longest, run)
        assert min(longest, len(straight)) * t.length / len(straight) > 60.0


def test_drawn_layouts_have_sharp_corners_and_the_hard_ai_laps_them(tmp_path):
    """The drawn style is a polygon as a brush draws it: corners far tighter than the splined styles
    allow (their centerline radius is at least half the width + 2 m), which the AI still drives."""
    from kartsim.drivers.ai_driver import AIDriver
    from kartsim.drivers.racing_line import reference_lap_time
    from kartsim.sim.config import RaceConfig
    from kartsim.sim.race import Race
    from kartsim.sim.track import TrackStack
    from kartsim.sim.trackgen import _curvature

    t = load(generate_track(2, size=1024, style="drawn"), tmp_path, "drawn2")
    check_generated(t)
    assert np.abs(_curvature(t.centerline, 0.5)).max() > 1.0 / (9.0 / 2 + 2.0)
    race = Race(TrackStack.from_tracks([t]), 1, RaceConfig(random_start=False, max_episode_steps=4000))
    race.reset_karts(np.array([0]), [np.random.default_rng(0)])
    ai = AIDriver([t], race.kart_cfg, "hard", decision_dt=race.step_dt, rng=np.random.default_rng(0))
    while race.laps[0] < 2 and race.steps[0] < 3000:
        race.step(ai.act(race.state))
    assert race.stats.lap_times[0][1] < 1.015 * reference_lap_time(t, race.kart_cfg)


def test_small_and_wide(tmp_path):
    check_generated(load(generate_track(1, size=256), tmp_path, "small"))
    check_generated(load(generate_track(2, size=1024, width_m=12.0), tmp_path, "wide"), width=12.0)


def test_kerbs_and_tyre_walls(tmp_path):
    img = generate_track(5, size=1024, style="technical")
    t = load(img, tmp_path, "tech")
    assert (t.surface == Surface.KERB).sum() > 500
    # walls beyond the run-off: the wall distance on the road never exceeds the road plus run-off
    road = np.isin(t.surface, [Surface.ASPHALT, Surface.KERB])
    assert t.wall_distance[road].max() < 9.0 / 2 + 8.0 + 9.0


def test_length_target(tmp_path):
    t = load(generate_track(2, size=1024, length_m=500.0), tmp_path, "len")
    assert t.length == pytest.approx(500.0, rel=0.05)
    with pytest.raises(KartsimError, match="bigger --size"):
        generate_track(2, size=512, length_m=5000.0)


def test_bad_arguments():
    with pytest.raises(KartsimError, match="style"):
        generate_track(0, style="spiral")
    with pytest.raises(KartsimError, match="size"):
        generate_track(0, size=100)
    with pytest.raises(KartsimError):
        save_track(np.zeros((300, 300, 3), np.uint8), "track.jpg")


def test_bundled_tracks_rebuild_identically(tmp_path):
    written = build_bundled_tracks(tmp_path)
    names = sorted(p.name for p in written)
    assert names == sorted(["circuit.png", "oval.png", "technical.png", "circuit.checkpoints.json",
                            "oval.checkpoints.json", "technical.checkpoints.json"])
    for p in written:
        assert p.read_bytes() == (BUNDLED_DIR / p.name).read_bytes(), p.name
    for p in written:
        if p.suffix == ".png":
            assert p.stat().st_size < 200_000


# --------------------------------------------------------------------------------------- CLI


def test_cli_new_check_checkpoints(tmp_path, capsys):
    out = tmp_path / "t.png"
    assert main(["track", "new", "--seed", "7", "--size", "512", str(out)]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and " m long" in printed and " m wide" in printed
    cp = tmp_path / "t.checkpoints.json"
    assert out.exists() and cp.exists()
    assert json.loads(cp.read_text())["track"] == "t.png"

    assert main(["track", "new", "--seed", "8", "--size", "512", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["track", "new", "--seed", "8", "--size", "512", "--force", str(out)]) == 0
    capsys.readouterr()

    assert main(["track", "check", str(out)]) == 0
    printed = capsys.readouterr().out
    for word in ("size:", "512 x 512", "0.25 m/px", "length:", "width:", "gates:", "direction:", "ccw",
                 "warnings:"):
        assert word in printed

    assert main(["track", "checkpoints", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    cp.write_text("{broken")
    assert main(["track", "checkpoints", "--force", str(out)]) == 0
    assert "gates" in json.loads(cp.read_text())

    assert main(["track", "check", str(tmp_path / "missing.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not found" in err and err.count("\n") == 1
