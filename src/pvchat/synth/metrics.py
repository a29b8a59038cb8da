"""VideoAlchemy's MSRVTT-Personalization metrics of a generated clip, and the scorer that computes them all.

VideoAlchemy (papers/videoalchemy-paper.txt §4.1; research/generators.md §2.4) scores a generated
video with four cosine similarities and one motion score:

- **Text-S**: mean cosine between the prompt's CLIP text embedding and each frame's CLIP image
  embedding (square centre crop, prompt truncated to the text model's length; raw cosines).
- **Vid-S**: mean of the all-pairs cosine matrix between generated and reference frames (CLIP).
- **Subj-S**: cosine between the subject crop of each frame and the reference subject crops
  (DINO ViT-B/16 in the paper; crop masked on white and padded square). Missing subject → 0.
- **Face-S**: cosine between the first face of each frame and the reference faces, averaged over
  references and frames, missing faces count 0 (= mean cosine × detection rate). The paper uses
  YOLOv9 + ArcFace R100 on unaligned 112² crops; the offline default here is dlib's detector and
  its aligned 128-d embedding (``pvchat.faces``); a PyTorch face encoder from a local directory
  (:mod:`pvchat.synth.pv_face`) can replace the embedding.
- **Dync-D**: VBench's dynamic degree. Frames resampled to ~8 fps; optical flow between consecutive
  frames (RAFT in the paper, OpenCV Farnebäck here) at a shorter side of 256 px; a pair's score is
  the mean of its top 5 % flow magnitudes, it moves if the score > 6·min(H, W)/256; a clip is
  dynamic if at least round(T/4) pairs move. We keep the mean pair score as a continuous value.

Text-S and Vid-S are here; Subj-S and Face-S are :mod:`pvchat.synth.identity_metrics`, Dync-D is
:mod:`pvchat.synth.dynamics`, the encoders :mod:`pvchat.synth.encoders`. :class:`VideoAlchemyMetrics`
scores a clip with all five. Encoders are config choices loaded with ``from_pretrained(local_dir)``;
nothing is downloaded. The per-subject quality filter built on these scores is
:mod:`pvchat.synth.quality_filter`.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from pvchat.errors import InputError
from pvchat.synth.dynamics import dynamic_degree
from pvchat.synth.encoders import ClipEncoder, ImageEncoder
from pvchat.synth.identity_metrics import (
    FaceEmbedder,
    dlib_face_embedder,
    face_similarity,
    subject_box_from_face,
    subject_similarity,
    torch_face_embedder,
)


def text_similarity(frames: np.ndarray, prompt: str, clip: ClipEncoder) -> float:
    """Text-S: mean over frames of cos(CLIP(prompt), CLIP(frame)). frames: (T, H, W, 3) uint8."""
    img = clip.embed_images(list(frames))  # (T, D)
    txt = clip.embed_texts([prompt])  # (1, D)
    return float((img @ txt.T).mean())


def video_similarity(frames: np.ndarray, ref_frames: np.ndarray, clip: ClipEncoder) -> float:
    """Vid-S: mean of the all-pairs cosine matrix between generated (T) and reference (R) frames."""
    a = clip.embed_images(list(frames))  # (T, D)
    b = clip.embed_images(list(ref_frames))  # (R, D)
    return float((a @ b.T).mean())


# --------------------------------------------------------------------------------------------
# All metrics of one clip
# --------------------------------------------------------------------------------------------


@dataclass
class MetricsConfig:
    """Which encoders to use (local directories; None disables the metrics that need them).

    Attributes:
        clip_dir: CLIP model directory for Text-S and Vid-S (paper: ViT-L/14).
        subject_dir: vision encoder directory for Subj-S (paper: DINO ViT-B/16).
        face_encoder: "dlib" (offline default) or a directory with a PyTorch face encoder (pv_face).
        num_frames: frames sampled uniformly per clip for the similarity metrics.
        detect_max_side: dlib detector resolution bound.
        flow_size: Dync-D flow resolution (shorter side).
        device: torch device for the encoders.
    """

    clip_dir: str | None = None
    subject_dir: str | None = None
    face_encoder: str = "dlib"
    num_frames: int = 8
    detect_max_side: int = 640
    flow_size: int = 256
    device: str = "cpu"


@dataclass
class ClipScores:
    """Every score of one clip (None: not computed for lack of an encoder or a reference)."""

    text_s: float | None = None
    vid_s: float | None = None
    subj_s: float | None = None
    face_s: float | None = None
    face_cos: float | None = None
    face_rate: float | None = None
    dync_score: float | None = None
    dynamic: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def uniform_sample(frames: np.ndarray, n: int) -> np.ndarray:
    """n frames at evenly spaced indices (all of them when n >= T)."""
    t = len(frames)
    if n >= t:
        return frames
    return frames[np.linspace(0, t - 1, n).round().astype(int)]


class VideoAlchemyMetrics:
    """Scores clips with the five metrics; encoders are loaded on first use and kept."""

    def __init__(self, config: MetricsConfig | None = None, face_embedder: FaceEmbedder | None = None):
        self.config = config or MetricsConfig()
        self._face_embedder = face_embedder

    @functools.cached_property
    def clip(self) -> ClipEncoder | None:
        return ClipEncoder(self.config.clip_dir, self.config.device) if self.config.clip_dir else None

    @functools.cached_property
    def subject_encoder(self) -> ImageEncoder | None:
        c = self.config
        return ImageEncoder(c.subject_dir, c.device) if c.subject_dir else None

    @property
    def face_embedder(self) -> FaceEmbedder:
        if self._face_embedder is None:
            c = self.config
            if c.face_encoder == "dlib":
                self._face_embedder = dlib_face_embedder(c.detect_max_side)
            else:
                self._face_embedder = torch_face_embedder(c.face_encoder, c.detect_max_side, c.device)
        return self._face_embedder

    def embed_faces(self, faces: Sequence[np.ndarray], allow_empty: bool = False) -> np.ndarray | None:
        """(R, D) embeddings of face images (images with no detectable face are skipped); no face at
        all is an InputError, or None with ``allow_empty``."""
        embs = [hit[1] for hit in (self.face_embedder(np.ascontiguousarray(f)) for f in faces) if hit is not None]
        if not embs:
            if allow_empty:
                return None
            raise InputError("no face found in any reference face image")
        return np.stack(embs).astype(np.float32)

    def score(
        self,
        frames: np.ndarray,
        fps: float = 8.0,
        prompt: str | None = None,
        ref_frames: np.ndarray | None = None,
        ref_face_embeddings: np.ndarray | None = None,
        ref_subject_crops: Sequence[np.ndarray] | None = None,
    ) -> ClipScores:
        """All metrics that the given references and configured encoders allow. frames: (T, H, W, 3)."""
        frames = np.asarray(frames)
        out = ClipScores()
        if len(frames) >= 2:
            d = dynamic_degree(frames, fps, self.config.flow_size)
            out.dync_score, out.dynamic = d.score, d.dynamic
        sample = uniform_sample(frames, self.config.num_frames)
        if self.clip is not None and prompt:
            out.text_s = text_similarity(sample, prompt, self.clip)
        if self.clip is not None and ref_frames is not None and len(ref_frames):
            out.vid_s = video_similarity(sample, uniform_sample(np.asarray(ref_frames), self.config.num_frames), self.clip)
        face = None
        if ref_face_embeddings is not None and len(ref_face_embeddings):
            face = face_similarity(sample, ref_face_embeddings, self.face_embedder)
            out.face_s, out.face_cos, out.face_rate = face.face_s, face.face_cos, face.face_rate
        if self.subject_encoder is not None and ref_subject_crops:
            face_boxes = face.boxes if face is not None else [
                hit[0] if (hit := self.face_embedder(f)) is not None else None for f in sample]
            boxes = [subject_box_from_face(b, f.shape[:2]) if b is not None else None for f, b in zip(sample, face_boxes)]
            out.subj_s = subject_similarity(sample, ref_subject_crops, self.subject_encoder, boxes)
        return out
