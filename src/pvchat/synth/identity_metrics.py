"""Identity metrics of a generated clip: Face-S (is it the subject's face?) and Subj-S (is it the
subject's appearance?), VideoAlchemy's two identity scores (overview in :mod:`pvchat.synth.metrics`).

Face-S embeds the first face of each frame with a :data:`FaceEmbedder`: dlib's aligned 128-d
embedding offline (:func:`dlib_face_embedder`), or a PyTorch face encoder such as ArcFace R100 on the
benchmark's unaligned crop (:func:`torch_face_embedder`). Subj-S compares a head-and-shoulders box
around that face with reference subject crops through an :class:`~pvchat.synth.encoders.ImageEncoder`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import torch

from pvchat.errors import ConfigError
from pvchat.faces import FaceEngine
from pvchat.synth.encoders import ImageEncoder
from pvchat.synth.pv_face import load_face_encoder

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)


def subject_box_from_face(face_box: Box, shape: tuple[int, int], width: float = 3.0, up: float = 0.8,
                          down: float = 3.0) -> Box:
    """A head-and-shoulders subject box around a face box (the offline stand-in for GroundingDINO).

    The box is ``width`` face-widths wide, extends ``up`` face-heights above and ``down`` below.
    """
    x0, y0, x1, y1 = face_box
    fw, fh = x1 - x0, y1 - y0
    cx = (x0 + x1) / 2
    h, w = shape
    return (max(0, int(cx - width * fw / 2)), max(0, int(y0 - up * fh)),
            min(w, int(math.ceil(cx + width * fw / 2))), min(h, int(math.ceil(y1 + down * fh))))


def subject_similarity(frames: np.ndarray, ref_crops: Sequence[np.ndarray], encoder: ImageEncoder,
                       boxes: Sequence[Box | None]) -> float:
    """Subj-S: mean over frames of the mean cosine between the frame's subject crop and each reference
    crop; a frame whose subject was not found (box None) scores 0.

    Args:
        frames: (T, H, W, 3) uint8.
        ref_crops: reference subject images (H, W, 3) uint8.
        encoder: the subject encoder.
        boxes: one subject box per frame, or None where the subject is missing.
    """
    if len(boxes) != len(frames):
        raise ConfigError(f"subject_similarity: {len(boxes)} boxes for {len(frames)} frames")
    found = [(f, b) for f, b in zip(frames, boxes) if b is not None and b[2] > b[0] and b[3] > b[1]]
    if not found or not ref_crops:
        return 0.0
    crops = [f[b[1] : b[3], b[0] : b[2]] for f, b in found]
    sims = encoder.embed_images(crops) @ encoder.embed_images(list(ref_crops)).T  # (found, R)
    return float(sims.mean(dim=1).sum()) / len(frames)


FaceEmbedder = Callable[[np.ndarray], "tuple[Box, np.ndarray] | None"]


def dlib_face_embedder(detect_max_side: int = 640) -> FaceEmbedder:
    """The offline default: dlib's most confident face and its 128-d aligned embedding (pvchat.faces)."""
    engine = FaceEngine(detect_max_side=detect_max_side)

    def embed(rgb: np.ndarray):
        faces = engine.detect(np.ascontiguousarray(rgb), embed=True)
        return (faces[0].box, faces[0].embedding) if faces else None

    return embed


def torch_face_embedder(encoder_dir: str | Path, detect_max_side: int = 640, device: str = "cpu") -> FaceEmbedder:
    """dlib's face box, extended 17 % up and 3 % down and resized without alignment (the benchmark's
    crop), embedded by a PyTorch face encoder loaded from ``encoder_dir`` (e.g. ArcFace R100)."""
    engine = FaceEngine(detect_max_side=detect_max_side)
    enc = load_face_encoder(encoder_dir).to(device).eval()

    @torch.no_grad()
    def embed(rgb: np.ndarray):
        faces = engine.detect(np.ascontiguousarray(rgb), embed=False)
        if not faces:
            return None
        x0, y0, x1, y1 = faces[0].box
        h = y1 - y0
        y0, y1 = max(0, int(y0 - 0.17 * h)), min(rgb.shape[0], int(y1 + 0.03 * h))
        crop = cv2.resize(rgb[y0:y1, x0:x1], (enc.config.input_size,) * 2, interpolation=cv2.INTER_LINEAR)
        x = torch.from_numpy(crop).float().permute(2, 0, 1)[None].div(127.5).sub(1.0).to(device)
        return faces[0].box, enc(x)[0].cpu().numpy()

    return embed


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8)


@dataclass
class FaceScores:
    """Face-S (benchmark: misses count 0), the mean cosine over detected frames, the detection rate,
    and per-frame cosines (None where no face was found)."""

    face_s: float
    face_cos: float
    face_rate: float
    per_frame: list[float | None]
    boxes: list[Box | None]


def face_similarity(frames: np.ndarray, ref_embeddings: np.ndarray, embedder: FaceEmbedder) -> FaceScores:
    """Face-S over frames (T, H, W, 3) against reference face embeddings (R, D)."""
    refs = unit_rows(np.atleast_2d(ref_embeddings))  # (R, D)
    per_frame: list[float | None] = []
    boxes: list[Box | None] = []
    for f in frames:
        hit = embedder(f)
        if hit is None:
            per_frame.append(None)
            boxes.append(None)
            continue
        box, emb = hit
        per_frame.append(float((refs @ unit_rows(emb)).mean()))
        boxes.append(tuple(int(v) for v in box))
    found = [s for s in per_frame if s is not None]
    rate = len(found) / max(1, len(per_frame))
    cos = float(np.mean(found)) if found else 0.0
    return FaceScores(face_s=cos * rate, face_cos=cos, face_rate=rate, per_frame=per_frame, boxes=boxes)
