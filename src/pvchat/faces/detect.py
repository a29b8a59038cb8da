"""Face detection, 68-point landmarks and 128-d identity embeddings with dlib (paper §3.2).

The paper extracts faces with DeepFaceLab and embeds them with FaceNet; offline we use dlib's
HOG frontal detector, its 68-landmark shape predictor and its ResNet face-recognition model
(files shipped by ``face_recognition_models``). Same-person embeddings are < 0.6 apart
(euclidean), dlib's documented verification threshold.

Detection runs on a grey, downscaled copy of the frame (longer side <= ``detect_max_side``);
boxes are mapped back and landmarks are fitted on the full-resolution frame.
"""

from __future__ import annotations

import functools
import threading
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import dlib
import numpy as np

with warnings.catch_warnings():  # face_recognition_models imports the deprecated pkg_resources
    warnings.simplefilter("ignore")
    import face_recognition_models as frm

EMBEDDING_DIM = 128
CHIP_SIZE = 150  # dlib's aligned face chip for the recognition ResNet
CHIP_PADDING = 0.25


@dataclass
class Face:
    """One detected face; every coordinate is in the original image's pixels."""

    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive)
    landmarks: np.ndarray  # (68, 2) float32, x/y
    embedding: np.ndarray | None  # (128,) float32, None if not computed
    score: float  # HOG detector confidence (higher is surer)

    @property
    def size(self) -> int:
        """The shorter side of the box in pixels."""
        return min(self.box[2] - self.box[0], self.box[3] - self.box[1])


class _Models(NamedTuple):
    predictor: object  # shape predictor: safe to share between threads
    recognizer: object  # ResNet: not thread-safe, always used under _RECOGNIZER_LOCK


_RECOGNIZER_LOCK = threading.Lock()
_LOCAL = threading.local()


def _detector():
    """This thread's HOG detector: one dlib detector run from two threads at once segfaults."""
    det = getattr(_LOCAL, "detector", None)
    if det is None:
        det = _LOCAL.detector = dlib.get_frontal_face_detector()
    return det


@functools.lru_cache(maxsize=1)
def _models() -> _Models:
    """Load the three dlib models once per process (~130 MB of .dat files, ~1 s)."""
    return _Models(
        predictor=dlib.shape_predictor(frm.pose_predictor_model_location()),
        recognizer=dlib.face_recognition_model_v1(frm.face_recognition_model_location()),
    )


def _shape(face: Face):
    """A dlib full_object_detection rebuilt from a Face (for chips and embeddings)."""
    x0, y0, x1, y1 = face.box
    pts = dlib.points([dlib.point(int(round(x)), int(round(y))) for x, y in face.landmarks])
    return dlib.full_object_detection(dlib.rectangle(x0, y0, x1 - 1, y1 - 1), pts)


def face_chip(rgb: np.ndarray, face: Face) -> np.ndarray:
    """The aligned (150, 150, 3) uint8 chip dlib's recognition model expects."""
    return dlib.get_face_chip(np.ascontiguousarray(rgb), _shape(face), size=CHIP_SIZE, padding=CHIP_PADDING)


def embed_chip(chip: np.ndarray) -> np.ndarray:
    """(150, 150, 3) aligned chip → (128,) float32 dlib embedding."""
    chip = np.ascontiguousarray(chip)
    with _RECOGNIZER_LOCK:
        vec = _models().recognizer.compute_face_descriptor(chip)
    return np.asarray(vec, dtype=np.float32)


def face_distance(a: np.ndarray | Face, b: np.ndarray | Face) -> float:
    """Euclidean distance between two dlib embeddings (same person < 0.6)."""
    ea = a.embedding if isinstance(a, Face) else a
    eb = b.embedding if isinstance(b, Face) else b
    if ea is None or eb is None:
        raise ValueError("face_distance needs embeddings (detect with embed=True)")
    return float(np.linalg.norm(np.asarray(ea, np.float32) - np.asarray(eb, np.float32)))


class FaceEngine:
    """HOG detector + 68 landmarks + 128-d embeddings; models are shared by every engine.

    ``detect_max_side`` bounds the longer side of the image the detector sees; ``upsample``
    doubles it that many times inside dlib (1 finds faces down to ~40 px in the downscaled
    image). Safe to call from several threads: each thread gets its own detector (dlib releases the
    GIL while detecting, so two threads run at ~1.9x), embeddings are serialised by a lock.
    """

    def __init__(self, detect_max_side: int = 640, upsample: int = 1, min_score: float = 0.0):
        if detect_max_side < 32:
            raise ValueError(f"detect_max_side must be >= 32, got {detect_max_side}")
        self.detect_max_side = int(detect_max_side)
        self.upsample = int(upsample)
        self.min_score = float(min_score)
        self.models = _models()

    def detect(self, rgb: np.ndarray, embed: bool = True) -> list[Face]:
        """All faces in an (H, W, 3) uint8 RGB image, most confident first."""
        rgb = np.ascontiguousarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
        h, w = rgb.shape[:2]
        scale = min(1.0, self.detect_max_side / max(h, w))
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        if scale < 1.0:
            grey = cv2.resize(grey, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        rects, scores, _ = _detector().run(grey, self.upsample, self.min_score)
        faces: list[Face] = []
        for r, s in sorted(zip(rects, scores), key=lambda rs: -rs[1]):
            x0 = int(np.clip(round(r.left() / scale), 0, w - 1))
            y0 = int(np.clip(round(r.top() / scale), 0, h - 1))
            x1 = int(np.clip(round((r.right() + 1) / scale), x0 + 1, w))
            y1 = int(np.clip(round((r.bottom() + 1) / scale), y0 + 1, h))
            shape = self.models.predictor(rgb, dlib.rectangle(x0, y0, x1 - 1, y1 - 1))
            lm = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)  # (68, 2)
            faces.append(Face(box=(x0, y0, x1, y1), landmarks=lm, embedding=None, score=float(s)))
        if embed:
            for f in faces:
                f.embedding = embed_chip(face_chip(rgb, f))
        return faces

    def embed(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        """Compute (and store on ``face``) the (128,) embedding of a face found in ``rgb``."""
        face.embedding = embed_chip(face_chip(rgb, face))
        return face.embedding
