"""Resolve an env's ``track`` option (a name, a path, a list, a folder, "random" or "bundled") to a
TrackStack."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
from PIL import Image

from kartsim.errors import TrackError
from kartsim.sim.track import Track, TrackPool, TrackStack, bundled_tracks, resolve_track_path

# Generated "random" tracks are cached here so that every env and worker shares one pool.
CACHE_DIR = Path(os.environ.get("KARTSIM_CACHE", Path.home() / ".cache" / "kartsim"))
RANDOM_POOL_FIRST_SEED = 10_000
# Generated tracks vary in style and width over the range the learning targets are set on.
GENERATED_STYLES = ("circuit", "oval", "technical")
# A quarter of the seeds are "grandprix" layouts (long straights), drawn apart from the style above so
# that the other seeds keep the tracks they had before the style existed.
LONG_STRAIGHTS_STYLE, LONG_STRAIGHTS_SHARE = "grandprix", 0.25
# A fifth are "drawn" (straight edges, sharp corners, as a user draws a track): a clone of the hard AI
# recorded on a pool of 1,000 tracks without them lapped 3 of 7 hand-drawn tracks.
DRAWN_STYLE, DRAWN_SHARE = "drawn", 0.2
GENERATED_WIDTHS_M = (7.0, 14.0)
GENERATED_SIZE_PX = 1024  # a side of every generated track image (0.25 m per pixel: 256 m)


def track_sources(spec: str | list[str], random_pool_size: int = 8) -> list[str | int]:
    """The tracks an env's ``track`` option stands for, nothing loaded or generated yet: a file path or
    bundled name each, and the seed of each generated track (``random``: a pool of `random_pool_size`
    generated tracks, seeds ``RANDOM_POOL_FIRST_SEED`` on); ``bundled`` is the bundled tracks."""
    items = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    if not items:
        raise TrackError("no track given; pass a PNG, a list of PNGs, a folder, 'random' or 'bundled'")
    out: list[str | int] = []
    for item in items:
        item = str(item)
        if item == "random":
            if random_pool_size < 1:
                raise TrackError(f"the random track pool needs at least 1 track, not {random_pool_size}")
            out.extend(range(RANDOM_POOL_FIRST_SEED, RANDOM_POOL_FIRST_SEED + random_pool_size))
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


def source_path(source: str | int) -> str:
    """The file (or bundled name) of a `track_sources` entry: a seed's generated track is made now."""
    return str(generated_track(source)) if isinstance(source, int) else source


def track_paths(spec: str | list[str], random_pool_size: int = 8) -> list[str]:
    """The list of track files (or bundled names) an env's ``track`` option stands for:
    ``random`` is a pool of `random_pool_size` generated tracks, ``bundled`` the bundled tracks."""
    return [source_path(s) for s in track_sources(spec, random_pool_size)]


def _source_shape(source: str | int) -> tuple[int, int]:
    """(H, W) in pixels of a track source, from the image's header (nothing decoded or generated)."""
    if isinstance(source, int):
        return GENERATED_SIZE_PX, GENERATED_SIZE_PX
    path = resolve_track_path(source)
    try:
        with Image.open(path) as image:
            w, h = image.size
    except (OSError, ValueError) as exc:
        raise TrackError(f"cannot read track image {path}: {exc}; give a PNG track image") from None
    return h, w


def generated_track_spec(seed: int) -> tuple[str, float]:
    """(style, road width in m) of the generated track of `seed`: every style (a quarter of them
    "grandprix", with long straights, a fifth "drawn", with sharp corners), widths 7-14 m in 0.5 m steps, drawn from the seed alone (the
    same seed is always the same track)."""
    rng = np.random.default_rng([int(seed), 77])
    style = GENERATED_STYLES[int(rng.integers(len(GENERATED_STYLES)))]
    lo, hi = GENERATED_WIDTHS_M
    width = float(np.round(rng.uniform(lo, hi) * 2) / 2)
    if np.random.default_rng([int(seed), 78]).random() < LONG_STRAIGHTS_SHARE:
        style = LONG_STRAIGHTS_STYLE
    if np.random.default_rng([int(seed), 79]).random() < DRAWN_SHARE:
        style = DRAWN_STYLE
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
        save_track(generate_track(int(seed), size=GENERATED_SIZE_PX, style=style, width_m=width), tmp)
        tmp.replace(path)  # atomic: parallel workers never read a half-written file
    return path


def generated_tracks(first_seed: int, count: int) -> list[Path]:
    """`count` generated tracks from seed `first_seed` on (a held-out test set: seeds the pool never uses)."""
    return [generated_track(first_seed + i) for i in range(count)]


@functools.lru_cache(maxsize=8)
def _load_stack(paths: tuple[str, ...]) -> TrackStack:
    return TrackStack.from_tracks([Track.load(p) for p in paths])


def load_track_stack(spec: str | list[str], random_pool_size: int = 8,
                     resident_tracks: int | None = None) -> TrackStack:
    """The tracks of an env's ``track`` option as one stack. Up to `resident_tracks` (None: any
    number) they are all loaded, once per process (envs share the stack); a larger pool is a new
    streamed stack of `resident_tracks` slots per call (its slots change under one race's karts),
    each track loaded (generated first, for a seed) when a kart draws it."""
    sources = track_sources(spec, random_pool_size)
    if resident_tracks is None or len(sources) <= resident_tracks:
        return _load_stack(tuple(source_path(s) for s in sources))
    shapes = {_source_shape(s) for s in sources}
    shape = (max(h for h, _ in shapes), max(w for _, w in shapes))
    folder = CACHE_DIR / "built-tracks"
    pool = TrackPool(len(sources), lambda i: Track.load_cached(source_path(sources[i]), folder), shape)
    return TrackStack.streamed(pool, resident_tracks)
