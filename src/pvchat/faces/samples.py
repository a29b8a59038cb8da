"""Real face photos that ship offline, and small clips made from them (tests and benchmarks).

Sources: scikit-image's ``astronaut`` (Eileen Collins), matplotlib's ``grace_hopper.jpg`` and the
scikit-image LFW subset (25×25 grey faces of different people; upscale ≥ 4× before detection).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import cv2
import matplotlib.cbook as cbook
import numpy as np
from PIL import Image
from skimage import data

from pvchat.video import write_video

# Head crops (x0, y0, x1, y1) around the face dlib finds in each photo, with room for hair and chin.
_HEAD_CROPS = {"astronaut": (110, 20, 330, 250), "grace_hopper": (110, 70, 440, 400)}


def astronaut() -> np.ndarray:
    """(512, 512, 3) uint8 RGB photo of one real person (bundled with scikit-image)."""
    return np.ascontiguousarray(data.astronaut())


def grace_hopper() -> np.ndarray:
    """(600, 512, 3) uint8 RGB photo of another real person (bundled with matplotlib)."""
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.asarray(Image.open(f).convert("RGB")).copy()


def lfw_faces(scale: int = 6, pad: int = 40) -> np.ndarray:
    """The scikit-image LFW subset as (200, 25*scale + 2*pad, same, 3) uint8 RGB, bicubic-upscaled.

    The first 100 are faces (all different people), the last 100 non-faces.
    """
    lfw = data.lfw_subset()  # (200, 25, 25) float in [0, 1]
    side = 25 * scale
    out = []
    for g in lfw:
        big = cv2.resize((g * 255).round().astype(np.uint8), (side, side), interpolation=cv2.INTER_CUBIC)
        big = np.pad(big, pad, mode="edge")
        out.append(np.repeat(big[:, :, None], 3, axis=2))
    return np.stack(out)


def head(name: str) -> np.ndarray:
    """The head crop of ``astronaut`` or ``grace_hopper`` as (H, W, 3) uint8 RGB."""
    img = {"astronaut": astronaut, "grace_hopper": grace_hopper}[name]()
    x0, y0, x1, y1 = _HEAD_CROPS[name]
    return np.ascontiguousarray(img[y0:y1, x0:x1])


@dataclass
class Appearance:
    """One person in a clip: a head image shown in frames [start, stop) at a drifting position."""

    image: np.ndarray  # (h, w, 3) uint8 head crop
    center: tuple[float, float]  # (x, y) as fractions of the frame
    height: float  # head height as a fraction of the frame height
    start: int = 0
    stop: int | None = None


def render_frames(
    people: list[Appearance], num_frames: int, size: tuple[int, int] = (320, 240), seed: int = 0
) -> Iterator[np.ndarray]:
    """Frames (H, W, 3) uint8 with each person's head pasted, with small shifts and scale changes."""
    w, h = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    background = np.stack([60 + 40 * xx / w, 70 + 30 * yy / h, 90 + 0 * xx], axis=2).astype(np.uint8)
    drift = [rng.uniform(0, 2 * np.pi, size=3) for _ in people]
    for t in range(num_frames):
        frame = background.copy()
        for p, ph in zip(people, drift):
            if t < p.start or (p.stop is not None and t >= p.stop):
                continue
            s = p.height * h * (1 + 0.06 * np.sin(0.31 * t + ph[0]))  # ±6 % scale
            ih, iw = p.image.shape[:2]
            hh, ww = max(2, int(s)), max(2, int(s * iw / ih))
            cx = p.center[0] * w + 0.02 * w * np.sin(0.23 * t + ph[1])  # small shifts
            cy = p.center[1] * h + 0.02 * h * np.sin(0.17 * t + ph[2])
            x0, y0 = int(cx - ww / 2), int(cy - hh / 2)
            img = cv2.resize(p.image, (ww, hh), interpolation=cv2.INTER_AREA)
            fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x0 + ww, w), min(y0 + hh, h)
            if fx1 > fx0 and fy1 > fy0:
                frame[fy0:fy1, fx0:fx1] = img[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
        yield frame


def two_people_clip(
    path: str | os.PathLike,
    num_frames: int = 24,
    size: tuple[int, int] = (320, 240),
    fps: float = 8.0,
    second_from: float = 0.25,
) -> None:
    """Write a clip: the astronaut in every frame (left), Grace Hopper from ``second_from`` of it on (right)."""
    people = [
        Appearance(head("astronaut"), center=(0.28, 0.5), height=0.55),
        Appearance(head("grace_hopper"), center=(0.72, 0.5), height=0.55, start=int(second_from * num_frames)),
    ]
    write_video(path, render_frames(people, num_frames, size), fps=fps)
