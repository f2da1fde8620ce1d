"""Resolve an env's ``track`` option (a name, a path, a list, a folder or "random") to a TrackStack."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from kartsim.errors import TrackError
from kartsim.sim.track import Track, TrackStack

# Generated "random" tracks are cached here so that every env and worker shares one pool.
CACHE_DIR = Path(os.environ.get("KARTSIM_CACHE", Path.home() / ".cache" / "kartsim"))
RANDOM_POOL_FIRST_SEED = 10_000


def track_paths(spec: str | list[str], random_pool_size: int = 8) -> list[str]:
    """The list of track files (or bundled names) an env's ``track`` option stands for."""
    items = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    if not items:
        raise TrackError("no track given; pass a PNG, a list of PNGs, a folder, or 'random'")
    out: list[str] = []
    for item in items:
        item = str(item)
        if item == "random":
            out.extend(str(p) for p in random_pool(random_pool_size))
        elif Path(item).is_dir():
            pngs = sorted(Path(item).glob("*.png"))
            if not pngs:
                raise TrackError(f"folder {item} holds no .png track; put track images in it or pass a PNG")
            out.extend(str(p) for p in pngs)
        else:
            out.append(item)
    return out


def random_pool(size: int) -> list[Path]:
    """Generated tracks for ``track="random"``, made once and cached on disk."""
    from kartsim.sim.trackgen import generate_track, save_track

    folder = CACHE_DIR / "random-tracks"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(size):
        path = folder / f"random_{RANDOM_POOL_FIRST_SEED + i}.png"
        if not path.exists():
            tmp = path.with_suffix(".tmp.png")
            save_track(generate_track(RANDOM_POOL_FIRST_SEED + i), tmp)
            tmp.replace(path)  # atomic: parallel workers never read a half-written file
        paths.append(path)
    return paths


@functools.lru_cache(maxsize=8)
def _load_stack(paths: tuple[str, ...]) -> TrackStack:
    return TrackStack.from_tracks([Track.load(p) for p in paths])


def load_track_stack(spec: str | list[str], random_pool_size: int = 8) -> TrackStack:
    """Load (once per process) the tracks of an env's ``track`` option as one stack."""
    return _load_stack(tuple(track_paths(spec, random_pool_size)))
