"""Sensors: distance rays on the wall-distance field and a batched top-down / first-person camera.

Conventions (docs/ARCHITECTURE.md): world metres with image axes (y down), ``yaw = atan2(dy, dx)``,
the kart frame has ``forward`` along the heading and ``right`` to the driver's right, which is
``(-sin yaw, cos yaw)`` in world coordinates. Stacked grids are (T, H, W) with per-kart
``track_idx`` and per-track ``scale[T]`` (metres per pixel). Anything outside a grid is a wall.

Both sensors are single numba kernels that loop over all karts (no per-kart Python loop).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np
from numba import njit

from kartsim.errors import ConfigError

__all__ = ["cast_rays", "compact_ray_field", "CameraConfig", "CameraRenderer", "luma", "gray_texture",
           "GRAY_BANDS"]


# --------------------------------------------------------------------------------------------------
# rays


@njit(cache=True, fastmath=True, inline="always")
def _field_at(field, t, px, py):
    """Field value of the pixel containing pixel coordinates (px, py); 0 (wall) outside the grid."""
    if px < 0.0 or py < 0.0:
        return 0
    c = int(px)
    r = int(py)
    if c >= field.shape[2] or r >= field.shape[1]:
        return 0
    return field[t, r, c]


@njit(cache=True, fastmath=True)
def _cast_rays_kernel(field, px_per_unit, scale, track_idx, x, y, yaw, angles, max_range, out):
    """Exact first wall pixel along each ray, marching in pixel units.

    Far from walls a ray jumps by the distance field less a 1.5 px margin (sphere tracing: the
    field is measured between pixel centres, so a point anywhere in a pixel may be 1.42 px
    closer to a wall's edge); near walls it walks cell by cell (DDA), so even a wall corner
    the ray only clips is found. A kart's rays advance in lockstep: their independent memory
    reads overlap instead of waiting on each other, ~1.6x faster than one ray after another.
    """
    n = x.shape[0]
    nr = angles.shape[0]
    cos_a = np.cos(angles)
    sin_a = np.sin(angles)
    dxs = np.empty(nr)
    dys = np.empty(nr)
    tts = np.empty(nr)
    live = np.empty(nr, np.bool_)
    for k in range(n):
        t = track_idx[k]
        s = scale[t]
        inv_s = 1.0 / s
        unit = 0.97 * px_per_unit[t]  # 3 % slack for the field's rounding
        px0 = x[k] * inv_s
        py0 = y[k] * inv_s
        max_px = max_range * inv_s
        cy = math.cos(yaw[k])
        sy = math.sin(yaw[k])
        for j in range(nr):
            dxs[j] = cy * cos_a[j] - sy * sin_a[j]
            dys[j] = sy * cos_a[j] + cy * sin_a[j]
            tts[j] = 0.0
            live[j] = True
            out[k, j] = max_range
        n_live = nr
        while n_live > 0:
            for j in range(nr):
                if not live[j]:
                    continue
                tt = tts[j]
                dx = dxs[j]
                dy = dys[j]
                px = px0 + dx * tt
                py = py0 + dy * tt
                v = _field_at(field, t, px, py)
                if v == 0:
                    live[j] = False
                    n_live -= 1
                    out[k, j] = min(tt * s, max_range)
                    continue
                step = unit * v - 1.5
                if step < 1.0:
                    # to the next pixel boundary, just across it
                    cx = math.floor(px)
                    cyy = math.floor(py)
                    tx = (cx + 1.0 - px) / dx if dx > 0.0 else ((cx - px) / dx if dx < 0.0 else 1e30)
                    ty = (cyy + 1.0 - py) / dy if dy > 0.0 else ((cyy - py) / dy if dy < 0.0 else 1e30)
                    step = min(tx, ty) + 1e-6
                tt += step
                tts[j] = tt
                if tt >= max_px:
                    live[j] = False
                    n_live -= 1
    return out


COMPACT_UNITS_PER_PIXEL = 2.0  # compact_ray_field's unit: half a pixel


def compact_ray_field(distance_m: np.ndarray, scale) -> np.ndarray:
    """A distance field (T, H, W) in metres as uint8 half-pixels, rounded down and capped at 255.

    A quarter of the memory of the float field, so the rays' scattered reads stay in cache; the
    values only size the jumps (rounding down keeps them safe), and 0 still means wall.
    """
    field = distance_m if distance_m.ndim == 3 else distance_m[None]
    s = np.atleast_1d(np.asarray(scale, np.float64))[:, None, None]
    return np.clip(np.floor(field / s * COMPACT_UNITS_PER_PIXEL), 0, 255).astype(np.uint8)


@njit(cache=True, fastmath=True)
def _rays_vs_karts_kernel(track_idx, x, y, yaw, angles, others, others_track, self_rows, radius, out):
    """Shorten each ray to the first other kart (a circle of ``radius``) it meets before its wall."""
    n = x.shape[0]
    nr = angles.shape[0]
    K = others.shape[0]
    r2 = radius * radius
    for k in range(n):
        t = track_idx[k]
        for q in range(K):
            if q == self_rows[k] or others_track[q] != t:
                continue
            cx = others[q, 0] - x[k]
            cy = others[q, 1] - y[k]
            if self_rows[k] == -2 and cx * cx + cy * cy < 1e-10:
                continue  # the ego kart itself
            for j in range(nr):
                a = yaw[k] + angles[j]
                dx = math.cos(a)
                dy = math.sin(a)
                along = cx * dx + cy * dy
                if along <= 0.0:
                    continue
                perp2 = cx * cx + cy * cy - along * along
                if perp2 > r2:
                    continue
                hit = along - math.sqrt(r2 - perp2)
                if hit < 0.0:
                    hit = 0.0
                if hit < out[k, j]:
                    out[k, j] = hit


def cast_rays(wall_distance, scale, track_idx, x, y, yaw, angles, max_range_m, out=None, others=None,
              self_rows=None, kart_radius_m: float = 0.7):
    """Distance (m) from each kart centre to the first wall along each ray, capped at ``max_range_m``.

    wall_distance: (T, H, W) float32 metres (or (H, W) for one track), or the same field made by
    :func:`compact_ray_field` (uint8, faster); scale: (T,) metres per pixel;
    track_idx, x, y, yaw: (N,); angles: (R,) radians relative to the heading (positive = right);
    out: (N, R) float32, written in place and returned (allocated when None).
    The result is where the ray enters the first wall pixel, exactly (see ``_cast_rays_kernel``).

    others: optional (K, 4) [x, y, yaw, track_idx] of karts the rays also stop at (circles of
    ``kart_radius_m``; only those on the ray's own track); self_rows: (N,) row of ``others`` that is
    each ray's own kart (-1 none; None = a row at exactly the kart's position is itself).
    """
    field = wall_distance if wall_distance.ndim == 3 else wall_distance[None]
    scale = np.atleast_1d(np.asarray(scale, np.float64))
    angles = np.asarray(angles, np.float64)
    if out is None:
        out = np.empty((len(x), len(angles)), np.float32)
    px_per_unit = np.full(len(scale), 1.0 / COMPACT_UNITS_PER_PIXEL) if field.dtype == np.uint8 else 1.0 / scale
    _cast_rays_kernel(field, px_per_unit, scale, track_idx, x, y, yaw, angles, float(max_range_m), out)
    if others is not None and len(others):
        o = np.ascontiguousarray(others, np.float64)
        if o.ndim != 2 or o.shape[1] != 4:
            raise ConfigError(f"ray others must be (K, 4) [x, y, yaw, track_idx], got {np.shape(others)}")
        n = len(x)
        rows = np.full(n, -2, np.int64) if self_rows is None else np.ascontiguousarray(
            np.broadcast_to(np.asarray(self_rows, np.int64), (n,)))
        _rays_vs_karts_kernel(np.asarray(track_idx), np.asarray(x, np.float64), np.asarray(y, np.float64),
                              np.asarray(yaw, np.float64), angles, o, o[:, 3].astype(np.int64), rows,
                              float(kart_radius_m), out)
    return out


# --------------------------------------------------------------------------------------------------
# camera


@dataclass
class CameraConfig:
    """Camera settings. Chase = top-down view rotated with the kart (kart near the bottom centre,
    heading up); driver = Mode-7 style perspective of the ground from the driver's eyes."""

    mode: str = "chase"
    """"chase" (top-down, rotated with the kart) or "driver" (first-person perspective)."""
    size: int = 84
    """Output image side in pixels (images are square, size x size)."""
    grayscale: bool = False
    """Single channel (N, S, S, 1) instead of RGB (N, S, S, 3). With the track's surface map
    (`CameraRenderer`'s ``surface``) every surface gets its own band of grey (`GRAY_BANDS`), so grass
    and asphalt stay apart (plain luma makes both ~109); without it, cv2's luma."""
    chase_ahead_m: float = 32.0
    """Chase: metres of ground visible ahead of the kart centre."""
    chase_behind_m: float = 4.0
    """Chase: metres of ground visible behind the kart centre."""
    chase_width_m: float = 36.0
    """Chase: metres of ground across the image."""
    eye_height_m: float = 1.0
    """Driver: eye height above the ground (m)."""
    eye_forward_m: float = 0.0
    """Driver: eye position ahead of the kart centre (m)."""
    horizon: float = 0.35
    """Driver: horizon row as a fraction of the image height from the top."""
    fov_deg: float = 90.0
    """Driver: horizontal field of view (degrees)."""
    draw_distance_m: float = 120.0
    """Driver: ground beyond this distance is drawn as sky/haze."""
    sky_rgb: tuple = (135, 190, 235)
    """Driver: colour above the horizon."""
    draw_self: bool = True
    """Chase: draw the ego kart sprite at its fixed position."""
    draw_others: bool = True
    """Draw the other karts passed to ``render(..., others=...)``."""
    kart_length_m: float = 1.8
    """Sprite length (m)."""
    kart_width_m: float = 1.3
    """Sprite width (m)."""
    kart_height_m: float = 0.7
    """Driver: height of other karts' billboards (m)."""
    self_rgb: tuple = (255, 210, 0)
    """Colour of the ego kart sprite."""
    other_rgb: tuple = (0, 140, 255)
    """Colour of the other karts."""
    other_nose_rgb: tuple = (220, 240, 255)
    """Colour of the front third of other karts (shows their heading)."""
    mipmaps: bool = True
    """Pre-filter the texture into a mip pyramid and sample the level matching each pixel's
    ground footprint (less aliasing, same cost)."""

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> None:
        if self.mode not in ("chase", "driver"):
            raise ConfigError(f'camera mode must be "chase" or "driver", got {self.mode!r}')
        if not (isinstance(self.size, (int, np.integer)) and 8 <= self.size <= 1024):
            raise ConfigError(f"camera size must be an integer in [8, 1024], got {self.size!r}")
        if self.chase_ahead_m + self.chase_behind_m <= 0 or self.chase_width_m <= 0:
            raise ConfigError("chase view extents must be positive (chase_ahead_m + chase_behind_m, chase_width_m)")
        if not 0.0 <= self.horizon < 0.95:
            raise ConfigError(f"camera horizon must be in [0, 0.95), got {self.horizon}")
        if not 10.0 <= self.fov_deg <= 170.0:
            raise ConfigError(f"camera fov_deg must be in [10, 170], got {self.fov_deg}")
        if self.eye_height_m <= 0:
            raise ConfigError(f"camera eye_height_m must be > 0, got {self.eye_height_m}")

    @property
    def channels(self) -> int:
        return 1 if self.grayscale else 3


def luma(rgb) -> np.ndarray:
    """cv2's RGB -> gray weights (0.299, 0.587, 0.114), as uint8."""
    rgb = np.asarray(rgb, np.float64)
    return np.clip(np.rint(rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114), 0, 255).astype(np.uint8)


# Grey camera (grayscale=True): each surface's luma is squeezed into its own band, the bands far apart,
# so every pair of surfaces keeps a contrast of 25+ grey levels dry (~16 wet, which darkens by 35 %)
# whatever colours the track image uses. Indexed by kartsim.sim.track.Surface code (not imported: the
# sensors know no tracks): wall 0, asphalt 1, kerb 2 (red 165 ... white 215), grass 3.
GRAY_BANDS = np.array([(0, 25), (110, 135), (165, 215), (55, 80)], np.float64)
GRAY_SKY = 250     # the driver camera's sky: above every surface (thin kerbs far away blend towards asphalt)
GRAY_OTHER = 0     # other karts: black with a white nose, apart from the road they drive on
GRAY_OTHER_NOSE = 255


def gray_texture(rgb, surface) -> np.ndarray:
    """(…, H, W) uint8 grey texture: each pixel's luma mapped into its surface's `GRAY_BANDS` band."""
    band = GRAY_BANDS[np.asarray(surface, np.intp)]
    lum = luma(rgb).astype(np.float64) / 255.0
    return np.rint(band[..., 0] + lum * (band[..., 1] - band[..., 0])).astype(np.uint8)


@njit(cache=True, fastmath=True)
def _render_kernel(tex, lvl_off, lvl_h, lvl_w, lvl_inv, row_fwd, row_r0, row_dr, row_level, sky_col,
                   track_idx, x, y, yaw, out):
    """Gather one image per kart.

    Every output row i is a straight line on the ground: forward offset row_fwd[i] and right offset
    row_r0[i] + j * row_dr[i] for column j, so texel coordinates advance by a constant per column.
    tex is the flat uint8 mip pyramid; row_level: (T, S) int8 mip level per row, -1 = sky.
    """
    n = x.shape[0]
    S = out.shape[1]
    C = out.shape[3]
    for k in range(n):
        t = track_idx[k]
        c = math.cos(yaw[k])
        s = math.sin(yaw[k])
        x0 = x[k]
        y0 = y[k]
        for i in range(S):
            lv = row_level[t, i]
            if lv < 0:
                for j in range(S):
                    for ch in range(C):
                        out[k, i, j, ch] = sky_col[ch]
                continue
            inv = lvl_inv[t, lv]
            hh = lvl_h[lv]
            ww = lvl_w[lv]
            off = lvl_off[lv] + t * hh * ww * C
            f = row_fwd[i]
            r0 = row_r0[i]
            dr = row_dr[i]
            # texel coordinates of column 0 and their increment per column
            u = (x0 + f * c - r0 * s) * inv
            v = (y0 + f * s + r0 * c) * inv
            du = -dr * s * inv
            dv = dr * c * inv
            for j in range(S):
                uj = u + j * du
                vj = v + j * dv
                if uj >= 0.0 and vj >= 0.0 and uj < ww and vj < hh:
                    base = off + (int(vj) * ww + int(uj)) * C
                    for ch in range(C):
                        out[k, i, j, ch] = tex[base + ch]
                else:
                    for ch in range(C):
                        out[k, i, j, ch] = 0


@njit(cache=True, fastmath=True)
def _draw_self_kernel(pix_i, pix_j, col, out):
    n = out.shape[0]
    C = out.shape[3]
    for k in range(n):
        for q in range(pix_i.shape[0]):
            for ch in range(C):
                out[k, pix_i[q], pix_j[q], ch] = col[q, ch]


@njit(cache=True, fastmath=True, inline="always")
def _clip_box(i0, i1, j0, j1, size):
    """The pixel box rows [i0, i1) x columns [j0, j1) cut to a size x size image."""
    return max(i0, 0), min(i1, size), max(j0, 0), min(j1, size)


@njit(cache=True, fastmath=True)
def _draw_others_kernel(driver, S, cam, track_idx, x, y, yaw, others, others_track, self_rows,  # noqa: C901 (numba kernel)
                        half_len, half_wid, height, body_col, nose_col, out):
    """Draw other karts into each image.

    chase: cam = [ahead, px_per_m_fwd, px_per_m_right, centre_col]; rectangles rasterised on the
    ground plane. driver: cam = [horizon_row, focal_px, eye_height, centre_col, eye_forward,
    draw_distance]; upright billboards drawn far to near.
    """
    n = x.shape[0]
    K = others.shape[0]
    C = out.shape[3]
    order = np.empty(K, np.int64)
    depth = np.empty(K, np.float64)
    lat = np.empty(K, np.float64)
    for k in range(n):
        t = track_idx[k]
        c = math.cos(yaw[k])
        s = math.sin(yaw[k])
        m = 0
        reach = half_len + half_wid
        for q in range(K):
            if q == self_rows[k]:
                continue
            if others_track[q] >= 0 and others_track[q] != t:
                continue
            dx = others[q, 0] - x[k]
            dy = others[q, 1] - y[k]
            if self_rows[k] == -2 and dx * dx + dy * dy < 1e-10:
                continue  # same position as the ego kart: that is the ego itself
            f = dx * c + dy * s
            r = -dx * s + dy * c
            if driver:
                f -= cam[4]
                if f < 0.3 or f > cam[5]:
                    continue
            else:
                if f > cam[0] + reach or f < cam[0] - S / cam[1] - reach:
                    continue
                if abs(r) > 0.5 * S / cam[2] + reach:
                    continue
            order[m] = q
            depth[m] = f
            lat[m] = r
            m += 1
        if m == 0:
            continue
        if driver:
            # far to near (insertion sort on depth, descending)
            for a in range(1, m):
                dq = depth[a]
                oq = order[a]
                lq = lat[a]
                b = a - 1
                while b >= 0 and depth[b] < dq:
                    depth[b + 1] = depth[b]
                    order[b + 1] = order[b]
                    lat[b + 1] = lat[b]
                    b -= 1
                depth[b + 1] = dq
                order[b + 1] = oq
                lat[b + 1] = lq
            for a in range(m):
                f = depth[a]
                r = lat[a]
                fpx = cam[1] / f
                u = cam[3] + r * fpx
                v_base = cam[0] + cam[2] * fpx
                hw = half_wid * fpx
                hpx = height * fpx
                j0 = int(math.floor(u - hw + 0.5))
                j1 = int(math.floor(u + hw + 0.5))
                i0 = int(math.floor(v_base - hpx + 0.5))
                i1 = int(math.floor(v_base + 0.5))
                if j1 <= j0:
                    j1 = j0 + 1
                if i1 <= i0:
                    i1 = i0 + 1
                i0, i1, j0, j1 = _clip_box(i0, i1, j0, j1, S)
                for i in range(i0, i1):
                    for j in range(j0, j1):
                        for ch in range(C):
                            out[k, i, j, ch] = body_col[ch]
        else:
            for a in range(m):
                q = order[a]
                f = depth[a]
                r = lat[a]
                dyaw = others[q, 2] - yaw[k]
                cy = math.cos(dyaw)
                sy = math.sin(dyaw)
                ci = (cam[0] - f) * cam[1]
                cj = cam[3] + r * cam[2]
                ri = reach * max(cam[1], cam[2]) + 1.0
                i0 = int(ci - ri)
                i1 = int(ci + ri) + 1
                j0 = int(cj - ri)
                j1 = int(cj + ri) + 1
                i0, i1, j0, j1 = _clip_box(i0, i1, j0, j1, S)
                for i in range(i0, i1):
                    pf = cam[0] - (i + 0.5) / cam[1] - f
                    for j in range(j0, j1):
                        pr = (j + 0.5 - cam[3]) / cam[2] - r
                        # into the other kart's frame (relative yaw dyaw)
                        lx = pf * cy + pr * sy
                        ly = -pf * sy + pr * cy
                        if abs(lx) <= half_len and abs(ly) <= half_wid:
                            if lx > half_len / 3.0:
                                for ch in range(C):
                                    out[k, i, j, ch] = nose_col[ch]
                            else:
                                for ch in range(C):
                                    out[k, i, j, ch] = body_col[ch]


@njit(cache=True, fastmath=True)
def _weather_kernel(out, wetness, seeds, tint, sky_rows):
    """Weather on rendered images: darker and bluer with wetness, a wet sheen (lifted highlights on
    the lower half) and, from wetness 0.6 on, rain streaks (short slanted light dashes; ``seeds``
    moves them from frame to frame)."""
    n = out.shape[0]
    S = out.shape[1]
    C = out.shape[3]
    for k in range(n):
        w = wetness[k]
        if not (w > 0.0):
            continue
        if w > 1.0:
            w = 1.0
        dark = 1.0 - 0.35 * w
        mix = 0.18 * w
        rain = w >= 0.6
        seed = seeds[k]
        for i in range(S):
            sheen = 0.0
            if i > S // 2 and not sky_rows[i]:
                sheen = 0.12 * w * (i - S // 2) / (S // 2)
            for j in range(S):
                streak = False
                if rain:
                    # dashes 3 px long, slanted one column per 3 rows
                    q = (j + i // 3 + seed * 7) % 11
                    r_ = (i + seed * 5 + (j // 11) * 7) % 17
                    streak = q == 0 and r_ < 3
                for ch in range(C):
                    c = out[k, i, j, ch] * dark + tint[ch] * mix
                    c += (255.0 - c) * sheen * (out[k, i, j, ch] / 255.0)
                    if streak:
                        c = c * 0.4 + 200.0 * 0.6
                    if c > 255.0:
                        c = 255.0
                    out[k, i, j, ch] = np.uint8(c)


class CameraRenderer:
    """Batched camera: one numba gather renders the view of every kart.

    rgb: (T, H, W, 3) uint8 textures (the track images), scale: (T,) metres per pixel, surface:
    optional (T, H, W) surface codes of the same tracks (grayscale: the per-surface grey palette).
    Per output pixel the ground offset in the kart frame (forward, right) is precomputed once; a
    render is then a rotation + texture lookup (nearest neighbour in a mip level chosen per pixel).
    """

    def __init__(self, rgb: np.ndarray, scale, cfg: CameraConfig | None = None, surface: np.ndarray | None = None):
        cfg = cfg or CameraConfig()
        cfg.validate()
        rgb = np.asarray(rgb)
        if rgb.ndim == 3:
            rgb = rgb[None]
        if rgb.ndim != 4 or rgb.shape[3] != 3:
            raise ConfigError(f"camera texture must be (T, H, W, 3) uint8, got shape {rgb.shape}")
        scale = np.atleast_1d(np.asarray(scale, np.float64))
        if scale.shape == (1,) and rgb.shape[0] > 1:
            scale = np.full(rgb.shape[0], scale[0])
        if scale.shape != (rgb.shape[0],) or not np.all(scale > 0):
            raise ConfigError(f"camera scale must be (T,) = ({rgb.shape[0]},) positive metres per pixel")
        self.cfg = cfg
        self.scale = scale
        self.size = S = int(cfg.size)
        self.channels = C = cfg.channels
        self.shape = (S, S, C)
        fwd, right, footprint, sky = self._ground(cfg, S)
        self._texture(rgb, surface, footprint, sky)
        self._sprites(cfg, fwd, right, surface)
        self._sky_rows = np.ascontiguousarray(sky[:, 0])

    def _ground(self, cfg: CameraConfig, S: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per-pixel ground offsets in the kart frame (forward, right, m), the metres each pixel covers
        and the sky mask; sets the projection constants and the per-row ground lines."""
        ii, jj = np.meshgrid(np.arange(S) + 0.5, np.arange(S) + 0.5, indexing="ij")
        sky = np.zeros((S, S), bool)
        if cfg.mode == "chase":
            span = cfg.chase_ahead_m + cfg.chase_behind_m
            fwd = cfg.chase_ahead_m - ii * span / S
            right = (jj - S / 2) * cfg.chase_width_m / S
            footprint = np.full((S, S), max(span, cfg.chase_width_m) / S)
            self._cam = np.array([cfg.chase_ahead_m, S / span, S / cfg.chase_width_m, S / 2], np.float64)
        else:
            focal = (S / 2) / math.tan(math.radians(cfg.fov_deg) / 2)
            hrow = cfg.horizon * S
            dv = ii - hrow
            with np.errstate(divide="ignore", invalid="ignore"):
                dist = np.where(dv > 0, cfg.eye_height_m * focal / np.maximum(dv, 1e-9), np.inf)
            sky = ~(dist <= cfg.draw_distance_m)
            dist = np.where(sky, 0.0, dist)
            fwd = dist + cfg.eye_forward_m
            right = (jj - S / 2) * dist / focal
            # footprint: metres per pixel along depth (d^2 / (h f)) and across (d / f)
            footprint = np.maximum(dist * dist / (cfg.eye_height_m * focal), dist / focal)
            self._cam = np.array([hrow, focal, cfg.eye_height_m, S / 2, cfg.eye_forward_m,
                                  cfg.draw_distance_m], np.float64)
        self.sky_mask = sky
        # every row is a line on the ground: right = r0 + j * dr (j = column index)
        self._row_fwd = np.ascontiguousarray(fwd[:, 0], np.float64)
        self._row_r0 = np.ascontiguousarray(right[:, 0], np.float64)
        self._row_dr = np.ascontiguousarray(right[:, 1] - right[:, 0], np.float64)
        return fwd, right, footprint, sky

    def _texture(self, rgb: np.ndarray, surface: np.ndarray | None, footprint: np.ndarray, sky: np.ndarray) -> None:
        """The track texture (+ mip pyramid) flattened into one buffer, and the mip level of every
        output row per track."""
        cfg, scale, C = self.cfg, self.scale, self.channels
        T, S = rgb.shape[0], self.size
        if C == 3:
            base = rgb
        elif surface is not None:
            surface = np.asarray(surface)
            if surface.shape != rgb.shape[:3]:
                raise ConfigError(f"camera surface map must be (T, H, W) = {rgb.shape[:3]}, got {surface.shape}")
            base = gray_texture(rgb, surface)[..., None]
        else:
            base = luma(rgb)[..., None]
        levels = [np.ascontiguousarray(base, np.uint8)]
        if cfg.mipmaps:
            max_fp = float(np.max(np.where(sky, 0.0, footprint)))
            n_levels = int(np.clip(math.ceil(math.log2(max(max_fp / scale.min(), 1.0))) + 1, 1, 8))
            for _ in range(1, n_levels):
                prev = levels[-1]
                h2, w2 = max(1, (prev.shape[1] + 1) // 2), max(1, (prev.shape[2] + 1) // 2)
                nxt = np.empty((T, h2, w2, C), np.uint8)
                for ti in range(T):
                    img = prev[ti]
                    # pad to even size with edge pixels so every level covers the same world extent
                    img = cv2.copyMakeBorder(img, 0, 2 * h2 - img.shape[0], 0, 2 * w2 - img.shape[1],
                                             cv2.BORDER_REPLICATE)
                    small = cv2.resize(img, (w2, h2), interpolation=cv2.INTER_AREA)
                    nxt[ti] = small.reshape(h2, w2, C)
                levels.append(nxt)
        L = len(levels)
        self.n_levels = L
        self._lvl_h = np.array([lv.shape[1] for lv in levels], np.int64)
        self._lvl_w = np.array([lv.shape[2] for lv in levels], np.int64)
        sizes = [lv.size for lv in levels]
        self._lvl_off = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self._tex = np.concatenate([lv.ravel() for lv in levels])
        # inverse cell size (1/m) per track and level
        self._lvl_inv = np.ascontiguousarray(
            1.0 / (scale[:, None] * (2.0 ** np.arange(L))[None, :]), np.float64)
        # mip level per track and output row (the footprint only depends on the row); -1 = sky
        row_fp = footprint[:, 0]
        if L > 1:
            lvl = np.floor(np.log2(np.maximum(row_fp[None, :] / scale[:, None], 1.0)) + 0.5)
            lvl = np.clip(lvl, 0, L - 1).astype(np.int8)
        else:
            lvl = np.zeros((T, S), np.int8)
        lvl[:, sky[:, 0]] = -1
        self._level = np.ascontiguousarray(lvl)
        sky_rgb = np.array(cfg.sky_rgb, np.uint8)[None]
        gray_sky = np.array([GRAY_SKY if surface is not None else luma(sky_rgb)[0]], np.uint8)
        self._sky = np.ascontiguousarray(sky_rgb[0] if C == 3 else gray_sky, np.uint8)

    def _sprites(self, cfg: CameraConfig, fwd: np.ndarray, right: np.ndarray, surface: np.ndarray | None) -> None:
        """The ego kart's fixed pixels (chase camera), the other karts' and the rain's colours."""
        S, C = self.size, self.channels
        pi, pj, pc = [], [], []
        if cfg.mode == "chase" and cfg.draw_self:
            hl, hw = cfg.kart_length_m / 2, cfg.kart_width_m / 2
            inside = (np.abs(fwd) <= max(hl, 0.5 * (cfg.chase_ahead_m + cfg.chase_behind_m) / S)) & \
                     (np.abs(right) <= max(hw, 0.5 * cfg.chase_width_m / S))
            nose = inside & (fwd > hl / 3)
            body = np.array(cfg.self_rgb, np.uint8)
            nose_col = np.clip(body.astype(int) // 2 + 128, 0, 255).astype(np.uint8)
            for (i, j) in zip(*np.nonzero(inside)):
                pi.append(i)
                pj.append(j)
                pc.append(nose_col if nose[i, j] else body)
        self._self_i = np.array(pi, np.int64)
        self._self_j = np.array(pj, np.int64)
        cols = np.array(pc, np.uint8).reshape(-1, 3)
        self._self_col = np.ascontiguousarray(cols if C == 3 else luma(cols)[:, None], np.uint8)
        self.ego_pixels = (self._self_i, self._self_j)
        other = np.array([cfg.other_rgb], np.uint8)
        other_nose = np.array([cfg.other_nose_rgb], np.uint8)
        if C == 3:
            other_col, other_nose_col = other[0], other_nose[0]
        elif surface is not None:  # plain luma would put the blue karts on the asphalt's grey
            other_col, other_nose_col = np.array([GRAY_OTHER], np.uint8), np.array([GRAY_OTHER_NOSE], np.uint8)
        else:
            other_col, other_nose_col = luma(other)[:, None][0], luma(other_nose)[:, None][0]
        self._other_col = np.ascontiguousarray(other_col)
        self._other_nose = np.ascontiguousarray(other_nose_col)
        tint = np.array([[70, 85, 110]], np.uint8)  # grey-blue of rain light
        self._rain_tint = np.ascontiguousarray((tint[0] if C == 3 else luma(tint)[:1]).astype(np.float64))

    def empty(self, n: int) -> np.ndarray:
        """A (n, S, S, C) uint8 output buffer."""
        return np.empty((n, *self.shape), np.uint8)

    def render(self, track_idx, x, y, yaw, out=None, others=None, self_rows=None, wetness=None, frame=0):
        """Render the view of every kart into ``out`` (N, S, S, C) uint8 and return it.

        wetness: optional (N,) (or scalar) weather per kart, 0 = dry, 0.5 = damp, 1 = wet (as
        ``KartState.wetness``): the image gets darker and bluer with a wet sheen, and rain streaks
        from 0.6 on; ``frame`` (an int, e.g. the step counter, or (N,) per-kart counters so that each
        image depends on its own kart only) moves the rain between frames.

        others: optional other karts to draw, (K, 3) [x, y, yaw] or (K, 4) [x, y, yaw, track_idx]
        (with 3 columns, every row is drawn in every image whatever the track). Typical use: pass all
        karts of the race as ``others`` and ``self_rows=np.arange(N)`` so each image skips its own
        row. self_rows: (N,) row of ``others`` that is the ego kart (-1 = none); when None, a row at
        exactly the ego's position is treated as the ego itself.
        """
        n = len(x)
        if out is None:
            out = self.empty(n)
        elif out.shape != (n, *self.shape) or out.dtype != np.uint8:
            raise ConfigError(f"camera out must be ({n}, {self.size}, {self.size}, {self.channels}) uint8, "
                              f"got {out.shape} {out.dtype}")
        track_idx = np.asarray(track_idx)
        x = np.asarray(x, np.float64)
        y = np.asarray(y, np.float64)
        yaw = np.asarray(yaw, np.float64)
        _render_kernel(self._tex, self._lvl_off, self._lvl_h, self._lvl_w, self._lvl_inv,
                       self._row_fwd, self._row_r0, self._row_dr, self._level, self._sky,
                       track_idx, x, y, yaw, out)
        if self._self_i.size:
            _draw_self_kernel(self._self_i, self._self_j, self._self_col, out)
        if others is not None and self.cfg.draw_others and len(others):
            o = np.ascontiguousarray(others, np.float64)
            if o.ndim != 2 or o.shape[1] not in (3, 4):
                raise ConfigError(f"others must be (K, 3) [x, y, yaw] or (K, 4) [x, y, yaw, track_idx], got {o.shape}")
            otrack = o[:, 3].astype(np.int64) if o.shape[1] == 4 else np.full(len(o), -1, np.int64)
            if self_rows is None:
                rows = np.full(n, -2, np.int64)
            else:
                rows = np.ascontiguousarray(np.broadcast_to(np.asarray(self_rows, np.int64), (n,)))
            cfg = self.cfg
            _draw_others_kernel(cfg.mode == "driver", self.size, self._cam, track_idx, x, y, yaw, o,
                                otrack, rows, cfg.kart_length_m / 2, cfg.kart_width_m / 2,
                                cfg.kart_height_m, self._other_col, self._other_nose, out)
        if wetness is not None:
            w = np.ascontiguousarray(np.broadcast_to(np.asarray(wetness, np.float64), (n,)))
            if np.any(w > 0):
                if np.ndim(frame) == 0:
                    seeds = (np.arange(n, dtype=np.int64) * 3 + int(frame)) % 1000003
                else:  # per-kart frame counters: each image depends on its own kart only
                    seeds = np.ascontiguousarray(np.broadcast_to(np.asarray(frame, np.int64), (n,))) % 1000003
                _weather_kernel(out, w, seeds, self._rain_tint, self._sky_rows)
        return out
