"""VideoAlchemy's augmentation policy (its Table 4), sampled once per clip, applied to every frame.

=================  =====  ===========================================
augmentation       p      parameter (h, w: frame size)
=================  =====  ===========================================
downscale          1.0    scale ∈ [112 / max(h, w), 1]
Gaussian blur      1.0    kernel ≤ max(h, w) / 50
colour jitter      1.0    per-channel gain ∈ [−0.05, 0.05]
brightness         1.0    ∈ [0.9, 1.1]
horizontal flip    0.5
shear x / y        1.0    ∈ [−0.05, 0.05]·w / ·h px
rotation           1.0    ∈ [−20°, 20°]
random crop        1.0    scale ∈ [0.67, 1]
=================  =====  ===========================================

Parameters are drawn per clip, not per frame, so a clip stays temporally coherent. ``strength``
scales every range (1 = Table 4) so identity-critical uses can be gentler.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np


@dataclass
class AugmentParams:
    downscale: float  # resolution factor before scaling back up
    blur_sigma: float
    colour: tuple[float, float, float]  # per-channel gains − 1
    brightness: float
    flip: bool
    shear: tuple[float, float]  # fraction of w, of h
    rotation: float  # degrees
    crop_scale: float
    crop_centre: tuple[float, float]  # where the crop sits, in [0, 1]² of the free margin

    @classmethod
    def sample(cls, rng: np.random.Generator, h: int, w: int, strength: float = 1.0) -> "AugmentParams":
        s = float(np.clip(strength, 0.0, 1.0))
        lo = min(1.0, 112 / max(h, w))
        return cls(
            downscale=float(1 - s * rng.uniform(0, 1 - lo)),
            blur_sigma=float(s * rng.uniform(0, max(h, w) / 50) / 3),  # kernel ≈ 3σ
            colour=tuple(float(v) for v in s * rng.uniform(-0.05, 0.05, 3)),
            brightness=float(1 + s * rng.uniform(-0.1, 0.1)),
            flip=bool(rng.random() < 0.5),
            shear=(float(s * rng.uniform(-0.05, 0.05)), float(s * rng.uniform(-0.05, 0.05))),
            rotation=float(s * rng.uniform(-20, 20)),
            crop_scale=float(1 - s * rng.uniform(0, 0.33)),
            crop_centre=(float(rng.random()), float(rng.random())),
        )

    def to_dict(self) -> dict:
        return asdict(self)


def geometry_matrix(p: AugmentParams, h: int, w: int) -> np.ndarray:
    """The 2×3 affine of flip, rotation, shear and crop (output pixel ← input pixel)."""
    c = np.array([w / 2, h / 2])
    rot = cv2.getRotationMatrix2D(tuple(c), p.rotation, 1.0)
    A = np.vstack([rot, [0, 0, 1]])
    shear = np.array([[1, p.shear[0], -p.shear[0] * c[1]], [p.shear[1], 1, -p.shear[1] * c[0]], [0, 0, 1]])
    A = shear @ A
    if p.flip:
        A = np.array([[-1, 0, w], [0, 1, 0], [0, 0, 1]]) @ A
    # crop: a window of crop_scale·(w, h) placed by crop_centre, scaled back to the full frame
    cw, ch = p.crop_scale * w, p.crop_scale * h
    x0, y0 = p.crop_centre[0] * (w - cw), p.crop_centre[1] * (h - ch)
    crop = np.array([[w / cw, 0, -x0 * w / cw], [0, h / ch, -y0 * h / ch], [0, 0, 1]])
    return (crop @ A)[:2]


def apply(frame: np.ndarray, p: AugmentParams) -> np.ndarray:
    """Augment one RGB uint8 frame with the clip's parameters."""
    h, w = frame.shape[:2]
    out = cv2.warpAffine(frame, geometry_matrix(p, h, w), (w, h), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REFLECT101)
    if p.downscale < 0.999:
        small = (max(8, round(w * p.downscale)), max(8, round(h * p.downscale)))
        out = cv2.resize(cv2.resize(out, small, interpolation=cv2.INTER_AREA), (w, h), interpolation=cv2.INTER_LINEAR)
    if p.blur_sigma > 0.3:
        out = cv2.GaussianBlur(out, (0, 0), p.blur_sigma)
    gains = p.brightness * (1 + np.asarray(p.colour, np.float32))
    return np.clip(out.astype(np.float32) * gains, 0, 255).astype(np.uint8)
