"""Pictures of a race for people: the whole track map with karts and trails, and a pygame window."""

from __future__ import annotations

import os
import sys
from typing import Any

import cv2
import numpy as np

from kartsim.sim.track import Track

KART_COLORS = [(230, 40, 40), (40, 90, 230), (250, 200, 20), (160, 40, 200), (20, 190, 190), (250, 120, 20)]


class TrackMap:
    """A downscaled picture of a track on which karts and their trails are drawn."""

    def __init__(self, track: Track, max_size: int = 640) -> None:
        h, w = track.rgb.shape[:2]
        self.zoom = min(1.0, max_size / max(h, w))  # map pixels per track pixel
        size = (max(1, round(w * self.zoom)), max(1, round(h * self.zoom)))
        self.background = cv2.resize(track.rgb, size, interpolation=cv2.INTER_AREA)
        self.px_per_m = self.zoom / track.scale

    def draw(self, karts: np.ndarray, trails: list[np.ndarray] | None = None) -> np.ndarray:
        """``karts``: (K, 3) x, y, yaw in metres; ``trails``: per kart (P, 2) past positions."""
        img = self.background.copy()
        for k, trail in enumerate(trails or []):
            if len(trail) > 1:
                pts = np.round(trail * self.px_per_m).astype(np.int32).reshape(-1, 1, 2)
                cv2.polylines(img, [pts], False, KART_COLORS[k % len(KART_COLORS)], 1, cv2.LINE_AA)
        length = max(9.0, 2.2 * self.px_per_m)
        for k, (x, y, yaw) in enumerate(np.asarray(karts, dtype=np.float64).reshape(-1, 3)):
            c, s = np.cos(yaw), np.sin(yaw)
            px, py = x * self.px_per_m, y * self.px_per_m
            tri = np.array([
                [px + c * length * 0.6, py + s * length * 0.6],
                [px - c * length * 0.4 - s * length * 0.35, py - s * length * 0.4 + c * length * 0.35],
                [px - c * length * 0.4 + s * length * 0.35, py - s * length * 0.4 - c * length * 0.35],
            ])
            cv2.fillPoly(img, [np.round(tri).astype(np.int32)], KART_COLORS[k % len(KART_COLORS)], cv2.LINE_AA)
            cv2.polylines(img, [np.round(tri).astype(np.int32)], True, (255, 255, 255), 1, cv2.LINE_AA)
        return img


class TrackMaps:
    """One :class:`TrackMap` per track of a stack, made when first drawn (again when a streamed
    stack has put another track into that slot)."""

    def __init__(self, tracks: list[Track]) -> None:
        self.tracks = tracks
        self._maps: dict[int, tuple[Track, TrackMap]] = {}

    def __getitem__(self, t: int) -> TrackMap:
        if t not in self._maps or self._maps[t][0] is not self.tracks[t]:
            self._maps[t] = (self.tracks[t], TrackMap(self.tracks[t]))
        return self._maps[t][1]


def compose_frame(map_img: np.ndarray, camera: np.ndarray | None, lines: list[str]) -> np.ndarray:
    """The map with the camera view inset in the top-left corner and text lines below it."""
    img = map_img.copy()
    y0 = 4
    if camera is not None:
        cam = camera[..., -3:] if camera.shape[-1] >= 3 else np.repeat(camera[..., -1:], 3, axis=2)
        side = min(168, img.shape[0] // 2, img.shape[1] // 2)
        cam = cv2.resize(cam, (side, side), interpolation=cv2.INTER_NEAREST)
        img[4: 4 + side, 4: 4 + side] = cam
        cv2.rectangle(img, (3, 3), (4 + side, 4 + side), (255, 255, 255), 1)
        y0 = 8 + side
    for k, line in enumerate(lines):
        org = (6, y0 + 16 + 18 * k)
        cv2.putText(img, line, org, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(img, line, org, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def has_display() -> bool:
    """Whether a window can be opened (an X11/Wayland display on Linux; assumed elsewhere)."""
    if os.environ.get("SDL_VIDEODRIVER", "") in ("dummy", "offscreen"):
        return False
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def init_display() -> Any:
    """``pygame.display.init()``, quiet on a machine without a display: SDL gets its dummy video
    driver there (nothing is shown) instead of printing "error: XDG_RUNTIME_DIR is invalid or not
    set" while it probes for Wayland, which reads like a kartsim error. Returns the pygame module."""
    if not has_display() and not os.environ.get("SDL_VIDEODRIVER"):
        os.environ["SDL_VIDEODRIVER"] = "dummy"
    import pygame

    pygame.display.init()
    return pygame


class Window:
    """A pygame window that shows RGB frames (``render_mode="human"``)."""

    def __init__(self, title: str = "kartsim") -> None:
        pygame = init_display()
        self.pygame = pygame
        pygame.display.set_caption(title)
        self.screen = None
        self.clock = pygame.time.Clock()

    def show(self, frame: np.ndarray, fps: float) -> None:
        pg = self.pygame
        h, w = frame.shape[:2]
        if self.screen is None or self.screen.get_size() != (w, h):
            self.screen = pg.display.set_mode((w, h))
        for event in pg.event.get():
            if event.type == pg.QUIT:
                raise KeyboardInterrupt
        pg.surfarray.blit_array(self.screen, np.ascontiguousarray(frame.transpose(1, 0, 2)))
        pg.display.flip()
        self.clock.tick(fps)

    def close(self) -> None:
        self.pygame.display.quit()
