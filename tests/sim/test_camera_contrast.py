"""Issue 18 item 2: the grayscale camera keeps every pair of surfaces apart (plain luma made grass 109 and
asphalt 108-109): a minimum contrast between every pair of surfaces (and the sky) in both cameras, dry,
damp and wet, in the colours of the bundled tracks and of generated ones.

Two views of it: the chase camera over the real tracks, and both cameras over wide stripes of each
track's own surface pixels (the driver camera sees the ground at a grazing angle, so a wall 1-2 m thick
is a fraction of a pixel there in any colour mode: stripes measure the palette, not that)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from kartsim.sim.sensors import GRAY_BANDS, CameraConfig, CameraRenderer, luma
from kartsim.sim.track import Surface, Track, TrackStack
from kartsim.sim.trackgen import generate_track

MIN_CONTRAST = 12  # grey levels (of 255) between the median pixels of any two surfaces
SKY = -1
STRIPE_PX = 120  # 30 m wide stripes of one surface each


def tracks() -> list[Track]:
    out = [Track.load(name) for name in ("circuit.png", "oval.png", "technical.png")]
    out += [Track.from_image(generate_track(seed, size=640, style=style), name=f"gen{seed}")
            for seed, style in ((11, "circuit"), (12, "technical"), (13, "random"))]
    return out


def poses(track: Track, n: int = 8) -> np.ndarray:
    s = np.linspace(0.0, track.length, n, endpoint=False) + 3.0
    x, y, yaw = track.pose_at(s)
    return np.column_stack([x, y, yaw])


def surface_images(stack: TrackStack, mode: str, pose: np.ndarray) -> np.ndarray:
    """Which surface each camera pixel shows: the surface map itself rendered through the camera
    (no mip blending), SKY above the driver camera's horizon."""
    codes = np.repeat(stack.surface[..., None], 3, axis=3).astype(np.uint8)
    cam = CameraRenderer(codes, stack.scale, CameraConfig(mode=mode, grayscale=False, mipmaps=False, draw_self=False))
    n = len(pose)
    img = cam.render(np.zeros(n, np.int64), pose[:, 0], pose[:, 1], pose[:, 2])[..., 0].astype(np.int64)
    img[:, cam.sky_mask] = SKY
    return img


def medians(gray: np.ndarray, where: np.ndarray, exclude: np.ndarray) -> dict[int, float]:
    out = {}
    for code in np.unique(where):
        sel = (where == code) & ~exclude
        if sel.sum() >= 30:
            out[int(code)] = float(np.median(gray[sel]))
    return out


def stripes(track: Track, seed: int = 0) -> tuple[TrackStack, np.ndarray]:
    """A picture of four 30 m stripes (wall, asphalt, kerb, grass), each tiled with 4x4 blocks of that
    surface's own pixels from `track`, and poses that look down the stripes."""
    rng = np.random.default_rng(seed)
    n = len(Surface)
    h, w = 480, STRIPE_PX * n
    rgb = np.zeros((h, w, 3), np.uint8)
    surface = np.zeros((h, w), np.uint8)
    for k, code in enumerate(Surface):
        pixels = track.rgb[track.surface == code]
        blocks = pixels[rng.integers(len(pixels), size=(h // 4, STRIPE_PX // 4))]
        rgb[:, k * STRIPE_PX:(k + 1) * STRIPE_PX] = np.repeat(np.repeat(blocks, 4, 0), 4, 1)
        surface[:, k * STRIPE_PX:(k + 1) * STRIPE_PX] = code
    stack = TrackStack.__new__(TrackStack)  # only the arrays the cameras read
    stack.rgb, stack.surface, stack.scale = rgb[None], surface[None], np.array([track.scale])
    xs = (np.arange(1, 2 * n) * STRIPE_PX / 2) * track.scale
    pose = np.column_stack([xs, np.full_like(xs, 0.1 * h * track.scale), np.full_like(xs, np.pi / 2)])
    return stack, pose


def contrasts(stack: TrackStack, pose: np.ndarray, mode: str, wetness: float, palette: bool) -> dict:
    """|median grey of surface a - that of b| for every pair of surfaces (and the sky) on camera."""
    cam = CameraRenderer(stack.rgb, stack.scale, CameraConfig(mode=mode, grayscale=True),
                         surface=stack.surface if palette else None)
    n = len(pose)
    gray = cam.render(np.zeros(n, np.int64), pose[:, 0], pose[:, 1], pose[:, 2], wetness=np.full(n, wetness))[..., 0]
    where = surface_images(stack, mode, pose)
    ego = np.zeros(gray.shape[1:], bool)
    ego[cam.ego_pixels] = True
    med = medians(gray.astype(np.float64), where, np.broadcast_to(ego, gray.shape))
    return {(a, b): abs(med[a] - med[b]) for a, b in itertools.combinations(sorted(med), 2)}


def all_pairs(mode: str) -> set:
    names = {int(s) for s in Surface} | ({SKY} if mode == "driver" else set())
    return set(itertools.combinations(sorted(names), 2))


@pytest.mark.parametrize("wetness", [0.0, 0.5, 1.0])
def test_chase_camera_keeps_every_pair_of_surfaces_apart_on_real_tracks(wetness):
    seen = set()
    for track in tracks():
        pairs = contrasts(TrackStack.from_tracks([track]), poses(track), "chase", wetness, palette=True)
        seen.update(pairs)
        low = {k: v for k, v in pairs.items() if v < MIN_CONTRAST}
        assert not low, f"{track.name} chase wetness {wetness}: {low}"
    assert all_pairs("chase") <= seen  # walls and kerbs were on camera somewhere


@pytest.mark.parametrize("mode", ["chase", "driver"])
@pytest.mark.parametrize("wetness", [0.0, 0.5, 1.0])
def test_both_cameras_keep_every_pair_of_surfaces_apart_in_each_tracks_colours(mode, wetness):
    for track in tracks():
        stack, pose = stripes(track)
        pairs = contrasts(stack, pose, mode, wetness, palette=True)
        assert set(pairs) == all_pairs(mode), track.name
        low = {k: v for k, v in pairs.items() if v < MIN_CONTRAST}
        assert not low, f"{track.name} {mode} wetness {wetness}: {low}"


def test_plain_luma_would_hide_the_road_edge():
    """The check can fail: cv2's luma puts circuit.png's grass and asphalt within a few grey levels."""
    track = Track.load("circuit.png")
    pairs = contrasts(TrackStack.from_tracks([track]), poses(track), "chase", 0.0, palette=False)
    assert pairs[(int(Surface.ASPHALT), int(Surface.GRASS))] < MIN_CONTRAST
    assert luma(np.array([70, 140, 55])) in (108, 109, 110)


def test_gray_bands_cover_every_surface_and_do_not_overlap():
    assert len(GRAY_BANDS) == len(Surface)
    bands = sorted(map(tuple, GRAY_BANDS))
    assert all(hi + 2 * MIN_CONTRAST <= lo for (_, hi), (lo, _) in zip(bands, bands[1:]))


def test_the_vision_env_uses_the_palette():
    from kartsim.envs import KartEnv

    env = KartEnv(track="circuit.png", vision=True, grayscale=True)
    obs, _ = env.reset(seed=0)
    values = set(np.unique(obs["vision"]).tolist())
    assert values & set(range(110, 136)) and values & set(range(60, 86))  # asphalt and grass bands
