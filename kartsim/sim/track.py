"""Tracks drawn as images: surface grid, wall distances, centerline, progress and checkpoints.

Image format
------------
A track is an image (PNG) between 256 and 4096 pixels a side; one pixel is ``scale`` metres
(0.25 m by default). Pixels are classified by colour (alpha is composited onto black first):

* **asphalt** – grey: the three channels within 25 of each other and their mean in 40..200;
* **kerb** – red (R >= 120 and R exceeds G and B by 60) or white (every channel >= 200, spread <= 40).
  Kerbs are road: as drivable as asphalt. A band of white pixels right across the road is the
  start/finish line;
* **grass** – green-dominant (G exceeds R and B by at least 10);
* **wall** – everything else (black, blue, transparent, ...). Outside the image is wall as well.

"Road" means asphalt or kerb; the centerline runs around the largest connected road region,
which must be a closed loop around an infield.

Legend file (optional)
----------------------
``<stem>.json`` next to ``<stem>.png`` (e.g. ``circuit.json``), or a :class:`TrackLegend` passed to
:meth:`Track.load`, changes the defaults::

    {
      "scale_m_per_px": 0.5,                 # metres per pixel, 0.01..10
      "grey_tolerance": 25,                  # max channel spread for asphalt
      "grey_min": 40, "grey_max": 200,       # range of the channel mean for asphalt
      "colors": [                            # explicit rules, applied after the defaults, in order
        {"rgb": [0, 0, 255], "surface": "wall", "tolerance": 30},
        {"rgb": [200, 180, 120], "surface": "grass"}
      ]
    }

A colour rule matches pixels whose every channel is within ``tolerance`` (default 30) of ``rgb``;
``surface`` is one of ``wall``, ``asphalt``, ``kerb``, ``grass``. Unknown keys are an error.

Checkpoints file (optional)
---------------------------
Looked up as ``<stem>.checkpoints.json`` next to the image, then ``checkpoints.json`` in the same
folder when its ``"track"`` field equals the image's file name::

    {"track": "circuit.png", "direction": "ccw", "gates": [[x1, y1, x2, y2], ...]}

Gates are in PIXELS (x = column, y = row), in driving order, gate 0 = start/finish. A legacy list
of ``[x, y]`` centre points is accepted (as the file itself or as ``"gates"``); each becomes a gate
across the road there. With file gates, the centerline's s = 0 is gate 0 and the direction of travel
is the one in which the gates follow each other (``"direction"`` decides only with fewer than
three gates). Without a file, the direction is counter-clockwise as seen on the image, s = 0 is the
middle of a white start/finish line (else the middle of the longest straight) and gates are placed
across the road about every 10 m, perpendicular to the centerline, from the left road edge
(x1, y1) to the right one (x2, y2) as seen in the driving direction (gates read from a file keep
their own end order). :meth:`Track.save_checkpoints` writes the file.

Coordinates follow docs/ARCHITECTURE.md: metres, ``x = col * scale``, ``y = row * scale`` (y down),
``yaw = atan2(dy, dx)``, positive curvature = right-hand bend, lateral offset > 0 = right.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import os
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from scipy import ndimage

from numba import njit

from kartsim.errors import TrackError

__all__ = [
    "Surface",
    "TrackLegend",
    "ColorRule",
    "Track",
    "TrackStack",
    "resolve_track_path",
    "bundled_tracks",
    "BUNDLED_DIR",
    "MIN_SIZE",
    "MAX_SIZE",
    "DEFAULT_SCALE",
    "COLORS",
]

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "tracks"
# The code that builds tracks, as imported: a cached built track is only reused by the same code.
_SOURCE_HASH = hashlib.sha256(Path(__file__).read_bytes()).digest()
MIN_SIZE = 256
MAX_SIZE = 4096
DEFAULT_SCALE = 0.25
CENTERLINE_SPACING = 0.5  # metres between centerline points
GATE_SPACING = 10.0  # metres between automatic gates
FOLD_LIMIT = 0.9
"""Where the centerline bends so tightly that its normals would cross inside the road (curvature x
the distance to the inside edge above this: a hand-drawn corner), gates and the racing line are laid
across a smoothed copy of it (:meth:`Track.unkinked`). Generated and bundled tracks stay below it
(their centerline radius is at least half the road's width + 2 m: 0.78 at most)."""
MAX_HALF_WIDTH = 40.0  # metres searched on each side of the centerline for the road edge

# Canonical colours used by the generator (all classify as documented above).
COLORS = {
    "asphalt": (108, 108, 112),
    "grass": (70, 140, 55),
    "grass_far": (58, 118, 46),
    "kerb_red": (215, 35, 35),
    "kerb_white": (245, 245, 245),
    "wall": (0, 0, 0),
    "wall_blue": (30, 60, 200),
}


class Surface(enum.IntEnum):
    WALL = 0
    ASPHALT = 1
    KERB = 2
    GRASS = 3


_SURFACE_NAMES = {s.name.lower(): s for s in Surface}


def is_road(surface: np.ndarray) -> np.ndarray:
    """Boolean mask of road (asphalt or kerb)."""
    return (surface == Surface.ASPHALT) | (surface == Surface.KERB)


# ----------------------------------------------------------------------------------------- legend


@dataclass(frozen=True)
class ColorRule:
    rgb: tuple[int, int, int]
    surface: Surface
    tolerance: int = 30


@dataclass(frozen=True)
class TrackLegend:
    """How colours map to surfaces, and the image scale. See the module docstring for the JSON."""

    scale_m_per_px: float = DEFAULT_SCALE
    grey_tolerance: int = 25
    grey_min: int = 40
    grey_max: int = 200
    colors: tuple[ColorRule, ...] = field(default_factory=tuple)

    _KEYS = ("scale_m_per_px", "grey_tolerance", "grey_min", "grey_max", "colors")

    @classmethod
    def from_dict(cls, data: object, source: str = "legend") -> "TrackLegend":
        if not isinstance(data, dict):
            raise TrackError(f"{source}: the legend must be a JSON object like "
                             '{"scale_m_per_px": 0.25, "colors": [...]}')
        unknown = sorted(set(data) - set(cls._KEYS))
        if unknown:
            raise TrackError(f"{source}: unknown legend key(s) {', '.join(map(repr, unknown))}; "
                             f"allowed keys are {', '.join(cls._KEYS)}")
        kw: dict = {}
        if "scale_m_per_px" in data:
            v = data["scale_m_per_px"]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0.01 <= v <= 10):
                raise TrackError(f"{source}: scale_m_per_px must be a number of metres per pixel "
                                 f"between 0.01 and 10, got {v!r}")
            kw["scale_m_per_px"] = float(v)
        for key in ("grey_tolerance", "grey_min", "grey_max"):
            if key in data:
                v = data[key]
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0 <= v <= 255):
                    raise TrackError(f"{source}: {key} must be a number in 0..255, got {v!r}")
                kw[key] = int(v)
        if "colors" in data:
            kw["colors"] = _color_rules(data["colors"], source)
        return cls(**kw)

    @classmethod
    def from_file(cls, path: str | Path) -> "TrackLegend":
        path = Path(path)
        data = _read_json_file(path, "legend file", "legend", "a legend takes a few lines",
                               "fix it or delete it to use the default colours",
                               missing="remove the legend argument or create the file")
        return cls.from_dict(data, source=f"legend file {path}")

    def classify(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 -> (surface (H, W) uint8, white (H, W) bool)."""
        c = rgb.astype(np.int16)
        r, g, b = c[..., 0], c[..., 1], c[..., 2]
        mx = np.maximum(np.maximum(r, g), b)
        mn = np.minimum(np.minimum(r, g), b)
        spread = mx - mn
        total = r + g + b  # mean*3, compare without division
        surface = np.zeros(rgb.shape[:2], np.uint8)  # WALL
        grass = (g >= r + 10) & (g >= b + 10)
        surface[grass] = Surface.GRASS
        red = (r >= 120) & (r - g >= 60) & (r - b >= 60)
        white = (mn >= 200) & (spread <= 40)
        surface[red | white] = Surface.KERB
        grey = (spread <= self.grey_tolerance) & (total >= 3 * self.grey_min) & (total <= 3 * self.grey_max)
        surface[grey] = Surface.ASPHALT
        white = white & ~grey
        for rule in self.colors:
            m = np.all(np.abs(c - np.asarray(rule.rgb, np.int16)) <= rule.tolerance, axis=-1)
            surface[m] = rule.surface
            white &= ~m
        return surface, white


# ------------------------------------------------------------------------------------ path helpers

def _color_rules(rules: object, source: str) -> tuple["ColorRule", ...]:
    """The legend's ``colors`` list as ColorRules; TrackError naming the bad entry."""
    if not isinstance(rules, list):
        raise TrackError(f"{source}: \"colors\" must be a list of "
                         '{"rgb": [r, g, b], "surface": "wall"} objects')
    parsed = []
    for i, r in enumerate(rules):
        if not isinstance(r, dict) or "rgb" not in r or "surface" not in r:
            raise TrackError(f"{source}: colors[{i}] must be an object with \"rgb\" and "
                             "\"surface\" (and optional \"tolerance\")")
        extra = sorted(set(r) - {"rgb", "surface", "tolerance"})
        if extra:
            raise TrackError(f"{source}: colors[{i}] has unknown key(s) {extra}; allowed: "
                             "rgb, surface, tolerance")
        rgb = r["rgb"]
        if (not isinstance(rgb, list) or len(rgb) != 3
                or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255
                           for c in rgb)):
            raise TrackError(f"{source}: colors[{i}].rgb must be three integers 0..255, "
                             f"got {rgb!r}")
        name = r["surface"]
        if not isinstance(name, str) or name.lower() not in _SURFACE_NAMES:
            raise TrackError(f"{source}: colors[{i}].surface must be one of "
                             f"{', '.join(_SURFACE_NAMES)}, got {name!r}")
        tol = r.get("tolerance", 30)
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 <= tol <= 255:
            raise TrackError(f"{source}: colors[{i}].tolerance must be 0..255, got {tol!r}")
        parsed.append(ColorRule(tuple(rgb), _SURFACE_NAMES[name.lower()], int(tol)))
    return tuple(parsed)



def bundled_tracks() -> list[str]:
    """Names of the tracks shipped in kartsim/tracks/ (without .png)."""
    return sorted(p.stem for p in BUNDLED_DIR.glob("*.png"))


def resolve_track_path(name: str | Path) -> Path:
    """A path on disk, or a bundled track name ("circuit" or "circuit.png")."""
    p = Path(name).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        raise TrackError(f"{p} is a folder, not a track image; pass a PNG file or a bundled track "
                         f"name ({', '.join(bundled_tracks())})")
    if len(p.parts) == 1:
        for cand in (BUNDLED_DIR / p.name, BUNDLED_DIR / f"{p.name}.png"):
            if cand.is_file():
                return cand
    raise TrackError(f"track {str(name)!r} not found: no such file and no bundled track of that "
                     f"name; bundled tracks: {', '.join(bundled_tracks()) or '(none)'}")


# Image modes without colour: classified by RGB rules, grass and road would be the same grey.
GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
MIN_GATES = 4
MAX_GATES = 2000
MAX_JSON_BYTES = 2_000_000  # legends and checkpoints files are a few kB


def _read_json_file(path: Path, what: str, kind: str, size_hint: str, fix: str, missing: str | None = None) -> object:
    """A user's small JSON file (a legend, a checkpoints file) with one-line errors naming ``what`` it is
    and how to ``fix`` it: too big, nested too deeply, unreadable (``missing``: what to do when absent)
    or not JSON."""
    try:
        if path.is_file() and path.stat().st_size > MAX_JSON_BYTES:
            raise TrackError(f"{what} {path} is over {MAX_JSON_BYTES // 1000} kB; {size_hint}: {fix}")
        return json.loads(path.read_text())
    except RecursionError:
        raise TrackError(f"{what} {path} is nested too deeply to be a {kind}; {fix}") from None
    except FileNotFoundError as exc:
        raise TrackError(f"{what} {path} not found; {missing}" if missing else f"cannot read {what} {path}: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TrackError(f"cannot read {what} {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise TrackError(f"{what} {path} is not valid JSON (line {exc.lineno}: {exc.msg}); {fix}") from None


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = None  # the size is checked below, before decoding
    try:
        im = Image.open(path)
    except UnidentifiedImageError:
        raise TrackError(f"{path} is not an image; a track must be a PNG (grey road, green grass, "
                         "black walls)") from None
    except OSError as exc:
        raise TrackError(f"cannot read {path}: {exc}") from None
    with im:
        if im.mode in GREY_MODES:
            raise TrackError(f"{path} is a greyscale image (mode {im.mode}): green grass cannot be told from grey "
                             "road without colour; save it as an RGB PNG (grey road, green grass, black walls)")
        w, h = im.size
        if min(w, h) < MIN_SIZE or max(w, h) > MAX_SIZE:
            raise TrackError(f"{path} is {w}x{h} px; a track image must be {MIN_SIZE} to {MAX_SIZE} px "
                             "a side: resize it (and set scale_m_per_px in a legend to keep metres)")
        try:
            im.load()
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                arr = np.asarray(im.convert("RGBA"))
                a = arr[..., 3:4].astype(np.uint16)
                rgb = ((arr[..., :3].astype(np.uint16) * a + 127) // 255).astype(np.uint8)
            else:
                rgb = np.asarray(im.convert("RGB"))
        except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError... on broken files
            raise TrackError(f"{path} is a corrupt or truncated image ({exc}); re-export it as PNG") from None
    return np.ascontiguousarray(rgb)


# ------------------------------------------------------------------------------------- geometry


def _resample_closed(pts: np.ndarray, spacing: float) -> np.ndarray:
    """Resample a closed polyline (last != first) to uniform spacing."""
    closed = np.vstack([pts, pts[:1]])
    seg = np.hypot(*np.diff(closed, axis=0).T)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    total = s[-1]
    n = max(8, int(round(total / spacing)))
    t = np.arange(n) * (total / n)
    return np.column_stack([np.interp(t, s, closed[:, 0]), np.interp(t, s, closed[:, 1])])


def _smooth_closed(pts: np.ndarray, sigma_pts: float) -> np.ndarray:
    if sigma_pts <= 0:
        return pts
    return ndimage.gaussian_filter1d(pts, sigma_pts, axis=0, mode="wrap")


def closed_geometry(c: np.ndarray, smooth_m: float = 1.5, spacing: float | None = None):
    """s, length, heading, curvature of a closed polyline (M, 2) (last != first); the curvature is
    smoothed over ``smooth_m`` metres (0: raw) of points ``spacing`` apart (None: length / M)."""
    nxt = np.roll(c, -1, axis=0)
    seg = np.hypot(*(nxt - c).T)
    s = np.concatenate([[0.0], np.cumsum(seg[:-1])])
    length = float(seg.sum())
    d = np.roll(c, -1, axis=0) - np.roll(c, 1, axis=0)
    heading = np.arctan2(d[:, 1], d[:, 0])
    dh = np.angle(np.exp(1j * (np.roll(heading, -1) - np.roll(heading, 1))))
    curv = dh / np.maximum(seg + np.roll(seg, 1), 1e-9)
    if smooth_m > 0:
        spacing = length / len(c) if spacing is None else spacing
        curv = ndimage.gaussian_filter1d(curv, max(smooth_m / spacing, 0.5), mode="wrap")
    return s, length, heading, curv


def _signed_area(c: np.ndarray) -> float:
    x, y = c[:, 0], c[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def _lookup_mask(mask: np.ndarray, scale: float, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    h, w = mask.shape
    col = np.floor(x / scale).astype(np.int64)
    row = np.floor(y / scale).astype(np.int64)
    ok = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    out = np.zeros(np.shape(x), bool)
    out[ok] = mask[row[ok], col[ok]]
    return out


def _march(road: np.ndarray, scale: float, origins: np.ndarray, dirs: np.ndarray,
           max_d: float) -> np.ndarray:
    """Distance from each origin along its unit direction to the first non-road sample (m)."""
    step = scale * 0.5
    k = int(math.ceil(max_d / step))
    t = (np.arange(1, k + 1) * step)[None, :]
    xs = origins[:, 0:1] + dirs[:, 0:1] * t
    ys = origins[:, 1:2] + dirs[:, 1:2] * t
    on = _lookup_mask(road, scale, xs, ys)
    off = ~on
    first = np.where(off.any(axis=1), off.argmax(axis=1), k)
    return first * step + step * 0.5  # edge lies between the last road and first non-road sample


def _fold(curvature: np.ndarray, length: float, t_l: np.ndarray, t_r: np.ndarray) -> float:
    """The largest curvature (smoothed over 2 m) x distance to the inside road edge along a path: at
    1 its normals cross at the inside edge."""
    k = ndimage.gaussian_filter1d(curvature, 2.0 / (length / len(curvature)), mode="wrap")
    return float(np.max(np.where(k > 0, k * t_r, -k * t_l)))


def _check_background(road: np.ndarray, white: np.ndarray, label: str) -> None:
    """Called where the road encloses no infield: a track drawn on a white (or grey) background has
    road all around it. Say so, and how to fix it, rather than "not a closed loop"."""
    border = np.concatenate([road[0], road[-1], road[1:-1, 0], road[1:-1, -1]])
    if border.mean() <= 0.5:
        return
    whites = np.concatenate([white[0], white[-1], white[1:-1, 0], white[1:-1, -1]]).mean() > 0.5
    colour = "white, which counts as kerb" if whites else "grey, which counts as asphalt"
    rgb = "[255, 255, 255]" if whites else "[R, G, B]"
    raise TrackError(f"{label}: the background is road ({100 * border.mean():.0f} % of the image's edge is {colour}); "
                     "paint it green (grass) or any colour that is not road, or map it to grass in a legend "
                     f"next to the image: {{\"colors\": [{{\"rgb\": {rgb}, \"surface\": \"grass\"}}]}}")


def _cross_section(road: np.ndarray, scale: float, pts: np.ndarray, right: np.ndarray,
                   max_d: float, cap: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Distances (left, right) from each point along its normal to the road edges (m); with `cap`,
    each side at most twice the point's clearance (its distance to the nearest non-road sample in
    any direction).

    Where the road turns sharply, the normal can run along the road for tens of metres: at a
    hand-drawn square corner a 41 m "gate" lay nearly parallel to the next straight, no kart crossed
    it, and no lap ever counted. On a drawn or generated road each side is within 1.25 x the
    clearance, so only sides longer than 1.5 x the lap's median half-width are checked (and changed
    there alone)."""
    t_r = _march(road, scale, pts, right, max_d)
    t_l = _march(road, scale, pts, -right, max_d)
    sel = np.flatnonzero(np.maximum(t_l, t_r) > 0.75 * np.median(t_l + t_r)) if cap else []
    if len(sel):
        angles = np.linspace(0.0, 2.0 * np.pi, 32, endpoint=False)
        dirs = np.tile(np.column_stack([np.cos(angles), np.sin(angles)]), (len(sel), 1))
        clear = _march(road, scale, np.repeat(pts[sel], len(angles), axis=0), dirs, max_d)
        cap = 2.0 * clear.reshape(len(sel), len(angles)).min(axis=1)
        t_l[sel] = np.minimum(t_l[sel], cap)
        t_r[sel] = np.minimum(t_r[sel], cap)
    return t_l, t_r


def _runs_circular(flag: np.ndarray) -> list[tuple[int, int]]:
    """(start, length) of runs of True in a circular boolean array."""
    n = len(flag)
    if n == 0 or not flag.any():
        return []
    if flag.all():
        return [(0, n)]
    start = int(np.argmin(flag))  # a False position: rotate so runs don't wrap
    f = np.roll(flag, -start)
    d = np.diff(np.concatenate([[0], f.astype(np.int8), [0]]))
    begins = np.flatnonzero(d == 1)
    ends = np.flatnonzero(d == -1)
    return [((int(b) + start) % n, int(e - b)) for b, e in zip(begins, ends)]


# ---------------------------------------------------------------------------------- checkpoints


def _parse_checkpoints(data: object, source: str):
    """-> (direction or None, gates (G,4) px or None, points (G,2) px or None)."""
    direction = None
    if isinstance(data, list):
        raw = data
    elif isinstance(data, dict):
        unknown = sorted(set(data) - {"track", "direction", "gates", "scale_m_per_px"})
        if unknown:
            raise TrackError(f"{source}: unknown key(s) {unknown}; allowed: track, direction, gates")
        direction = data.get("direction")
        if direction is not None and direction not in ("ccw", "cw"):
            raise TrackError(f"{source}: \"direction\" must be \"ccw\" or \"cw\", got {direction!r}")
        raw = data.get("gates", [])
        if not isinstance(raw, list):
            raise TrackError(f"{source}: \"gates\" must be a list of [x1, y1, x2, y2] pixel gates")
    else:
        raise TrackError(f"{source}: expected an object "
                         '{"track": ..., "direction": "ccw", "gates": [[x1, y1, x2, y2], ...]}')
    if not raw:
        return direction, None, None
    if len(raw) > MAX_GATES:
        raise TrackError(f"{source}: {len(raw)} gates; at most {MAX_GATES} (a few dozen are typical)")
    lens = set()
    for i, g in enumerate(raw):
        if (not isinstance(g, (list, tuple)) or len(g) not in (2, 4)
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                           and math.isfinite(v) for v in g)):
            raise TrackError(f"{source}: gate {i} must be [x1, y1, x2, y2] (or a legacy [x, y] "
                             f"point) in pixels, got {g!r}")
        lens.add(len(g))
    if len(lens) > 1:
        raise TrackError(f"{source}: mixes [x, y] points and [x1, y1, x2, y2] gates; use one form")
    arr = np.asarray(raw, np.float64)
    if arr.shape[1] == 4:
        return direction, arr, None
    return direction, None, arr


def _find_checkpoints_file(path: Path | None) -> Path | None:
    if path is None:
        return None
    own = path.with_name(f"{path.stem}.checkpoints.json")
    if own.is_file():
        return own
    shared = path.with_name("checkpoints.json")
    if shared.is_file():
        try:
            data = json.loads(shared.read_text())
        except (OSError, ValueError):
            return None  # a shared file for some other track; not ours to judge
        if isinstance(data, dict) and data.get("track") == path.name:
            return shared
    return None


# ------------------------------------------------------------------------------------------ Track


class Track:
    """A loaded track. Build with :meth:`Track.load` (a file) or :meth:`Track.from_image`."""

    name: str
    path: Path | None
    scale: float
    rgb: np.ndarray
    surface: np.ndarray
    wall_distance: np.ndarray
    road_distance: np.ndarray
    centerline: np.ndarray
    s: np.ndarray
    length: float
    heading: np.ndarray
    curvature: np.ndarray
    width: np.ndarray
    gates: np.ndarray
    gate_s: np.ndarray
    direction: str

    # ----------------------------------------------------------------------------- constructors

    @classmethod
    def load(cls, path_or_name: str | Path, legend: TrackLegend | None = None,
             use_checkpoints_file: bool = True) -> "Track":
        """Load a track image (path or bundled name); ``use_checkpoints_file=False`` ignores any
        checkpoints file and places gates automatically."""
        path = resolve_track_path(path_or_name)
        if legend is None:
            legend_path = path.with_suffix(".json")
            legend = TrackLegend.from_file(legend_path) if legend_path.is_file() else TrackLegend()
        rgb = _read_image(path)
        cp_path = _find_checkpoints_file(path) if use_checkpoints_file else None
        checkpoints = None
        if cp_path is not None:
            checkpoints = _read_json_file(cp_path, "checkpoints file", "gates file", "a track's gates take a few kB",
                                          "fix it, or delete it to place gates automatically")
        return cls.from_image(rgb, name=path.stem, legend=legend, checkpoints=checkpoints,
                              path=path, checkpoints_source=str(cp_path) if cp_path else None)

    @classmethod
    def load_cached(cls, path_or_name: str | Path, cache_dir: str | Path) -> "Track":
        """`load`, through a disk cache of built tracks in `cache_dir` (compressed arrays and JSON,
        nothing that runs code) keyed by the image, its legend and checkpoints files and this module's
        code: a cached 1024-px track loads several times faster than it builds (a streamed pool
        loads one per new episode)."""
        path = resolve_track_path(path_or_name)
        legend_path = path.with_suffix(".json")
        h = hashlib.sha256(_SOURCE_HASH)
        for part in (path, legend_path, _find_checkpoints_file(path)):
            h.update(part.read_bytes() if part is not None and part.is_file() else b"-")
        file = Path(cache_dir) / f"{path.stem}-{h.hexdigest()[:24]}.npz"
        if file.is_file():
            try:
                return cls._from_cache(file, path, legend_path)
            except (OSError, ValueError, KeyError):
                pass  # a damaged or partial entry is built again below
        track = cls.load(path)
        track._to_cache(file)
        return track

    def _to_cache(self, file: Path) -> None:
        arrays, meta = {}, {}
        for key, value in vars(self).items():
            if isinstance(value, np.ndarray):
                arrays[key] = value
            elif isinstance(value, (str, float, int, type(None))) or key == "warnings":
                meta[key] = value
            elif key not in ("legend", "path"):  # re-made from the file; anything else: not cached
                return
        arrays["_meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f"{file.stem}.{os.getpid()}.tmp.npz")
        # an .npz (what np.load reads) at zlib level 1: a fifth of np.savez_compressed's time, files ~1.5x
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            for key, value in arrays.items():
                with zf.open(f"{key}.npy", "w", force_zip64=True) as out:
                    np.lib.format.write_array(out, np.asanyarray(value), allow_pickle=False)
        tmp.replace(file)  # atomic: parallel workers never read a half-written entry

    @classmethod
    def _from_cache(cls, file: Path, path: Path, legend_path: Path) -> "Track":
        self = cls.__new__(cls)
        with np.load(file, allow_pickle=False) as data:
            for key in data.files:
                if key != "_meta":
                    setattr(self, key, data[key])
            meta = json.loads(data["_meta"].tobytes())
        for key, value in meta.items():
            setattr(self, key, value)
        self.path = path
        self.legend = TrackLegend.from_file(legend_path) if legend_path.is_file() else TrackLegend()
        return self

    @classmethod
    def from_image(cls, rgb: np.ndarray, name: str = "track", legend: TrackLegend | None = None,
                   checkpoints: object = None, path: Path | None = None,
                   checkpoints_source: str | None = None) -> "Track":
        """Build from an (H, W, 3) uint8 array; ``checkpoints`` is the parsed JSON (or None)."""
        legend = legend or TrackLegend()
        rgb = np.ascontiguousarray(np.asarray(rgb, np.uint8)[..., :3])
        h, w = rgb.shape[:2]
        label = str(path) if path is not None else name
        if min(h, w) < MIN_SIZE or max(h, w) > MAX_SIZE:
            raise TrackError(f"{label} is {w}x{h} px; a track image must be {MIN_SIZE} to {MAX_SIZE} px "
                             "a side: resize it (and set scale_m_per_px in a legend to keep metres)")
        self = cls.__new__(cls)
        self.name = name
        self.path = Path(path) if path is not None else None
        self.scale = float(legend.scale_m_per_px)
        self.legend = legend
        self.rgb = rgb
        self.warnings: list[str] = []
        surface, white = legend.classify(rgb)
        self.surface = surface
        self.checkpoints_source = checkpoints_source
        self._build(white, label, checkpoints)
        return self

    # --------------------------------------------------------------------------------- building

    def _warn(self, msg: str) -> None:
        self.warnings.append(msg)
        warnings.warn(msg, UserWarning, stacklevel=4)

    def _build(self, white: np.ndarray, label: str, checkpoints: object) -> None:
        scale = self.scale
        surface = self.surface
        h, w = surface.shape
        # wall distance: out-of-image counts as wall (pad with one wall pixel)
        nonwall = np.pad((surface != Surface.WALL).astype(np.uint8), 1)
        wd = cv2.distanceTransform(nonwall, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
        self.wall_distance = (wd * scale).astype(np.float32)

        road_all = is_road(surface)
        # distance to the road's edge (grass or wall): what the ray sensors measure by default
        rd = cv2.distanceTransform(np.pad(road_all.astype(np.uint8), 1), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        self.road_distance = (rd[1:-1, 1:-1] * scale).astype(np.float32)
        if not road_all.any():
            raise TrackError(f"{label}: no asphalt found; draw the road in grey (R, G, B within 25 of "
                             "each other, mean 40..200) or give a legend that maps your road colour")
        n_lab, lab, stats, _ = cv2.connectedComponentsWithStats(road_all.astype(np.uint8), connectivity=8)
        areas = stats[1:, cv2.CC_STAT_AREA]
        main = 1 + int(np.argmax(areas))
        road = lab == main
        if n_lab > 2:
            dropped = int(areas.sum() - areas[main - 1])
            self._warn(f"{label}: {n_lab - 1} disconnected road regions; using the largest and ignoring "
                       f"{dropped} road pixels in {n_lab - 2} other region(s) for the centerline")
        self._road = road  # removed before pickling? no: small bool array, kept for gates
        self._white = white
        c = self._extract_centerline(road, label)  # (M, 2) metres, ccw on the image

        direction, file_gates, file_points = (None, None, None)
        if checkpoints is not None:
            src = self.checkpoints_source or "checkpoints"
            direction, file_gates, file_points = _parse_checkpoints(checkpoints, src)
        if file_points is not None:
            file_gates = self._gates_from_points(file_points * scale, c, label)
        elif file_gates is not None:
            file_gates = file_gates * scale
            mids = 0.5 * (file_gates[:, :2] + file_gates[:, 2:])
            for i, m in enumerate(mids):
                if not _lookup_mask(road_all, scale, m[0:1], m[1:2])[0]:
                    raise TrackError(f"{self.checkpoints_source or label}: gate {i} (middle at pixel "
                                     f"{m[0] / scale:.0f}, {m[1] / scale:.0f}) is not on the road; move "
                                     "it across the road or delete the file to place gates automatically")

        if file_gates is not None:
            c = self._orient_by_gates(c, file_gates, direction, label)
            self.gates_source = "file"
        else:
            if direction == "cw":
                c = c[::-1].copy()
            start = self._auto_start(c)
            c = np.roll(c, -start, axis=0)
            self.gates_source = "auto"
        self.direction = "ccw" if _signed_area(c) < 0 else "cw"
        self._set_centerline(c)
        if file_gates is not None:
            self.gates = file_gates
            gs = self.progress(0.5 * (file_gates[:, 0] + file_gates[:, 2]),
                               0.5 * (file_gates[:, 1] + file_gates[:, 3]))
            gs[0] = 0.0
            # the first gate's projection may land just below the end of the lap
            self.gate_s = gs
            self._check_gate_spread(label)
        else:
            self._auto_gates()
        self._warn_road_off_the_lap(self._road, label)
        del self._road, self._white

    def _warn_road_off_the_lap(self, road: np.ndarray, label: str) -> None:
        """Warn about road the lap does not run on (a spur, a pit lane, a crossing: a figure-eight's
        centerline goes round one lobe): karts can drive there, but laps and progress follow the loop."""
        cell = max(1, int(round(1.0 / self.scale)))  # about 1 m
        h, w = road.shape
        pad = np.pad(road, ((0, -h % cell), (0, -w % cell)))
        cells = pad.reshape(pad.shape[0] // cell, cell, pad.shape[1] // cell, cell).mean(axis=(1, 3)) > 0.5
        rows, cols = np.nonzero(cells)
        x, y = (cols + 0.5) * cell * self.scale, (rows + 0.5) * cell * self.scale
        idx, _, lateral, _ = self._project(x, y)
        beyond = np.where(lateral > 0, lateral - self._t_right[idx], -lateral - self._t_left[idx])
        area = float((beyond > 1.5).sum()) * (cell * self.scale) ** 2
        if area > max(30.0, 0.03 * len(x) * (cell * self.scale) ** 2):
            self._warn(f"{label}: {area:.0f} m2 of road lie off the lap the centerline follows (a spur, a pit "
                       "lane or a crossing: figure-eights are not supported); karts can drive there, but laps "
                       "and progress follow the loop found")

    def _check_gate_spread(self, label: str) -> None:
        """A lap counts when every gate is crossed in order: with one gate (or all in one place) a
        kart earns laps by rocking over the line, so the gates must be spread along the lap."""
        source = self.checkpoints_source or label
        n = len(self.gate_s)
        order = np.sort(np.mod(self.gate_s, self.length))
        gaps = np.diff(np.concatenate([order, order[:1] + self.length]))
        if n < MIN_GATES or gaps.max() > 0.5 * self.length:
            raise TrackError(f"{source}: {n} gate(s) cover too little of the {self.length:.0f} m lap; a lap needs at "
                             f"least {MIN_GATES} gates spread along it (no gap over half the lap): add gates, or "
                             "delete the file to place them automatically")

    def _extract_centerline(self, road: np.ndarray, label: str) -> np.ndarray:
        scale = self.scale
        rp = np.pad(road, 1)  # a ring of non-road so that the image border is "outside"
        nonroad = (~rp).astype(np.uint8)
        n, lab = cv2.connectedComponents(nonroad, connectivity=4)
        outside_label = lab[0, 0]
        sizes = np.bincount(lab.ravel(), minlength=n)
        sizes[0] = 0  # road
        sizes[outside_label] = 0
        if sizes.max() == 0:
            _check_background(is_road(self.surface), self._white, label)
            raise TrackError(f"{label}: the road is not a closed loop (no infield enclosed by asphalt); "
                             "draw the track as a closed circuit around an infield")
        inside_label = int(np.argmax(sizes))
        inside = lab == inside_label
        outside = lab == outside_label
        # smaller holes (islands in the road) count as road for the centerline
        d_in = cv2.distanceTransform((~inside).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        d_out = cv2.distanceTransform((~outside).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        blob = inside | (~outside & (d_in < d_out))
        contours, _ = cv2.findContours(blob.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        if not contours:
            raise TrackError(f"{label}: the road is not a closed loop; draw the track as a closed circuit")
        cont = max(contours, key=cv2.contourArea)[:, 0, :].astype(np.float64)
        if len(cont) < 16:
            raise TrackError(f"{label}: the road loop is too small to drive; draw a bigger circuit")
        # contour pixel (col, row) in the padded image -> centre of the original pixel, in metres
        pts = (cont - 1.0 + 0.5) * scale
        pts = _resample_closed(pts, CENTERLINE_SPACING)
        pts = _smooth_closed(pts, 1.0 / CENTERLINE_SPACING)  # sigma 1 m
        pts = _resample_closed(pts, CENTERLINE_SPACING)
        if _signed_area(pts) > 0:  # positive shoelace with y down = clockwise on the image
            pts = pts[::-1].copy()
        length = len(pts) * CENTERLINE_SPACING
        if length < 20:
            raise TrackError(f"{label}: the road loop is only {length:.0f} m long; draw a bigger circuit")
        # sanity: the loop should run on the road
        on = _lookup_mask(rp[1:-1, 1:-1], scale, pts[:, 0], pts[:, 1]).mean()
        if on < 0.5:
            raise TrackError(f"{label}: the road is not a closed loop (the loop found runs off the road); "
                             "draw the track as one closed circuit of asphalt")
        return pts

    def _edges(self, c: np.ndarray, heading: np.ndarray):
        return self.cross_section(c, heading, self._road, cap=True)

    def _auto_start(self, c: np.ndarray) -> int:
        """Index of the start/finish: middle of a white line across the road, else of the longest straight."""
        _, length, heading, curv = closed_geometry(c)
        right, t_l, t_r = self._edges(c, heading)
        n = 24
        u = np.linspace(0.05, 0.95, n)[None, :]
        offs = -t_l[:, None] + (t_l + t_r)[:, None] * u
        xs = c[:, 0:1] + right[:, 0:1] * offs
        ys = c[:, 1:2] + right[:, 1:2] * offs
        frac = _lookup_mask(self._white, self.scale, xs, ys).mean(axis=1)
        cand = frac >= 0.7
        runs = _runs_circular(cand)
        if runs:
            best = max(runs, key=lambda r: (frac[(r[0] + np.arange(r[1])) % len(c)].sum(), -r[0]))
            self.start_source = "line"
            return (best[0] + best[1] // 2) % len(c)
        self.start_source = "straight"
        spacing = length / len(c)
        for thresh in (1 / 100, 1 / 50, 1 / 25):
            runs = [r for r in _runs_circular(np.abs(curv) < thresh) if r[1] * spacing >= 10]
            if runs:
                best = max(runs, key=lambda r: (r[1], -r[0]))
                return (best[0] + best[1] // 2) % len(c)
        sm = ndimage.gaussian_filter1d(np.abs(curv), 10 / spacing, mode="wrap")
        return int(np.argmin(sm))

    def _nearest_index(self, c: np.ndarray, pts: np.ndarray) -> np.ndarray:
        d2 = ((pts[:, None, :] - c[None, :, :]) ** 2).sum(-1)
        return d2.argmin(axis=1)

    def _gates_from_points(self, pts: np.ndarray, c: np.ndarray, label: str) -> np.ndarray:
        src = self.checkpoints_source or label
        road_all = is_road(self.surface)
        for i, p in enumerate(pts):
            if not _lookup_mask(road_all, self.scale, p[0:1], p[1:2])[0]:
                raise TrackError(f"{src}: gate {i} (point at pixel {p[0] / self.scale:.0f}, "
                                 f"{p[1] / self.scale:.0f}) is not on the road; move it onto the road or "
                                 "delete the file to place gates automatically")
        _, _, heading, _ = closed_geometry(c)
        idx = self._nearest_index(c, pts)
        right = np.column_stack([-np.sin(heading[idx]), np.cos(heading[idx])])
        max_d = min(MAX_HALF_WIDTH, max(self.surface.shape) * self.scale)
        t_l, t_r = _cross_section(road_all, self.scale, pts, right, max_d)
        return np.column_stack([pts - right * t_l[:, None], pts + right * t_r[:, None]])

    def _orient_by_gates(self, c: np.ndarray, gates: np.ndarray, direction: str | None,
                         label: str) -> np.ndarray:
        mids = 0.5 * (gates[:, :2] + gates[:, 2:])
        idx = self._nearest_index(c, mids)
        m = len(c)
        g = len(idx)
        if g >= 3:
            rel = (idx - idx[0]) % m
            fwd = np.diff(rel)
            if np.all(fwd > 0):
                reverse = False
            else:
                relr = (idx[0] - idx) % m
                if np.all(np.diff(relr) > 0):
                    reverse = True
                else:
                    # name the first gate out of order in the more plausible direction
                    use = relr if (np.diff(relr) > 0).sum() > (fwd > 0).sum() else rel
                    bad = int(np.argmax(np.diff(use) <= 0)) + 1
                    raise TrackError(f"{self.checkpoints_source or label}: gate {bad} is out of driving "
                                     "order (gates must follow each other around the lap from gate 0); "
                                     "reorder the gates or delete the file to place them automatically")
        else:
            reverse = direction == "cw"
        if g >= 3 and direction is not None and (direction == "cw") != reverse:
            self._warn(f"{self.checkpoints_source or label}: \"direction\": {direction!r} disagrees with "
                       f"the order of the gates; driving {'cw' if reverse else 'ccw'} as the gates say")
        if reverse:
            c = c[::-1].copy()
            idx = m - 1 - idx
        return np.roll(c, -int(idx[0]), axis=0)

    def _set_centerline(self, c: np.ndarray) -> None:
        self.centerline = np.ascontiguousarray(c, dtype=np.float64)
        s, length, heading, curv = closed_geometry(self.centerline)
        self.s, self.length, self.heading, self.curvature = s, length, heading, curv
        right, t_l, t_r = self._edges(self.centerline, heading)
        self.width = t_l + t_r
        self._t_left, self._t_right = t_l, t_r
        self._right = right
        self._build_lookup()

    def _auto_gates(self) -> None:
        """Gates across the road about every `GATE_SPACING` m, perpendicular to the centerline, or
        where it kinks to its smoothed copy: normals of a kink fan out, cross each other inside the
        road, and a kart cutting the corner crossed them out of order (no lap counted)."""
        n = max(4, int(round(self.length / GATE_SPACING)))
        gs = np.arange(n) * (self.length / n)
        idx = np.searchsorted(self.s, gs, side="right") - 1
        idx = np.clip(idx, 0, len(self.s) - 1)
        path, right, t_l, t_r, _ = self.unkinked()
        c, r = path[idx], right[idx]
        self.gates = np.column_stack([c - r * t_l[idx, None], c + r * t_r[idx, None]])
        self.gate_s = self.s[idx].copy()

    def cross_section(self, points: np.ndarray, heading: np.ndarray, road: np.ndarray | None = None,
                      cap: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(right normals, distance to the left road edge, to the right one) of `points` facing
        `heading` on `road` (default: every road pixel; see `_cross_section`). Uncapped by default:
        for a path whose normals do not cross inside the road (`unkinked`) the clearance cap would
        cut the outside of a corner short where the path runs near its inside."""
        right = np.column_stack([-np.sin(heading), np.cos(heading)])
        max_d = min(MAX_HALF_WIDTH, max(self.surface.shape) * self.scale)
        road = is_road(self.surface) if road is None else road
        t_l, t_r = _cross_section(road, self.scale, points, right, max_d, cap)
        return right, t_l, t_r

    def unkinked(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
        """(points, right normals, left and right edge distances, smoothing in m) of the path gates
        and the racing line are laid across, point for point with the centerline: the centerline
        itself, or, where its normals would cross inside the road (`FOLD_LIMIT`), a copy smoothed
        over the least of 2-12 m that brings it under 0.8 (edges measured along its own normals)."""
        out = (self.centerline, self._right, self._t_left, self._t_right, 0.0)
        if _fold(self.curvature, self.length, self._t_left, self._t_right) > FOLD_LIMIT:
            spacing = self.length / len(self.s)
            for sigma in (2.0, 3.0, 4.5, 6.0, 8.0, 12.0):
                c = ndimage.gaussian_filter1d(self.centerline, sigma / spacing, axis=0, mode="wrap")
                _, length, heading, curv = closed_geometry(c)
                right, t_l, t_r = self.cross_section(c, heading)
                out = (c, right, t_l, t_r, sigma)
                if _fold(curv, length, t_l, t_r) <= 0.8:
                    break
        return out

    def _build_lookup(self) -> None:
        """Coarse grid (about 1 m cells) of the nearest centerline index; refined in locate()."""
        cell = max(1, int(round(1.0 / self.scale)))
        h, w = self.surface.shape
        gh, gw = -(-h // cell), -(-w // cell)
        seeds = np.full((gh, gw), -1, np.int32)
        c = self.centerline
        gx = np.clip((c[:, 0] / (self.scale * cell)).astype(np.int64), 0, gw - 1)
        gy = np.clip((c[:, 1] / (self.scale * cell)).astype(np.int64), 0, gh - 1)
        seeds[gy, gx] = np.arange(len(c), dtype=np.int32)
        _, (iy, ix) = ndimage.distance_transform_edt(seeds < 0, return_indices=True)
        self._lookup = seeds[iy, ix]
        self._lookup_cell_m = self.scale * cell
        spacing = self.length / len(c)
        self._lookup_window = int(math.ceil(2.0 * self._lookup_cell_m / spacing)) + 2

    # ------------------------------------------------------------------------------------ queries

    def locate(self, x, y) -> np.ndarray:
        """Nearest centerline index for each point (vectorised, O(1) per point)."""
        return self._project(x, y)[0]

    def frame(self, x, y, index: np.ndarray | None = None):
        """(s in [0, length), lateral offset (m, > 0 right of the centerline), centerline heading).

        ``index`` is accepted for callers that already located the points; it is recomputed identically.
        """
        _, s, lateral, heading = self._project(x, y)
        return s, lateral, heading

    def _project(self, x, y):
        x = np.asarray(x, np.float64)
        shape = np.broadcast(x, y).shape or (1,)
        xf = np.ascontiguousarray(np.broadcast_to(x, shape), np.float64).ravel()
        yf = np.ascontiguousarray(np.broadcast_to(np.asarray(y, np.float64), shape)).ravel()
        idx = np.empty(len(xf), np.int64)
        s, lat, head = np.empty(len(xf)), np.empty(len(xf)), np.empty(len(xf))
        _project_points(self.centerline, self.s, self.heading, self.length, self._lookup, self._lookup_cell_m,
                        self._lookup_window, xf, yf, idx, s, lat, head)
        return idx.reshape(shape), s.reshape(shape), lat.reshape(shape), head.reshape(shape)

    def progress(self, x, y) -> np.ndarray:
        """Metres along the lap in [0, length)."""
        return self.frame(x, y)[0]

    def pose_at(self, s):
        """(x, y, yaw) on the centerline at distance s (any real, wraps), facing forward."""
        scalar = np.ndim(s) == 0
        s = np.mod(np.asarray(s, np.float64), self.length)
        m = len(self.centerline)
        i = np.clip(np.searchsorted(self.s, s, side="right") - 1, 0, m - 1)
        j = (i + 1) % m
        seg = np.where(j == 0, self.length - self.s[i], self.s[j] - self.s[i])
        f = (s - self.s[i]) / np.maximum(seg, 1e-12)
        p = self.centerline[i] + (self.centerline[j] - self.centerline[i]) * f[..., None]
        dh = np.angle(np.exp(1j * (self.heading[j] - self.heading[i])))
        yaw = np.angle(np.exp(1j * (self.heading[i] + dh * f)))
        if scalar:
            return float(p[0]), float(p[1]), float(yaw)
        return p[..., 0], p[..., 1], yaw

    def surface_at(self, x, y) -> np.ndarray:
        x = np.atleast_1d(np.asarray(x, np.float64))
        y = np.atleast_1d(np.asarray(y, np.float64))
        h, w = self.surface.shape
        col = np.floor(x / self.scale)
        row = np.floor(y / self.scale)
        ok = (col >= 0) & (col < w) & (row >= 0) & (row < h)
        out = np.zeros(x.shape, np.uint8)
        out[ok] = self.surface[row[ok].astype(np.int64), col[ok].astype(np.int64)]
        return out

    def width_at(self, s) -> np.ndarray:
        i = np.clip(np.searchsorted(self.s, np.mod(np.asarray(s, np.float64), self.length),
                                    side="right") - 1, 0, len(self.s) - 1)
        return self.width[i]

    # -------------------------------------------------------------------------------- checkpoints

    def checkpoints_dict(self) -> dict:
        gates_px = np.round(self.gates / self.scale, 2)
        return {
            "track": f"{self.name}.png" if self.path is None else self.path.name,
            "direction": self.direction,
            "gates": [[float(v) for v in g] for g in gates_px],
        }

    def save_checkpoints(self, path: str | Path | None = None) -> Path:
        """Write the gates (pixels) to ``path`` (default ``<stem>.checkpoints.json`` next to the PNG)."""
        if path is None:
            if self.path is None:
                raise TrackError(f"track {self.name!r} was not loaded from a file; give a path to "
                                 "save the checkpoints to")
            path = self.path.with_name(f"{self.path.stem}.checkpoints.json")
        path = Path(path)
        data = self.checkpoints_dict()
        text = "{\n" + f'  "track": {json.dumps(data["track"])},\n' \
               f'  "direction": {json.dumps(data["direction"])},\n  "gates": [\n' + \
               ",\n".join("    " + json.dumps(g) for g in data["gates"]) + "\n  ]\n}\n"
        try:
            path.write_text(text)
        except OSError as exc:
            raise TrackError(f"cannot write checkpoints file {path}: {exc}") from None
        return path

    # ------------------------------------------------------------------------------------- misc

    @property
    def shape(self) -> tuple[int, int]:
        return self.surface.shape  # type: ignore[return-value]

    def summary(self) -> dict:
        return {
            "name": self.name,
            "size_px": (self.surface.shape[1], self.surface.shape[0]),
            "scale": self.scale,
            "length_m": self.length,
            "width_mean_m": float(self.width.mean()),
            "width_min_m": float(self.width.min()),
            "gates": len(self.gates),
            "direction": self.direction,
            "warnings": list(self.warnings),
        }

    def __repr__(self) -> str:
        h, w = self.surface.shape
        return (f"Track({self.name!r}, {w}x{h} px, {self.scale} m/px, {self.length:.0f} m, "
                f"{len(self.gates)} gates, {self.direction})")


# ------------------------------------------------------------------------------------- TrackStack


@dataclass(frozen=True)
class TrackPool:
    """Tracks known by how to load them (a pool too large to hold in memory at once):
    ``load(i)`` builds pool track ``i``; ``shape`` is the largest (H, W) among them."""

    size: int
    load: Callable[[int], "Track"]
    shape: tuple[int, int]


@dataclass
class TrackStack:
    """T tracks as stacked arrays, padded with wall (rgb black) to the largest H and W.

    A *streamed* stack (:meth:`streamed`) holds a few slots of a larger :class:`TrackPool`: a kart
    takes its next track with :meth:`acquire`, which loads it into a free slot when it is not in
    memory and tells ``listeners`` (what keeps per-track tables: the race, the observer) which slot
    changed. Grids are written in place, so whoever holds the arrays sees the new track.
    """

    surface: np.ndarray  # (T, H, W) uint8
    wall_distance: np.ndarray  # (T, H, W) float32
    road_distance: np.ndarray  # (T, H, W) float32, metres to the nearest non-road (grass or wall) pixel
    rgb: np.ndarray  # (T, H, W, 3) uint8
    scale: np.ndarray  # (T,) float64
    tracks: list
    pool: TrackPool | None = None
    slot_track: np.ndarray | None = None  # (T,) pool index each slot holds, -1 while empty (streamed only)
    listeners: list[Callable[[int], None]] = field(default_factory=list)
    _last_use: np.ndarray | None = None

    @classmethod
    def from_tracks(cls, tracks) -> "TrackStack":
        tracks = list(tracks)
        if not tracks:
            raise TrackError("no tracks given; pass at least one track")
        h = max(t.surface.shape[0] for t in tracks)
        w = max(t.surface.shape[1] for t in tracks)
        stack = cls._empty(len(tracks), (h, w), tracks)
        for k, t in enumerate(tracks):
            stack._fill(k, t)
        return stack

    @classmethod
    def streamed(cls, pool: TrackPool, slots: int) -> "TrackStack":
        """`slots` tracks of `pool` in memory at a time. Only slot 0 is loaded (pool track 0); the
        others stand for it, all wall, until a kart acquires a track there (untouched zero pages take
        no memory)."""
        if pool.size < 1 or slots < 1:
            raise TrackError(f"a streamed track stack needs at least one track and one slot, not {pool.size} / {slots}")
        first = pool.load(0)
        stack = cls._empty(slots, pool.shape, [first] * slots)
        stack.pool = pool
        stack.slot_track = np.full(slots, -1, np.int64)
        stack._last_use = np.zeros(slots, np.int64)
        stack._fill(0, first)
        stack.slot_track[0] = 0
        return stack

    @classmethod
    def _empty(cls, n: int, shape: tuple[int, int], tracks: list) -> "TrackStack":
        h, w = shape
        return cls(surface=np.zeros((n, h, w), np.uint8), wall_distance=np.zeros((n, h, w), np.float32),
                   road_distance=np.zeros((n, h, w), np.float32), rgb=np.zeros((n, h, w, 3), np.uint8),
                   scale=np.ones(n, np.float64), tracks=list(tracks))

    def _fill(self, k: int, track) -> None:
        """Write `track` into slot `k`. A track of the slot's full size then keeps views of the slot
        instead of its own grids (one copy in memory, not two)."""
        th, tw = track.surface.shape
        h, w = self.surface.shape[1:]
        if th > h or tw > w:
            raise TrackError(f"track {track.name} is {tw}x{th} px, larger than the {w}x{h} px slots of its pool")
        for name in ("surface", "wall_distance", "road_distance", "rgb"):
            grid = getattr(self, name)
            if (th, tw) == (h, w):
                grid[k] = getattr(track, name)
                setattr(track, name, grid[k])
            else:
                grid[k] = 0  # the padding is wall
                grid[k, :th, :tw] = getattr(track, name)
        self.scale[k] = track.scale
        self.tracks[k] = track

    @property
    def pool_size(self) -> int:
        """How many tracks a kart draws from: the pool's size when streamed, else the stack's."""
        return self.pool.size if self.pool is not None else len(self.tracks)

    def acquire(self, i: int, busy: np.ndarray) -> int:
        """The slot that holds pool track `i` (a resident stack: slot `i`). A streamed stack loads a
        track not in memory into the least recently used slot that no kart is on (``busy[slot]``);
        with every slot busy the kart takes slot ``i % slots``'s track instead (give a stack at least
        one slot per kart)."""
        if self.pool is None:
            return int(i)
        assert self.slot_track is not None and self._last_use is not None
        held = np.flatnonzero(self.slot_track == i)
        if held.size:
            slot = int(held[0])
        else:
            free = np.flatnonzero(~np.asarray(busy, bool))
            if not free.size:
                slot = int(i) % len(self.tracks)
            else:
                slot = int(free[np.argmin(self._last_use[free])])
                self._fill(slot, self.pool.load(int(i)))
                self.slot_track[slot] = i
                for listener in self.listeners:
                    listener(slot)
        self._last_use[slot] = self._last_use.max() + 1
        return slot

    def centerlines(self) -> "CenterlineStack":
        """All tracks' centerlines and nearest-point lookup grids as padded arrays (for numba kernels)."""
        return CenterlineStack.from_tracks(self.tracks)

    def __len__(self) -> int:
        return len(self.tracks)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tracks]


@njit(cache=True)
def project_point(points, s, heading, m, length, lookup, cell_m, window, x, y):
    """Nearest centerline index, s, lateral offset and heading of point (x, y) on one track.

    The lookup grid gives a nearby centerline point in O(1); the nearest one is searched within
    ``window`` points of it. s is refined by the projection onto the local direction.
    """
    gh, gw = lookup.shape
    gx = min(max(int(math.floor(x / cell_m)), 0), gw - 1)
    gy = min(max(int(math.floor(y / cell_m)), 0), gh - 1)
    i0 = lookup[gy, gx]
    best_i, best_d = i0, np.inf
    for o in range(-window, window + 1):
        j = (i0 + o) % m
        d = (points[j, 0] - x) ** 2 + (points[j, 1] - y) ** 2
        if d < best_d:
            best_i, best_d = j, d
    dx, dy = x - points[best_i, 0], y - points[best_i, 1]
    h = heading[best_i]
    ch, sh = math.cos(h), math.sin(h)
    spacing = length / m
    along = min(max(dx * ch + dy * sh, -spacing), spacing)
    return best_i, (s[best_i] + along) % length, -dx * sh + dy * ch, h


@njit(cache=True)
def _project_points(points, s, heading, length, lookup, cell_m, window, x, y, idx, s_out, lat_out, head_out):
    m = points.shape[0]
    for k in range(x.shape[0]):
        idx[k], s_out[k], lat_out[k], head_out[k] = project_point(
            points, s, heading, m, length, lookup, cell_m, window, x[k], y[k])


@dataclass
class CenterlineStack:
    """Padded per-track centerline arrays; ``Track.locate``/``Track.frame`` for compiled kernels."""

    points: np.ndarray  # (T, M, 2) metres
    s: np.ndarray  # (T, M)
    heading: np.ndarray  # (T, M)
    n_points: np.ndarray  # (T,) int64
    length: np.ndarray  # (T,)
    lookup: np.ndarray  # (T, GH, GW) int32 nearest-point seeds
    lookup_cell_m: np.ndarray  # (T,)
    lookup_window: np.ndarray  # (T,) int64

    @classmethod
    def from_tracks(cls, tracks) -> "CenterlineStack":
        n = len(tracks)
        m = max(len(t.centerline) for t in tracks)
        gh = max(t._lookup.shape[0] for t in tracks)
        gw = max(t._lookup.shape[1] for t in tracks)
        out = cls(np.zeros((n, m, 2)), np.zeros((n, m)), np.zeros((n, m)), np.zeros(n, np.int64), np.zeros(n),
                  np.zeros((n, gh, gw), np.int32), np.zeros(n), np.zeros(n, np.int64))
        for k, t in enumerate(tracks):
            out.put(k, t)
        return out

    def fits(self, track) -> bool:
        """Whether `track`'s centerline and lookup grid fit a row of these padded arrays."""
        lh, lw = track._lookup.shape
        return len(track.centerline) <= self.points.shape[1] and lh <= self.lookup.shape[1] and lw <= self.lookup.shape[2]

    def put(self, k: int, t) -> None:
        """Track `t` into row `k` (it must `fit`)."""
        c = len(t.centerline)
        self.points[k, c:], self.s[k, c:], self.heading[k, c:] = 0.0, 0.0, 0.0
        self.points[k, :c], self.s[k, :c], self.heading[k, :c] = t.centerline, t.s, t.heading
        self.n_points[k], self.length[k] = c, t.length
        lh, lw = t._lookup.shape
        self.lookup[k, :lh, :lw] = t._lookup
        # padding cells (a smaller track in a larger stack) point at the nearest edge cell's seed
        self.lookup[k, lh:, :lw] = t._lookup[-1:, :]
        self.lookup[k, :, lw:] = self.lookup[k, :, lw - 1: lw]
        self.lookup_cell_m[k], self.lookup_window[k] = t._lookup_cell_m, t._lookup_window
