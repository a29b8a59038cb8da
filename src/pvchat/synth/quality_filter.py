"""The per-subject quality filter of synthesised clips (research/generators.md §4.3): keep or drop
each clip by its VideoAlchemy scores (:mod:`pvchat.synth.metrics`).

The Face-S gate is calibrated per subject, between the similarities of the subject's own faces and
those of its hard negatives (:func:`calibrate_face_threshold`); :func:`judge` applies the gates to
one clip's scores, and :class:`QualityFilter` does both for one subject.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from pvchat.errors import InputError
from pvchat.synth.identity_metrics import unit_rows
from pvchat.synth.metrics import ClipScores, VideoAlchemyMetrics


def _mean_cos_to(refs: np.ndarray, embs: np.ndarray) -> np.ndarray:
    """(N,) mean cosine of each row of ``embs`` (N, D) to the reference rows (R, D)."""
    return (unit_rows(embs) @ unit_rows(refs).T).mean(axis=1)


@dataclass
class Thresholds:
    """Per-subject gates. ``face`` applies to the mean face cosine over detected frames."""

    face: float
    face_rate: float = 0.75
    text: float | None = None
    dync: float | None = None
    max_vid_s: float | None = None
    own_median: float | None = None
    negative_high: float | None = None
    separable: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibrate_face_threshold(ref_embeddings: np.ndarray, negative_embeddings: np.ndarray,
                             quantile: float = 0.99, weight: float = 0.5, floor: float | None = None) -> Thresholds:
    """The Face-S gate of one subject, between its own faces and its hard negatives.

    Own similarities: each reference face against the others (leave-one-out mean cosine, the same
    quantity a clip's face gets). Negative similarities: each hard-negative face against all the
    references. The threshold sits ``weight`` of the way from the negatives' ``quantile`` up to the
    own faces' median; if the two overlap (``separable`` False) it is the own median.

    Args:
        ref_embeddings: (R >= 2, D) the subject's own face embeddings.
        negative_embeddings: (M >= 1, D) hard-negative face embeddings.
        quantile: the high quantile of negative similarities to clear.
        weight: where between the negatives' quantile (0) and the own median (1) the gate sits.
        floor: an optional lower bound on the threshold.
    """
    refs = unit_rows(np.atleast_2d(ref_embeddings))
    negs = unit_rows(np.atleast_2d(negative_embeddings))
    if len(refs) < 2 or len(negs) < 1:
        raise InputError(f"calibration needs >= 2 own faces and >= 1 negative, got {len(refs)} and {len(negs)}")
    sims = refs @ refs.T  # (R, R)
    own = (sims.sum(1) - np.diag(sims)) / (len(refs) - 1)
    neg = _mean_cos_to(refs, negs)
    own_med, neg_hi = float(np.median(own)), float(np.quantile(neg, quantile))
    separable = own_med > neg_hi
    tau = neg_hi + weight * (own_med - neg_hi) if separable else own_med
    if floor is not None:
        tau = max(tau, floor)
    return Thresholds(face=float(tau), own_median=own_med, negative_high=neg_hi, separable=separable)


@dataclass
class Decision:
    """keep/drop of one clip with the scores it was judged on and why it was dropped."""

    keep: bool
    reasons: list[str] = field(default_factory=list)
    scores: ClipScores = field(default_factory=ClipScores)

    def to_dict(self) -> dict[str, Any]:
        return {"keep": self.keep, "reasons": list(self.reasons), "scores": self.scores.to_dict()}


def judge(scores: ClipScores, th: Thresholds, positive: bool = True) -> Decision:
    """Apply the gates. A positive needs its face (detection rate and mean cosine ≥ ``th.face``),
    enough text alignment and motion where gated, and must not duplicate a reference (Vid-S). A
    negative is dropped when its face is as close to the subject as a positive's (label noise)."""
    reasons: list[str] = []
    if positive:
        if scores.face_rate is not None and scores.face_rate < th.face_rate:
            reasons.append(f"face found in {scores.face_rate:.2f} of frames < {th.face_rate:.2f}")
        if scores.face_cos is not None and scores.face_rate and scores.face_cos < th.face:
            reasons.append(f"face cos {scores.face_cos:.3f} < {th.face:.3f}")
        if th.text is not None and scores.text_s is not None and scores.text_s < th.text:
            reasons.append(f"Text-S {scores.text_s:.3f} < {th.text:.3f}")
        if th.dync is not None and scores.dync_score is not None and scores.dync_score < th.dync:
            reasons.append(f"Dync-D score {scores.dync_score:.2f} < {th.dync:.2f}")
        if th.max_vid_s is not None and scores.vid_s is not None and scores.vid_s > th.max_vid_s:
            reasons.append(f"Vid-S {scores.vid_s:.3f} > {th.max_vid_s:.3f} (near-duplicate)")
    elif scores.face_cos is not None and scores.face_rate and scores.face_cos >= th.face:
        reasons.append(f"negative's face cos {scores.face_cos:.3f} >= {th.face:.3f} (looks like the subject)")
    return Decision(keep=not reasons, reasons=reasons, scores=scores)


class QualityFilter:
    """One subject's filter: its references embedded and its gates calibrated once, then keep/drop per clip.

    Args:
        ref_faces: the subject's face images (H, W, 3) uint8 (>= 2 for calibration).
        negative_faces: hard-negative face images (or frames); with faces found in them the Face-S
            gate is calibrated.
        metrics: the scorer (default: offline dlib Face-S + Farnebäck Dync-D, no CLIP).
        face_threshold: the face gate when it cannot be calibrated.
        min_text: Text-S gate (None: off).
        min_dync: Dync-D mean-flow gate (None: off; e.g. on for text-to-video backends only).
        max_vid_s: near-duplicate gate against ``ref_frames`` (None: off).
        ref_frames: frames of the reference video (enables Vid-S).
        ref_subject_crops: subject images (enables Subj-S).
    """

    def __init__(self, ref_faces: Sequence[np.ndarray], negative_faces: Sequence[np.ndarray] = (),
                 metrics: VideoAlchemyMetrics | None = None, face_threshold: float = 0.9,
                 min_text: float | None = None, min_dync: float | None = None, max_vid_s: float | None = 0.95,
                 ref_frames: np.ndarray | None = None, ref_subject_crops: Sequence[np.ndarray] | None = None):
        self.metrics = metrics or VideoAlchemyMetrics()
        self.ref_embeddings = self.metrics.embed_faces(ref_faces)  # (R, D)
        neg = self.metrics.embed_faces(negative_faces, allow_empty=True) if len(negative_faces) else None
        if neg is not None and len(self.ref_embeddings) >= 2:
            self.thresholds = calibrate_face_threshold(self.ref_embeddings, neg)
        else:
            self.thresholds = Thresholds(face=face_threshold, separable=False)
        self.thresholds.text, self.thresholds.dync, self.thresholds.max_vid_s = min_text, min_dync, max_vid_s
        self.ref_frames = ref_frames
        self.ref_subject_crops = list(ref_subject_crops) if ref_subject_crops else None

    def __call__(self, frames: np.ndarray, fps: float = 8.0, prompt: str | None = None, positive: bool = True) -> Decision:
        """Score a clip (T, H, W, 3) and keep or drop it (a negative is dropped when it looks like the subject)."""
        scores = self.metrics.score(frames, fps=fps, prompt=prompt, ref_frames=self.ref_frames,
                                    ref_face_embeddings=self.ref_embeddings, ref_subject_crops=self.ref_subject_crops)
        return judge(scores, self.thresholds, positive=positive)
