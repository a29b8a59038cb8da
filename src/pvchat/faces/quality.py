"""Face quality for choosing the HQ face (paper §3.2; official ``face_quality_filter.py``).

The paper scores faces by eye aspect ratio (EAR, eyes open at >= 0.25), facial orientation, image
clarity and presence of facial landmarks. The official filter (research/pvchat-official.md §5.2
step 3) turns these into gates and one weighted score:

- EAR per eye = (|p1-p5| + |p2-p4|) / (2 |p0-p3|); reject if either eye < 0.25.
- frontal = max(1 - 3 |x_nose - x_eye_centre| / crop_width, 0); reject if <= 0.3.
- sharpness = min(Var(Laplacian(grey face)) / 500, 1).
- visibility = fraction of landmarks inside the image; reject if < 0.8.
- score = 50 frontal + 25 sharpness + 25 visibility.

Differences, because we use dlib's 68 landmarks on video frames instead of MediaPipe's 468 on
DeepFaceLab 1024 px "whole_face" crops: the eyes are points 36-41 and 42-47; the crop width in
the frontal term is 2.5 × the outer-eye-corner distance (about the width of a whole_face crop),
so the official constants keep their meaning; sharpness is measured on the face box resized to a
fixed 160 px so faces of different sizes compare; and faces smaller than ``min_size`` px are
rejected (the official crops are all 1024 px, so size never mattered there). Head pose (yaw,
pitch, roll) is estimated with ``cv2.solvePnP`` against a generic 3-D face and reported.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from pvchat.faces.detect import Face

EAR_MIN = 0.25  # paper §3.2
FRONTAL_MIN = 0.3  # official: reject if frontal <= 0.3
VISIBILITY_MIN = 0.8  # official: reject if < 0.8
SHARPNESS_NORM = 500.0  # official: Var(Laplacian) / 500, capped at 1
WEIGHTS = {"frontal": 50.0, "sharpness": 25.0, "visibility": 25.0}  # official weighting
MIN_SIZE = 40  # px, ours
SHARPNESS_SIDE = 160  # px, ours
CROP_PER_EYE_SPAN = 2.5  # whole_face crop width ≈ 2.5 × outer eye-corner distance (ours)

# dlib 68-point indices, in the p0..p5 order of the EAR formula.
RIGHT_EYE = [36, 37, 38, 39, 40, 41]
LEFT_EYE = [42, 43, 44, 45, 46, 47]
NOSE_TIP, CHIN, R_EYE_OUT, L_EYE_OUT, R_MOUTH, L_MOUTH = 30, 8, 36, 45, 48, 54

# Generic 3-D face (mm, x right, y up, z towards the camera) for the six points above.
_MODEL_3D = np.array(
    [
        (0.0, 0.0, 0.0),  # nose tip
        (0.0, -330.0, -65.0),  # chin
        (-225.0, 170.0, -135.0),  # right eye, outer corner (image left)
        (225.0, 170.0, -135.0),  # left eye, outer corner
        (-150.0, -150.0, -125.0),  # right mouth corner
        (150.0, -150.0, -125.0),  # left mouth corner
    ],
    dtype=np.float64,
)


@dataclass
class FaceQuality:
    """Quality measurements of one face and the official combined score."""

    ear_left: float
    ear_right: float
    yaw: float  # degrees; 0 = facing the camera
    pitch: float
    roll: float
    frontal: float  # [0, 1]
    sharpness: float  # [0, 1]
    visibility: float  # [0, 1]
    size: int  # px, shorter box side
    score: float  # 50 frontal + 25 sharpness + 25 visibility, in [0, 100]
    passed: bool  # all gates (EAR, frontal, visibility, size)
    reason: str  # "" if passed, else the first failed gate

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def eye_aspect_ratio(eye: np.ndarray) -> float:
    """EAR of one eye from its six landmarks (6, 2): (|p1-p5| + |p2-p4|) / (2 |p0-p3|)."""
    p = eye.astype(np.float64)
    width = np.linalg.norm(p[0] - p[3])
    if width < 1e-6:
        return 0.0
    return float((np.linalg.norm(p[1] - p[5]) + np.linalg.norm(p[2] - p[4])) / (2.0 * width))


def head_pose(landmarks: np.ndarray, image_size: tuple[int, int]) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from 68 landmarks by solvePnP against a generic face.

    ``image_size`` is (H, W); the camera is a pinhole with focal length W at the image centre.
    """
    h, w = image_size
    pts = landmarks[[NOSE_TIP, CHIN, R_EYE_OUT, L_EYE_OUT, R_MOUTH, L_MOUTH]].astype(np.float64)
    cam = np.array([[w, 0, w / 2], [0, w, h / 2], [0, 0, 1]], dtype=np.float64)
    # Image y points down; flip the model's y so both frames agree.
    model = _MODEL_3D * np.array([1.0, -1.0, -1.0])
    ok, rvec, _ = cv2.solvePnP(model, pts, cam, None, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        return float("nan"), float("nan"), float("nan")
    rot, _ = cv2.Rodrigues(rvec)
    # Euler angles (x: pitch, y: yaw, z: roll) of R = Rz Ry Rx.
    sy = np.hypot(rot[0, 0], rot[1, 0])
    pitch = np.degrees(np.arctan2(rot[2, 1], rot[2, 2]))
    yaw = np.degrees(np.arctan2(-rot[2, 0], sy))
    roll = np.degrees(np.arctan2(rot[1, 0], rot[0, 0]))
    pitch = (pitch + 180.0) % 360.0 - 180.0
    return float(yaw), float(pitch), float(roll)


def frontal_score(landmarks: np.ndarray) -> float:
    """Official frontal term max(1 - 3 |x_nose - x_eyes| / crop_width, 0), crop = 2.5 eye spans."""
    eyes_x = landmarks[[36, 39, 42, 45], 0].mean()
    span = float(np.linalg.norm(landmarks[L_EYE_OUT] - landmarks[R_EYE_OUT]))
    if span < 1e-6:
        return 0.0
    offset = abs(float(landmarks[NOSE_TIP, 0]) - float(eyes_x)) / (CROP_PER_EYE_SPAN * span)
    return max(1.0 - 3.0 * offset, 0.0)


def sharpness(rgb: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """min(Var(Laplacian(grey face resized to 160 px)) / 500, 1)."""
    x0, y0, x1, y1 = box
    crop = rgb[max(y0, 0) : y1, max(x0, 0) : x1]
    if crop.size == 0:
        return 0.0
    grey = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY)
    grey = cv2.resize(grey, (SHARPNESS_SIDE, SHARPNESS_SIDE), interpolation=cv2.INTER_AREA)
    return float(min(cv2.Laplacian(grey, cv2.CV_64F).var() / SHARPNESS_NORM, 1.0))


def visibility(landmarks: np.ndarray, image_size: tuple[int, int]) -> float:
    """Fraction of landmarks inside the image."""
    h, w = image_size
    x, y = landmarks[:, 0], landmarks[:, 1]
    return float(np.mean((x >= 0) & (x < w) & (y >= 0) & (y < h)))


def assess(rgb: np.ndarray, face: Face, min_size: int = MIN_SIZE) -> FaceQuality:
    """All quality terms of ``face`` in the (H, W, 3) image it was found in, gates and score."""
    size_hw = rgb.shape[:2]
    lm = face.landmarks
    ear_r, ear_l = eye_aspect_ratio(lm[RIGHT_EYE]), eye_aspect_ratio(lm[LEFT_EYE])
    yaw, pitch, roll = head_pose(lm, size_hw)
    fr, sh, vis = frontal_score(lm), sharpness(rgb, face.box), visibility(lm, size_hw)
    score = WEIGHTS["frontal"] * fr + WEIGHTS["sharpness"] * sh + WEIGHTS["visibility"] * vis
    reason = ""
    if min(ear_l, ear_r) < EAR_MIN:
        reason = f"eyes closed (EAR {min(ear_l, ear_r):.2f} < {EAR_MIN})"
    elif fr <= FRONTAL_MIN:
        reason = f"not frontal ({fr:.2f} <= {FRONTAL_MIN})"
    elif vis < VISIBILITY_MIN:
        reason = f"landmarks outside the frame ({vis:.2f} < {VISIBILITY_MIN})"
    elif face.size < min_size:
        reason = f"too small ({face.size} px < {min_size})"
    return FaceQuality(
        ear_left=ear_l, ear_right=ear_r, yaw=yaw, pitch=pitch, roll=roll, frontal=fr, sharpness=sh,
        visibility=vis, size=face.size, score=float(score), passed=not reason, reason=reason,
    )


def rank_key(q: FaceQuality) -> tuple[bool, float]:
    """Sort key, best first when reversed: faces that pass the gates, then by score."""
    return (q.passed, q.score)
