"""Random and hand-designed kart circuits drawn in the track image format of :mod:`kartsim.sim.track`.

``generate_track(seed, ...)`` returns an (H, W, 3) uint8 image: grass background, a black wall
around the image, tyre walls (black/blue) a few metres off the road, grey asphalt, red/white kerbs
on the inside of corners and a white start/finish line across the middle of the longest straight.
The road never comes close to itself: candidate layouts that do are rejected and the next one
(derived deterministically from the seed) is tried, so the same seed always gives the same image.

``build_bundled_tracks(out_dir)`` rebuilds ``circuit.png``, ``oval.png`` and ``technical.png`` and
their ``<stem>.checkpoints.json`` files.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage
from scipy.interpolate import CubicSpline

from kartsim.errors import KartsimError
from kartsim.sim.config import TRACK_STYLES as STYLES
from kartsim.sim.track import COLORS, DEFAULT_SCALE, MAX_SIZE, MIN_SIZE, Track

__all__ = ["generate_track", "save_track", "build_bundled_tracks", "draw_track", "STYLES",
           "CIRCUIT_SEGMENTS"]

_STYLE_CODE = {"circuit": 1, "oval": 2, "technical": 3, "grandprix": 4, "drawn": 5}
MAX_ATTEMPTS = 400

# Hand-designed layout of the bundled circuit, as (straight, metres) and (arc, radius m, degrees;
# negative = left) pieces driven counter-clockwise on the image from the start/finish straight:
# a fast left sweeper, a right-left-right chicane, a hairpin dropping into the infield, a double
# left, fast esses and a last corner onto the straight. The first two straights are stretched
# to close the loop exactly (see _closed_turtle).
CIRCUIT_SEGMENTS = [
    ("S", 170.0), ("A", 35.0, -90.0), ("S", 40.0),                 # start/finish, turn 1
    ("A", 14.0, 50.0), ("A", 14.0, -100.0), ("A", 14.0, 50.0),     # chicane
    ("S", 55.0), ("A", 22.0, -100.0), ("S", 30.0), ("A", 40.0, 10.0),
    ("A", 16.0, -90.0), ("S", 55.0), ("A", 10.0, 180.0), ("S", 40.0), ("A", 16.0, -90.0),  # hairpin
    ("S", 95.0), ("A", 18.0, -45.0), ("S", 15.0), ("A", 18.0, -45.0),                       # double left
    ("A", 30.0, 55.0), ("A", 30.0, -110.0), ("A", 30.0, 55.0),     # esses
    ("S", 30.0), ("A", 20.0, -90.0),                               # last corner
]
CIRCUIT_SIZE = (1280, 960)  # W, H in pixels at 0.25 m


# ----------------------------------------------------------------------------------- geometry


def _spline_closed(points: np.ndarray, n_out: int = 4000) -> np.ndarray:
    """Periodic cubic spline through control points, chord-length parametrised; (n_out, 2)."""
    p = np.asarray(points, np.float64)
    closed = np.vstack([p, p[:1]])
    d = np.hypot(*np.diff(closed, axis=0).T)
    t = np.concatenate([[0.0], np.cumsum(np.sqrt(d))])  # centripetal: no cusps or loops
    cs = CubicSpline(t, closed, bc_type="periodic", axis=0)
    tt = np.linspace(0, t[-1], n_out, endpoint=False)
    return cs(tt)


def _resample(pts: np.ndarray, spacing: float) -> np.ndarray:
    closed = np.vstack([pts, pts[:1]])
    seg = np.hypot(*np.diff(closed, axis=0).T)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    n = max(16, int(round(s[-1] / spacing)))
    t = np.arange(n) * (s[-1] / n)
    return np.column_stack([np.interp(t, s, closed[:, 0]), np.interp(t, s, closed[:, 1])])


def _length(pts: np.ndarray) -> float:
    return float(np.hypot(*(np.roll(pts, -1, axis=0) - pts).T).sum())


def _curvature(pts: np.ndarray, sigma_m: float = 1.0) -> np.ndarray:
    spacing = _length(pts) / len(pts)
    d = np.roll(pts, -1, axis=0) - np.roll(pts, 1, axis=0)
    h = np.arctan2(d[:, 1], d[:, 0])
    dh = np.angle(np.exp(1j * (np.roll(h, -1) - np.roll(h, 1))))
    k = dh / (4 * spacing)
    return ndimage.gaussian_filter1d(k, max(sigma_m / spacing, 0.5), mode="wrap")


def _signed_area(c: np.ndarray) -> float:
    x, y = c[:, 0], c[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def _check_layout(pts: np.ndarray, width: float, clearance: float, sharp: bool = False) -> str | None:
    """None when drivable, else the reason: too tight a corner (unless `sharp` corners are the
    style) or the road coming near itself."""
    from scipy.spatial import cKDTree

    spacing = _length(pts) / len(pts)
    k = np.abs(_curvature(pts, 0.5))
    r_min = width / 2 + 2.0
    if not sharp and k.max() > 1.0 / r_min:
        return f"corner radius {1 / k.max():.1f} m < {r_min:.1f} m"
    tree = cKDTree(pts)
    pairs = tree.query_pairs(width + clearance, output_type="ndarray")
    if len(pairs):
        n = len(pts)
        di = np.abs(pairs[:, 0] - pairs[:, 1])
        arc = np.minimum(di, n - di) * spacing
        if np.any(arc > max(3.0 * width, math.pi * (width + clearance) / 2 + 2)):
            return "road too close to itself"
    return None


def _start_index(pts: np.ndarray) -> int:
    """Middle of the longest straight (lowest curvature run)."""
    spacing = _length(pts) / len(pts)
    k = np.abs(_curvature(pts, 2.0))
    for thresh in (1 / 150, 1 / 100, 1 / 60, 1 / 35):
        flag = k < thresh
        if flag.all():
            return 0
        if not flag.any():
            continue
        start = int(np.argmin(flag))
        f = np.roll(flag, -start)
        d = np.diff(np.concatenate([[0], f.astype(np.int8), [0]]))
        b, e = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
        lens = e - b
        j = int(np.argmax(lens))
        if lens[j] * spacing >= 15:
            return (int(b[j]) + int(lens[j]) // 2 + start) % len(pts)
    sm = ndimage.gaussian_filter1d(k, 10 / spacing, mode="wrap")
    return int(np.argmin(sm))


# ------------------------------------------------------------------------------------ drawing


def draw_track(centerline: np.ndarray, width_m: float, height_px: int, width_px: int,
               scale: float = DEFAULT_SCALE, start_index: int | None = None,
               runoff_m: float | None = None) -> np.ndarray:
    """Draw a closed centerline (metres, driving order) as a track image (H, W, 3) uint8."""
    H, W = int(height_px), int(width_px)
    pts = _resample(np.asarray(centerline, np.float64), scale * 0.4)
    if _signed_area(pts) > 0:
        pts = pts[::-1].copy()  # counter-clockwise on the image
    n = len(pts)
    if start_index is None:
        start_index = _start_index(pts)
    else:  # index into the given centerline -> index into the resampled one
        p0 = np.asarray(centerline, np.float64)[start_index]
        start_index = int(np.argmin(((pts - p0) ** 2).sum(1)))
    pts = np.roll(pts, -start_index, axis=0)
    spacing = _length(pts) / n
    s = np.arange(n) * spacing
    length = n * spacing
    d = np.roll(pts, -1, axis=0) - np.roll(pts, 1, axis=0)
    heading = np.arctan2(d[:, 1], d[:, 0])
    curv = _curvature(pts, 3.0)

    # nearest centerline sample of every pixel: seeds in raster order give the label mapping
    seeds = np.ones((H, W), np.uint8)
    cols = np.clip((pts[:, 0] / scale).astype(np.int64), 0, W - 1)
    rows = np.clip((pts[:, 1] / scale).astype(np.int64), 0, H - 1)
    seed_idx = np.full((H, W), -1, np.int64)
    seed_idx[rows, cols] = np.arange(n)
    seeds[rows, cols] = 0
    _, labels = cv2.distanceTransformWithLabels(seeds, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    zr, zc = np.nonzero(seeds == 0)
    lab2idx = np.concatenate([[0], seed_idx[zr, zc]])
    idx = lab2idx[labels]
    # exact distance to the nearest seed (the label's pixel may differ slightly from the EDT's)
    yy, xx = np.mgrid[0:H, 0:W]
    px = (xx + 0.5) * scale
    py = (yy + 0.5) * scale
    dx = px - pts[idx, 0]
    dy = py - pts[idx, 1]
    dist = cv2.distanceTransform(seeds, cv2.DIST_L2, cv2.DIST_MASK_PRECISE) * scale
    ch, sh = np.cos(heading[idx]), np.sin(heading[idx])
    lateral = -dx * sh + dy * ch  # > 0 right of travel
    # along-track position of every pixel (projection corrects the approximate nearest label)
    s_pix = np.mod(s[idx] + dx * ch + dy * sh, length)
    del ch, sh, dx, dy, px, py, xx, yy
    half = width_m / 2
    if runoff_m is None:
        runoff_m = float(np.clip(0.06 * min(H, W) * scale, 3.0, 7.0))
    wall_w = 1.25

    img = np.empty((H, W, 3), np.uint8)
    img[:] = COLORS["grass"]
    far = dist >= half + runoff_m + wall_w
    img[far] = COLORS["grass_far"]
    tyre = (dist >= half + runoff_m) & ~far
    tyre_blue = tyre & ((s_pix // 2.0) % 2 == 1)
    img[tyre] = COLORS["wall"]
    img[tyre_blue] = COLORS["wall_blue"]
    road = dist <= half
    img[road] = COLORS["asphalt"]
    # kerbs on the inside of corners tighter than 45 m radius, 1 m wide, 1 m stripes
    k = curv[idx]
    kerb = road & (dist > half - 1.0) & (np.abs(k) > 1 / 45) & (lateral * k > 0)
    red = (s_pix // 1.0) % 2 == 0
    img[kerb & red] = COLORS["kerb_red"]
    img[kerb & ~red] = COLORS["kerb_white"]
    # start/finish line: 1 m white band across the road at s = 0
    ds = np.minimum(s_pix, length - s_pix)
    img[road & (ds < 0.5)] = COLORS["kerb_white"]
    # border wall
    b = max(2, int(round(1.0 / scale)))
    img[:b] = COLORS["wall"]
    img[-b:] = COLORS["wall"]
    img[:, :b] = COLORS["wall"]
    img[:, -b:] = COLORS["wall"]
    return img


# ---------------------------------------------------------------------------------- generator


def _shape(rng: np.random.Generator, style: str, simplify: int, side_m: float = 256.0) -> np.ndarray:
    """Control points of a closed shape around the origin, unit-ish radius (more on big images)."""
    more = max(1.0, side_m / 256.0) ** 0.5
    if style == "oval":
        a = rng.uniform(0.6, 1.6)  # half straight length / radius
        th = np.linspace(-math.pi / 2, math.pi / 2, 7)
        right = np.column_stack([a + np.cos(th), np.sin(th)])
        left = np.column_stack([-a - np.cos(th), -np.sin(th)])
        straight_top = np.column_stack([np.linspace(a, -a, 5)[1:-1], np.ones(3)])
        straight_bot = np.column_stack([np.linspace(-a, a, 5)[1:-1], -np.ones(3)])
        pts = np.vstack([right, straight_top, left, straight_bot])
        pts[:, 1] *= rng.uniform(0.85, 1.0)
        return pts
    if style == "grandprix":
        return _grand_prix_shape(rng, simplify)
    if style == "drawn":
        return _drawn_shape(rng, simplify)
    if style == "technical":
        n = max(7, int(int(rng.integers(10, 15)) * more) - simplify)
        rmin, jitter, disp = 0.35, 0.35, 0.28
    else:
        n = max(6, int(int(rng.integers(8, 12)) * more) - simplify)
        rmin, jitter, disp = 0.5, 0.3, 0.18
    ang = 2 * math.pi * (np.arange(n) + rng.uniform(-jitter, jitter, n)) / n
    ang = np.sort(ang)
    r = rng.uniform(rmin, 1.0, n)
    pts = np.column_stack([r * np.cos(ang), r * np.sin(ang)])
    # midpoint displacement: push the middle of every edge in or out (twistier layouts)
    mid = 0.5 * (pts + np.roll(pts, -1, axis=0))
    edge = np.roll(pts, -1, axis=0) - pts
    normal = np.column_stack([edge[:, 1], -edge[:, 0]])
    mid = mid + normal * rng.uniform(-disp, disp, n)[:, None]
    return _stretch_and_turn(np.stack([pts, mid], axis=1).reshape(-1, 2), rng, 1.4)


def _drawn_shape(rng: np.random.Generator, simplify: int) -> np.ndarray:
    """Corners of a polygon joined by straight lines (no spline), as a user draws a track with a
    brush: 5-9 corners, every other edge's middle pushed in or out (concave corners too), so the
    bends are sharp (the road's width rounds their outside) and the straights straight."""
    n = max(4, int(rng.integers(5, 10)) - simplify)
    ang = np.sort(2 * math.pi * (np.arange(n) + rng.uniform(-0.35, 0.35, n)) / n)
    r = rng.uniform(0.5, 1.0, n)
    corners = np.column_stack([r * np.cos(ang), r * np.sin(ang)])
    edge = np.roll(corners, -1, axis=0) - corners
    pts = []
    for i in range(n):
        pts.append(corners[i])
        if rng.random() < 0.5:
            pts.append(corners[i] + 0.5 * edge[i] + np.array([edge[i][1], -edge[i][0]]) * rng.uniform(-0.25, 0.25))
    return _stretch_and_turn(np.asarray(pts), rng, 1.4)


def _grand_prix_shape(rng: np.random.Generator, simplify: int) -> np.ndarray:
    """Control points of a layout with long straights: a polygon of 5-9 corners whose one or two
    longest edges are held straight (four more points along each, which the spline passes through
    in a line: 60-140 m straights on a 256 m image) while the other edges bend in or out."""
    n = max(5, int(rng.integers(6, 10)) - simplify)
    ang = np.sort(2 * math.pi * (np.arange(n) + rng.uniform(-0.3, 0.3, n)) / n)
    r = rng.uniform(0.55, 1.0, n)
    corners = np.column_stack([r * np.cos(ang), r * np.sin(ang)])
    edge = np.roll(corners, -1, axis=0) - corners
    straight = set(np.argsort(-np.hypot(*edge.T))[: int(rng.integers(1, 3))].tolist())
    pts = []
    for i in range(n):
        pts.append(corners[i])
        if i in straight:
            pts.extend(corners[i] + f * edge[i] for f in (0.2, 0.4, 0.6, 0.8))
        else:
            pts.append(corners[i] + 0.5 * edge[i] + np.array([edge[i][1], -edge[i][0]]) * rng.uniform(-0.18, 0.18))
    return _stretch_and_turn(np.asarray(pts), rng, 1.5)


def _stretch_and_turn(pts: np.ndarray, rng: np.random.Generator, stretch: float) -> np.ndarray:
    """`pts` stretched along x by up to `stretch` and turned by a random angle."""
    pts[:, 0] *= rng.uniform(1.0, stretch)
    rot = rng.uniform(0, 2 * math.pi)
    c, s_ = math.cos(rot), math.sin(rot)
    return pts @ np.array([[c, -s_], [s_, c]])


def generate_track(seed: int, size: int = 1024, length_m: float | None = None, width_m: float = 9.0,
                   style: str = "circuit", scale: float = DEFAULT_SCALE) -> np.ndarray:
    """A random closed circuit as an (size, size, 3) uint8 track image; same seed -> same image."""
    if style not in STYLES:
        raise KartsimError(f"unknown track style {style!r}; choose one of {', '.join(STYLES)}")
    if not MIN_SIZE <= int(size) <= MAX_SIZE:
        raise KartsimError(f"size {size} px is out of range; use {MIN_SIZE}..{MAX_SIZE}")
    if not 2.0 <= width_m <= 40.0:
        raise KartsimError(f"road width {width_m} m is out of range; use 2..40 m")
    if not 0.01 <= scale <= 10:
        raise KartsimError(f"scale {scale} m/px is out of range; use 0.01..10")
    if not 0 <= int(seed) < 2**63:
        raise KartsimError(f"seed {seed} is out of range; use a whole number from 0 up")
    if length_m is not None and not 50.0 <= length_m <= 20_000.0:
        raise KartsimError(f"lap length {length_m} m is out of range; use 50..20000 m (or leave --length out)")
    size = int(size)
    seed = int(seed)
    if style == "random":
        style = ("circuit", "oval", "technical")[int(np.random.default_rng([seed, 99]).integers(3))]
    side_m = size * scale
    runoff = float(np.clip(0.06 * side_m, 3.0, 7.0))
    margin = width_m / 2 + runoff + 1.25 + 1.0 + 1.0
    avail = side_m - 2 * margin
    if avail < 4 * width_m:
        raise KartsimError(f"a {size} px image at {scale} m/px is too small for a {width_m} m wide road; "
                           "use a bigger --size or a narrower road")
    clearance = max(4.0, 0.5 * width_m)
    reason = "no attempt"
    for attempt in range(MAX_ATTEMPTS):
        rng = np.random.default_rng([seed, attempt, _STYLE_CODE[style]])
        st = style if attempt < MAX_ATTEMPTS - 50 or length_m is not None else "oval"
        ctrl = _shape(rng, st, simplify=attempt // 60, side_m=side_m)
        # drawn: straight edges, 4000 points evenly along the polygon, like the spline's
        pts = _resample(ctrl, _length(ctrl) / 4000) if st == "drawn" else _spline_closed(ctrl)
        lo, hi = pts.min(0), pts.max(0)
        span = hi - lo
        k_fit = avail / max(span.max(), 1e-9)
        unit_len = _length(pts)
        if length_m is not None:
            k = length_m / unit_len
            if k > k_fit:
                reason = f"{length_m:.0f} m does not fit"
                continue
        else:
            k = k_fit * rng.uniform(0.9, 1.0)
        pts = (pts - (lo + hi) / 2) * k + side_m / 2
        pts = _resample(pts, 0.5)
        reason = _check_layout(pts, width_m, clearance, sharp=st == "drawn") or ""
        if not reason:
            return draw_track(pts, width_m, size, size, scale, runoff_m=runoff)
    if length_m is not None:
        raise KartsimError(f"could not fit a {length_m:.0f} m {style} track in {size} px at {scale} m/px "
                           f"({reason}); use a bigger --size or a shorter length")
    raise KartsimError(f"could not generate a {style} track for seed {seed} ({reason}); try another seed")


def save_track(img: np.ndarray, path: str | Path) -> Path:
    """Write a track image as PNG (flat colours compress well)."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise KartsimError(f"{path}: track images are saved as PNG; use a .png file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    ok = cv2.imwrite(str(path), cv2.cvtColor(np.asarray(img, np.uint8), cv2.COLOR_RGB2BGR),
                     [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise KartsimError(f"cannot write {path}; check the folder exists and is writable")
    return path


# ------------------------------------------------------------------------------ bundled tracks


def _turtle(segments, step: float = 0.25):
    """Points (every ``step`` m) of straight/arc pieces from (0, 0) heading east; -> (pts, end, heading)."""
    x = y = h = 0.0
    pts = []
    for seg in segments:
        if seg[0] == "S":
            length, turn = float(seg[1]), 0.0
        else:
            length, turn = float(seg[1]) * abs(math.radians(seg[2])), math.radians(seg[2])
        n = max(1, int(round(length / step)))
        for _ in range(n):
            pts.append((x, y))
            hm = h + turn / n / 2
            x += math.cos(hm) * length / n
            y += math.sin(hm) * length / n
            h += turn / n
    return np.asarray(pts), np.array([x, y]), h


def _closed_turtle(segments, ia: int = 0, ib: int = 2) -> np.ndarray:
    """Stretch straights ``ia`` and ``ib`` so the turtle path closes; -> points (metres)."""
    segs = list(segments)
    _, end, _ = _turtle(segs)

    def unit(i):
        h = sum(math.radians(s[2]) for s in segs[:i] if s[0] == "A")
        return np.array([math.cos(h), math.sin(h)])

    d = np.linalg.solve(np.column_stack([unit(ia), unit(ib)]), -end)
    segs[ia] = ("S", segs[ia][1] + d[0])
    segs[ib] = ("S", segs[ib][1] + d[1])
    pts, end, _ = _turtle(segs)
    assert np.hypot(*end) < 1e-6
    return pts


def circuit_image() -> np.ndarray:
    """The bundled default circuit (hand-designed layout, ~1 km, 9 m wide)."""
    W, H = CIRCUIT_SIZE
    scale = DEFAULT_SCALE
    pts = _closed_turtle(CIRCUIT_SEGMENTS)
    lo, hi = pts.min(0), pts.max(0)
    pts = pts - (lo + hi) / 2 + np.array([W, H]) * scale / 2
    start = int(np.argmin(np.hypot(*(pts - pts[0] - [75.0, 0.0]).T)))  # middle of the straight
    return draw_track(_resample(pts, 0.5), 9.0, H, W, scale, start_index=start // 2, runoff_m=7.0)


def oval_image() -> np.ndarray:
    """The bundled oval: two 120 m straights joined by 35 m radius turns, 10 m wide."""
    W, H = 1024, 640
    scale = DEFAULT_SCALE
    r, half_straight = 35.0, 60.0
    cx, cy = W * scale / 2, H * scale / 2
    pts = []
    for x in np.arange(-half_straight, half_straight, 0.5):  # bottom straight, eastwards
        pts.append((cx + x, cy + r))
    for a in np.arange(0, math.pi, 0.5 / r):  # right turn-around (anticlockwise on the image)
        pts.append((cx + half_straight + r * math.sin(a), cy + r * math.cos(a)))
    for x in np.arange(half_straight, -half_straight, -0.5):  # top straight, westwards
        pts.append((cx + x, cy - r))
    for a in np.arange(0, math.pi, 0.5 / r):
        pts.append((cx - half_straight - r * math.sin(a), cy - r * math.cos(a)))
    pts = np.asarray(pts)
    return draw_track(pts, 10.0, H, W, scale, start_index=int(half_straight / 0.5), runoff_m=7.0)


TECHNICAL_SEED = 3


def technical_image() -> np.ndarray:
    """The bundled technical track: a tight, twisty generated layout, 8 m wide."""
    return generate_track(TECHNICAL_SEED, size=1024, width_m=8.0, style="technical")


def build_bundled_tracks(out_dir: str | Path | None = None) -> list[Path]:
    """(Re)build circuit.png, oval.png, technical.png and their checkpoints files in ``out_dir``."""
    from kartsim.sim.track import BUNDLED_DIR

    out = Path(out_dir) if out_dir is not None else BUNDLED_DIR
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fn in (("circuit", circuit_image), ("oval", oval_image), ("technical", technical_image)):
        path = out / f"{name}.png"
        save_track(fn(), path)
        track = Track.load(path, use_checkpoints_file=False)  # gates from the new image
        cp = track.save_checkpoints()
        written += [path, cp]
    return written
