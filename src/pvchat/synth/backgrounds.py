"""New backgrounds for cut-out subjects: procedural rooms and outdoor scenes, plus photo textures
that ship with scikit-image. A registry of name → painter(h, w, rng) → RGB uint8."""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np
from skimage import data

from pvchat.errors import unknown_choice


def _vgrad(h: int, w: int, top, bottom) -> np.ndarray:
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    return np.broadcast_to((1 - t) * np.asarray(top, np.float32) + t * np.asarray(bottom, np.float32), (h, w, 3)).copy()


def room(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    wall = rng.uniform(120, 230, 3)
    img = _vgrad(h, w, wall, wall * 0.8)
    floor_y = int(h * rng.uniform(0.62, 0.75))
    img[floor_y:] = _vgrad(h - floor_y, w, rng.uniform(60, 140, 3), rng.uniform(40, 100, 3))
    x0 = int(w * rng.uniform(0.05, 0.6))  # a window or a picture on the wall
    ww, wh = int(w * rng.uniform(0.15, 0.3)), int(h * rng.uniform(0.15, 0.3))
    y0 = int(h * rng.uniform(0.08, 0.25))
    img[y0 : y0 + wh, x0 : x0 + ww] = rng.uniform(150, 255, 3)
    cv2.rectangle(img, (x0, y0), (x0 + ww, y0 + wh), (60, 50, 40), max(1, w // 150))
    return img.astype(np.uint8)


def outdoor(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    horizon = int(h * rng.uniform(0.45, 0.65))
    img = _vgrad(h, w, (110, 160, 235), (200, 225, 250))
    img[horizon:] = _vgrad(h - horizon, w, rng.uniform([40, 110, 30], [90, 170, 70]), (30, 80, 25))
    for _ in range(int(rng.integers(2, 6))):  # trees
        x, r = int(rng.uniform(0, w)), int(h * rng.uniform(0.05, 0.12))
        cv2.circle(img, (x, horizon - r), r, tuple(float(v) for v in rng.uniform([20, 80, 20], [60, 140, 50])), -1)
    return img.astype(np.uint8)


def _texture(name: str) -> Callable[[int, int, np.random.Generator], np.ndarray]:
    def paint(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
        img = getattr(data, name)()
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        img = img[..., :3]
        ih, iw = img.shape[:2]
        scale = max(h / ih, w / iw) * rng.uniform(1.0, 1.4)
        img = cv2.resize(img, (int(iw * scale) + 1, int(ih * scale) + 1))
        y, x = int(rng.integers(0, img.shape[0] - h + 1)), int(rng.integers(0, img.shape[1] - w + 1))
        return np.ascontiguousarray(img[y : y + h, x : x + w]).astype(np.uint8)

    return paint


BACKGROUNDS: dict[str, Callable[[int, int, np.random.Generator], np.ndarray]] = {
    "room": room,
    "outdoor": outdoor,
    "brick": _texture("brick"),
    "grass": _texture("grass"),
    "gravel": _texture("gravel"),
    "coffee": _texture("coffee"),
    "rocket": _texture("rocket"),
}


def paint_background(name: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    if name not in BACKGROUNDS:
        raise unknown_choice("background", name, BACKGROUNDS)
    return BACKGROUNDS[name](h, w, rng)
