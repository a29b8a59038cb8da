"""Scenes: backgrounds, where people stand, foreground occluders, camera motion and lighting.

:data:`BACKGROUNDS` and :data:`CAMERAS` are explicit registries (name → function). A background
is painted procedurally, some with scikit-image's bundled textures (brick, grass, gravel), on a
canvas larger than the frame so the camera can pan and zoom over it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np
from skimage import data

from pvchat.errors import unknown_choice

MARGIN = 0.12  # the background canvas is (1 + 2 MARGIN) times the frame on each axis
SLOTS = {"left": 0.27, "centre": 0.5, "right": 0.73}  # resting face x (fraction of the width), 1-2 people
SLOTS_CROWDED = {"left": 0.18, "centre": 0.5, "right": 0.82}  # the same with 3 people in the clip
DEPTH_SCALE = {"front": 1.0, "behind": 0.84}
DEPTH_HEAD_Y = {"front": 0.38, "behind": 0.34}  # resting face y as a fraction of frame height
AA = cv2.LINE_AA


def slot_x(slot: str, num_people: int) -> float:
    """Resting face x of ``slot`` as a fraction of the frame width, for a clip of ``num_people``."""
    return (SLOTS_CROWDED if num_people >= 3 else SLOTS)[slot]


@functools.lru_cache(maxsize=4)
def _texture(name: str) -> np.ndarray:
    return np.ascontiguousarray(getattr(data, name)())


def _tinted(name: str, size: tuple[int, int], colour: tuple[int, int, int], rng: np.random.Generator,
            contrast: float = 0.5) -> np.ndarray:
    """A grey scikit-image texture, randomly cropped, resized to (w, h) and tinted to ``colour``."""
    tex = _texture(name).astype(np.float32) / 255.0
    w, h = size
    side = int(rng.integers(256, 512))
    y0, x0 = int(rng.integers(0, 512 - side + 1)), int(rng.integers(0, 512 - side + 1))
    crop = cv2.resize(tex[y0:y0 + side, x0:x0 + side], (w, h), interpolation=cv2.INTER_LINEAR)
    shade = 1.0 + contrast * (crop - crop.mean())
    return np.clip(shade[:, :, None] * np.asarray(colour, np.float32)[None, None], 0, 255).astype(np.uint8)


def _jitter(rng: np.random.Generator, colour, amount: int = 25) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)


def _vertical_gradient(h: int, w: int, top, bottom) -> np.ndarray:
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    img = (1 - t) * np.asarray(top, np.float32) + t * np.asarray(bottom, np.float32)
    return np.broadcast_to(img, (h, w, 3)).astype(np.uint8).copy()


def _living_room(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    wall = _jitter(rng, (205, 190, 165))
    img = _vertical_gradient(h, w, wall, tuple(int(c * 0.85) for c in wall))
    floor_y = int(h * 0.72)
    img[floor_y:] = _tinted("gravel", (w, h - floor_y), _jitter(rng, (150, 105, 70)), rng, 0.4)
    wx = int(rng.uniform(0.05, 0.55) * w)
    cv2.rectangle(img, (wx, int(h * 0.12)), (wx + int(w * 0.22), int(h * 0.45)), (170, 210, 240), -1)
    cv2.rectangle(img, (wx, int(h * 0.12)), (wx + int(w * 0.22), int(h * 0.45)), (245, 245, 245), 6)
    cv2.line(img, (wx + int(w * 0.11), int(h * 0.12)), (wx + int(w * 0.11), int(h * 0.45)), (245, 245, 245), 4)
    px = int(rng.uniform(0.6, 0.8) * w)
    cv2.rectangle(img, (px, int(h * 0.18)), (px + int(w * 0.12), int(h * 0.34)), _jitter(rng, (120, 60, 50), 60), -1)
    cv2.rectangle(img, (px, int(h * 0.18)), (px + int(w * 0.12), int(h * 0.34)), (90, 60, 30), 4)
    sofa = _jitter(rng, (90, 100, 140), 50)
    cv2.rectangle(img, (int(w * 0.1), int(h * 0.55)), (int(w * 0.9), floor_y + 10), sofa, -1)
    return img


def _office(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    wall = _jitter(rng, (225, 228, 230), 15)
    img = _vertical_gradient(h, w, wall, tuple(int(c * 0.9) for c in wall))
    floor_y = int(h * 0.75)
    img[floor_y:] = _tinted("gravel", (w, h - floor_y), _jitter(rng, (110, 115, 125)), rng, 0.3)
    for k in range(int(rng.integers(2, 4))):  # bookshelves
        x = int((0.05 + 0.32 * k) * w)
        cv2.rectangle(img, (x, int(h * 0.15)), (x + int(w * 0.22), floor_y), (140, 100, 60), -1)
        for s in range(4):
            y = int(h * (0.2 + 0.14 * s))
            for b in range(9):
                bx = x + 6 + b * int(w * 0.022)
                cv2.rectangle(img, (bx, y), (bx + int(w * 0.018), y + int(h * 0.1)), _jitter(rng, (120, 120, 120), 100), -1)
    cv2.rectangle(img, (0, int(h * 0.6)), (w, int(h * 0.64)), (90, 70, 50), -1)  # desk edge
    return img


def _park(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    img = _vertical_gradient(h, w, _jitter(rng, (120, 170, 235)), _jitter(rng, (200, 225, 245)))
    horizon = int(h * rng.uniform(0.45, 0.55))
    img[horizon:] = _tinted("grass", (w, h - horizon), _jitter(rng, (80, 150, 60)), rng, 0.8)
    for _ in range(int(rng.integers(2, 5))):  # trees
        x = int(rng.uniform(0, w))
        cv2.rectangle(img, (x - 8, horizon - int(h * 0.12)), (x + 8, horizon + 10), (90, 60, 35), -1)
        cv2.circle(img, (x, horizon - int(h * 0.2)), int(h * rng.uniform(0.08, 0.13)), _jitter(rng, (50, 120, 50)), -1)
    return img


def _street(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    img = _tinted("brick", (w, h), _jitter(rng, (170, 90, 70)), rng, 0.9)
    pave = int(h * 0.78)
    img[pave:] = _tinted("gravel", (w, h - pave), (140, 140, 140), rng, 0.5)
    for _ in range(int(rng.integers(1, 3))):  # doors / shop windows
        x = int(rng.uniform(0.05, 0.8) * w)
        cv2.rectangle(img, (x, int(h * 0.35)), (x + int(w * 0.14), pave), _jitter(rng, (60, 70, 80), 40), -1)
    return img


def _beach(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    img = _vertical_gradient(h, w, _jitter(rng, (110, 170, 230)), (215, 235, 250))
    sea = int(h * 0.45)
    img[sea:int(h * 0.6)] = _vertical_gradient(int(h * 0.6) - sea, w, (40, 110, 170), (70, 150, 190))
    img[int(h * 0.6):] = _tinted("gravel", (w, h - int(h * 0.6)), _jitter(rng, (225, 205, 160)), rng, 0.25)
    cv2.circle(img, (int(rng.uniform(0.1, 0.9) * w), int(h * 0.12)), int(h * 0.06), (255, 240, 180), -1, AA)
    return img


def _kitchen(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    img = _vertical_gradient(h, w, _jitter(rng, (235, 230, 215)), (210, 205, 190))
    tile = int(h * 0.06)
    for y in range(int(h * 0.4), int(h * 0.62), tile):  # tiled splashback
        for x in range(0, w, tile):
            cv2.rectangle(img, (x, y), (x + tile - 2, y + tile - 2), _jitter(rng, (200, 215, 220), 8), -1)
    cv2.rectangle(img, (0, int(h * 0.62)), (w, h), _jitter(rng, (140, 100, 70)), -1)  # cupboards
    cv2.rectangle(img, (0, int(h * 0.6)), (w, int(h * 0.64)), (90, 90, 95), -1)  # worktop
    for x in range(0, w, int(w * 0.16)):
        cv2.rectangle(img, (x + 4, int(h * 0.05)), (x + int(w * 0.15), int(h * 0.3)), _jitter(rng, (150, 110, 80)), -1)
    return img


Background = Callable[[np.random.Generator, int, int], np.ndarray]

# name -> (painter, how answers name the place)
BACKGROUNDS: dict[str, tuple[Background, str]] = {
    "living_room": (_living_room, "a living room"),
    "office": (_office, "an office"),
    "park": (_park, "a park"),
    "street": (_street, "a street"),
    "beach": (_beach, "a beach"),
    "kitchen": (_kitchen, "a kitchen"),
}


def paint_background(name: str, rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """(H', W', 3) uint8 canvas for a frame of ``size`` = (w, h), with camera margin on every side."""
    if name not in BACKGROUNDS:
        raise unknown_choice("background", name, BACKGROUNDS)
    w, h = size
    cw, ch = int(round(w * (1 + 2 * MARGIN))), int(round(h * (1 + 2 * MARGIN)))
    return BACKGROUNDS[name][0](rng, cw, ch)


@dataclass(frozen=True)
class View:
    """Camera in one frame: frame px = (canvas px - (x0, y0)) * zoom."""

    x0: float
    y0: float
    zoom: float

    def to_frame(self, x: float, y: float) -> tuple[float, float]:
        return (x - self.x0) * self.zoom, (y - self.y0) * self.zoom

    def matrix(self) -> np.ndarray:
        return np.array([[self.zoom, 0.0, -self.x0 * self.zoom], [0.0, self.zoom, -self.y0 * self.zoom]])


CameraFn = Callable[[np.random.Generator, int, tuple[int, int]], list[View]]


def _centre(size: tuple[int, int]) -> tuple[float, float]:
    return MARGIN * size[0], MARGIN * size[1]


def _static(rng: np.random.Generator, n: int, size: tuple[int, int]) -> list[View]:
    x0, y0 = _centre(size)
    return [View(x0, y0, 1.0)] * n


def _pan(direction: float) -> CameraFn:
    def cam(rng: np.random.Generator, n: int, size: tuple[int, int]) -> list[View]:
        x0, y0 = _centre(size)
        reach = rng.uniform(0.6, 0.95) * MARGIN * size[0]
        return [View(x0 + direction * reach * (2 * t / max(1, n - 1) - 1), y0, 1.0) for t in range(n)]
    return cam


def _zoom(direction: float) -> CameraFn:
    def cam(rng: np.random.Generator, n: int, size: tuple[int, int]) -> list[View]:
        w, h = size
        amount = rng.uniform(0.08, 0.14)
        views = []
        for t in range(n):
            frac = t / max(1, n - 1)
            z = 1.0 + amount * (frac if direction > 0 else 1 - frac)
            cx, cy = (1 + 2 * MARGIN) * w / 2, (1 + 2 * MARGIN) * h / 2  # zoom about the canvas centre
            views.append(View(cx - w / (2 * z), cy - h / (2 * z), z))
        return views
    return cam


def _handheld(rng: np.random.Generator, n: int, size: tuple[int, int]) -> list[View]:
    x0, y0 = _centre(size)
    steps = rng.normal(0, 1.2, size=(n, 2)).cumsum(axis=0)
    steps -= steps.mean(axis=0)
    lim = 0.6 * MARGIN * min(size)
    steps = np.clip(steps, -lim, lim)
    return [View(x0 + float(dx), y0 + float(dy), 1.0) for dx, dy in steps]


# name -> (camera path, how answers describe it)
CAMERAS: dict[str, tuple[CameraFn, str]] = {
    "static": (_static, "a static camera"),
    "pan_left": (_pan(-1.0), "the camera pans to the left"),
    "pan_right": (_pan(1.0), "the camera pans to the right"),
    "zoom_in": (_zoom(1.0), "the camera slowly zooms in"),
    "zoom_out": (_zoom(-1.0), "the camera slowly zooms out"),
    "handheld": (_handheld, "a handheld, slightly shaky camera"),
}


def camera_path(name: str, rng: np.random.Generator, n: int, size: tuple[int, int]) -> list[View]:
    """One :class:`View` per frame for camera ``name``."""
    if name not in CAMERAS:
        raise unknown_choice("camera", name, CAMERAS)
    return CAMERAS[name][0](rng, n, size)


def draw_occluder(frame: np.ndarray, idmap: np.ndarray, kind: str, x: float, top: float, unit: float) -> None:
    """A foreground object (label 255 in ``idmap``) standing on the bottom edge up to ``top`` px."""
    h = frame.shape[0]
    if kind == "plant":
        cv2.rectangle(frame, (int(x - 0.5 * unit), int(h - 0.9 * unit)), (int(x + 0.5 * unit), h), (150, 80, 50), -1)
        cv2.rectangle(idmap, (int(x - 0.5 * unit), int(h - 0.9 * unit)), (int(x + 0.5 * unit), h), 255, -1)
        for k in range(7):
            ang = math.pi * (0.15 + 0.7 * k / 6)
            tip = (int(x - 1.0 * unit * math.cos(ang)), int(top + (1 - math.sin(ang)) * 0.8 * unit))
            cv2.line(frame, (int(x), int(h - 0.8 * unit)), tip, (40, 120, 45), max(2, int(0.22 * unit)), AA)
            cv2.line(idmap, (int(x), int(h - 0.8 * unit)), tip, 255, max(2, int(0.22 * unit)))
    elif kind == "lamp":
        cv2.rectangle(frame, (int(x - 0.06 * unit), int(top)), (int(x + 0.06 * unit), h), (60, 60, 65), -1)
        cv2.rectangle(idmap, (int(x - 0.06 * unit), int(top)), (int(x + 0.06 * unit), h), 255, -1)
        cv2.ellipse(frame, (int(x), int(top)), (int(0.45 * unit), int(0.3 * unit)), 0, 180, 360, (240, 230, 200), -1, AA)
        cv2.ellipse(idmap, (int(x), int(top)), (int(0.45 * unit), int(0.3 * unit)), 0, 180, 360, 255, -1)
    else:
        raise unknown_choice("occluder", kind, OCCLUDERS)


OCCLUDERS = ("plant", "lamp")
