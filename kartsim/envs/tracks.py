"""Resolve an env's ``track`` option (a name, a path, a list, a folder, "random" or "bundled") to a
TrackStack."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from kartsim.errors import TrackError
from kartsim.sim.track import Track, TrackStack, bundled_tracks

# Generated "random" tracks are cached here so that every env and worker shares one pool.
CACHE_DIR = Path(os.environ.get("KARTSIM_CACHE", Path.home() / ".cache" / "kartsim"))
RANDOM_POOL_FIRST_SEED = 10_000
# Generated tracks vary in style and width over the range the learning targets are set on.
GENERATED_STYLES = ("circuit", "oval", "technical")
GENERATED_WIDTHS_M = (7.0, 14.0)


def track_paths(spec: str | list[str], random_pool_size: int = 8) -> list[str]:
    """The list of track files (or bundled names) an env's ``track`` option stands for:
    ``random`` is a pool of `random_pool_size` generated tracks, ``bundled`` the bundled tracks."""
    items = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    if not items:
        raise TrackError("no track given; pass a PNG, a list of PNGs, a folder, 'random' or 'bundled'")
    out: list[str] = []
    for item in items:
        item = str(item)
        if item == "random":
            out.extend(str(p) for p in random_pool(random_pool_size))
        elif item == "bundled":
            out.extend(f"{name}.png" for name in bundled_tracks())
        elif Path(item).is_dir():
            pngs = sorted(Path(item).glob("*.png"))
            if not pngs:
                raise TrackError(f"folder {item} holds no .png track; put track images in it or pass a PNG")
            out.extend(str(p) for p in pngs)
        else:
            out.append(item)
    return out


def generated_track_spec(seed: int) -> tuple[str, float]:
    """(style, road width in m) of the generated track of `seed`: every style, widths 7-14 m in 0.5 m
    steps, drawn from the seed alone (the same seed is always the same track)."""
    rng = np.random.default_rng([int(seed), 77])
    style = GENERATED_STYLES[int(rng.integers(len(GENERATED_STYLES)))]
    lo, hi = GENERATED_WIDTHS_M
    width = float(np.round(rng.uniform(lo, hi) * 2) / 2)
    return style, width


def generated_track(seed: int) -> Path:
    """The generated track of `seed` (`generated_track_spec`), made once and cached on disk."""
    from kartsim.sim.trackgen import generate_track, save_track

    style, width = generated_track_spec(seed)
    folder = CACHE_DIR / "generated-tracks"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"gen_{int(seed)}_{style}_{width:g}m.png"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp.png")
        save_track(generate_track(int(seed), style=style, width_m=width), tmp)
        tmp.replace(path)  # atomic: parallel workers never read a half-written file
    return path


def generated_tracks(first_seed: int, count: int) -> list[Path]:
    """`count` generated tracks from seed `first_seed` on (a held-out test set: seeds the pool never uses)."""
    return [generated_track(first_seed + i) for i in range(count)]


def random_pool(size: int) -> list[Path]:
    """Generated tracks for ``track="random"``: seeds ``RANDOM_POOL_FIRST_SEED`` on."""
    if size < 1:
        raise TrackError(f"the random track pool needs at least 1 track, not {size}")
    return generated_tracks(RANDOM_POOL_FIRST_SEED, size)


@functools.lru_cache(maxsize=8)
def _load_stack(paths: tuple[str, ...]) -> TrackStack:
    return TrackStack.from_tracks([Track.load(p) for p in paths])


def load_track_stack(spec: str | list[str], random_pool_size: int = 8) -> TrackStack:
    """Load (once per process) the tracks of an env's ``track`` option as one stack."""
    return _load_stack(tuple(track_paths(spec, random_pool_size)))
