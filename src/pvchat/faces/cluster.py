"""Separate the people in a video by clustering face embeddings with DBSCAN (paper §3.2).

Official behaviour (research/pvchat-official.md §5.2 step 2): FaceNet (VGGFace2) 512-d
embeddings, ``DBSCAN(eps=0.6, min_samples=3, metric='cosine')``; if everything is noise, retry
with ``eps=0.7, min_samples=2``; if still all noise, put every face in one cluster.

Those eps are *cosine* distances calibrated for FaceNet, whose embeddings are L2-normalised
and whose same-person cosine distances run up to ~0.6. dlib's 128-d embeddings live on another
scale: their norms are ~1.4 (measured on astronaut, Grace Hopper and the LFW subset) and
dlib's same-person threshold is a *euclidean* 0.6. For two vectors of norm n at euclidean
distance d, cosine distance = d² / (2 n²), so dlib's 0.6 / 0.7 correspond to cosine
0.36/3.92 ≈ 0.09 and 0.49/3.92 ≈ 0.125. Measured here: the same face in a mirrored photo is at
cosine ~0.01; different LFW people have a median of 0.136 and a 5th percentile of 0.09; the
official 0.6 would put every face in the video into one cluster. We therefore keep the official
algorithm, metric (cosine) and fallback ladder with the dlib-equivalent eps below.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import DBSCAN

# (eps, min_samples) tried in order; cosine distance on dlib embeddings (see module docstring).
DBSCAN_STEPS: tuple[tuple[float, int], ...] = ((0.09, 3), (0.125, 2))
OFFICIAL_FACENET_STEPS: tuple[tuple[float, int], ...] = ((0.6, 3), (0.7, 2))  # for reference only


@dataclass
class Clustering:
    """Cluster labels per embedding (-1 = noise), people numbered by size (0 = most faces)."""

    labels: np.ndarray  # (N,) int
    eps: float | None  # the step that produced it; None if the all-in-one fallback was used
    min_samples: int | None

    @property
    def num_people(self) -> int:
        return int(self.labels.max()) + 1 if self.labels.size and self.labels.max() >= 0 else 0


def _relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Renumber clusters so 0 is the largest (ties: first seen); noise stays -1."""
    ids = [k for k in np.unique(labels) if k >= 0]
    order = sorted(ids, key=lambda k: (-int(np.sum(labels == k)), int(np.argmax(labels == k))))
    out = np.full_like(labels, -1)
    for new, old in enumerate(order):
        out[labels == old] = new
    return out


def cluster_embeddings(
    embeddings: np.ndarray,
    steps: tuple[tuple[float, int], ...] = DBSCAN_STEPS,
    sample_weight: np.ndarray | None = None,
) -> Clustering:
    """DBSCAN (cosine) over (N, D) embeddings with the official fallback ladder.

    ``sample_weight`` (N,) counts how many faces each embedding stands for (DBSCAN's core-point
    test sums weights), so embedding a subset of faces keeps the official density semantics.
    """
    emb = np.asarray(embeddings, dtype=np.float64)
    if emb.ndim != 2 or emb.shape[0] == 0:
        raise ValueError(f"expected (N, D) embeddings with N > 0, got {emb.shape}")
    for eps, min_samples in steps:
        labels = DBSCAN(eps=eps, min_samples=min_samples, metric="cosine").fit_predict(emb, sample_weight=sample_weight)
        if (labels >= 0).any():
            return Clustering(_relabel_by_size(labels), eps, min_samples)
    return Clustering(np.zeros(emb.shape[0], dtype=int), None, None)  # official: all in one cluster
