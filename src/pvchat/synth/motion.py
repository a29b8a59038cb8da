"""A landmark-driven motion library: the CPU counterpart of the paper's LivePortrait motions.

The paper animates the best face with five driving videos (nod/yes, shake/no, questioning,
anger, smile; pvchat-official.md §4). Here each motion is a smooth displacement field around the
face, built from the 68 dlib landmarks and applied with ``cv2.remap``:

* ``nod``       the head region moves down and up twice (pitch)
* ``shake``     the head region moves left and right twice (yaw)
* ``tilt``      the head rotates about the face centre and back (roll)
* ``question``  a tilt with raised eyebrows
* ``smile``     mouth corners move up and out
* ``frown``     brows move down and together, mouth corners down (the paper's "anger")
* ``still``     no motion

Displacements are weighted by a Gaussian around the face (σ ≈ face size), so the background and
body stay put and the warp stays identity-preserving.
"""

from __future__ import annotations

import cv2
import numpy as np

from pvchat.errors import unknown_choice

MOTIONS = ("still", "nod", "shake", "tilt", "question", "smile", "frown")
BROWS = list(range(17, 27))
MOUTH_LEFT, MOUTH_RIGHT = 48, 54


def _gauss(xx, yy, cx, cy, sigma):
    return np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2)).astype(np.float32)


def _field(shape, landmarks: np.ndarray, phase: float, motion: str) -> tuple[np.ndarray, np.ndarray]:
    """Displacement (dx, dy) in pixels for one frame; ``phase`` runs 0 → 1 over the clip."""
    h, w = shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    lm = landmarks.astype(np.float32)
    cx, cy = lm[:, 0].mean(), lm[:, 1].mean()
    size = float(max(np.ptp(lm[:, 0]), np.ptp(lm[:, 1]), 8.0))
    head = _gauss(xx, yy, cx, cy, 0.9 * size)
    dx = np.zeros((h, w), np.float32)
    dy = np.zeros((h, w), np.float32)
    wave = np.sin(2 * np.pi * 2 * phase)  # two cycles
    bump = np.sin(np.pi * phase)  # out and back

    def rotate(deg: float) -> None:
        t = np.deg2rad(deg)
        rx, ry = xx - cx, yy - cy
        dx[:] += (np.cos(t) * rx - np.sin(t) * ry - rx) * head
        dy[:] += (np.sin(t) * rx + np.cos(t) * ry - ry) * head

    def local(points, ddx, ddy, sigma):
        for i in points:
            g = _gauss(xx, yy, lm[i, 0], lm[i, 1], sigma)
            dx[:] += ddx * g
            dy[:] += ddy * g

    if motion == "nod":
        dy += 0.09 * size * wave * head
    elif motion == "shake":
        dx += 0.11 * size * wave * head
    elif motion == "tilt":
        rotate(10 * bump)
    elif motion == "question":
        rotate(-8 * bump)
        local(BROWS, 0.0, -0.05 * size * bump, 0.12 * size)
    elif motion == "smile":
        local([MOUTH_LEFT], -0.04 * size * bump, -0.05 * size * bump, 0.12 * size)
        local([MOUTH_RIGHT], 0.04 * size * bump, -0.05 * size * bump, 0.12 * size)
    elif motion == "frown":
        local(BROWS[:5], 0.02 * size * bump, 0.04 * size * bump, 0.12 * size)
        local(BROWS[5:], -0.02 * size * bump, 0.04 * size * bump, 0.12 * size)
        local([MOUTH_LEFT, MOUTH_RIGHT], 0.0, 0.04 * size * bump, 0.12 * size)
    return dx, dy


def animate(frame: np.ndarray, landmarks: np.ndarray, motion: str, phase: float) -> np.ndarray:
    """Warp one RGB frame by ``motion`` at ``phase`` ∈ [0, 1] (backward mapping)."""
    if motion not in MOTIONS:
        raise unknown_choice("motion", motion, MOTIONS)
    if motion == "still":
        return frame
    dx, dy = _field(frame.shape, landmarks, phase, motion)
    h, w = frame.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return cv2.remap(frame, xx - dx, yy - dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)





def list_motions() -> list[str]:
    return sorted(MOTIONS)
