"""Dync-D, VBench's dynamic degree: how much a generated clip moves (overview in :mod:`pvchat.synth.metrics`).

Frames resampled to ~8 fps; OpenCV Farnebäck optical flow (RAFT in the paper) between consecutive
frames at a shorter side of 256 px; a pair's score is the mean of its top 5 % flow magnitudes, it
moves if the score > 6·min(H, W)/256; a clip is dynamic if at least round(T/4) pairs move. The mean
pair score is kept as a continuous value.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pvchat.errors import InputError


@dataclass
class Dynamics:
    """Dync-D of one clip: ``dynamic`` (the VBench rule), the mean pair score (continuous) and each
    pair's top-5 % flow magnitude in pixels at the flow resolution."""

    dynamic: bool
    score: float
    pair_scores: list[float]
    threshold: float


def resample_indices(num_frames: int, fps: float, target_fps: float = 8.0) -> list[int]:
    """Indices that bring a clip at ``fps`` close to ``target_fps`` (never upsampled)."""
    step = max(1, int(round(fps / target_fps))) if fps > 0 else 1
    return list(range(0, num_frames, step))


def dynamic_degree(frames: np.ndarray, fps: float = 8.0, flow_size: int = 256, top: float = 0.05) -> Dynamics:
    """Dync-D with OpenCV Farnebäck flow (VBench's rule, RAFT replaced; see the module docstring).

    Args:
        frames: (T, H, W, 3) uint8 RGB.
        fps: the clip's frame rate (resampled to ~8 fps first).
        flow_size: shorter side the frames are resized to before flow.
        top: fraction of the largest flow magnitudes averaged per pair.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[0] < 2:
        raise InputError(f"dynamic degree needs (T>=2, H, W, 3) frames, got {frames.shape}")
    idx = resample_indices(len(frames), fps)
    if len(idx) < 2:
        idx = [0, len(frames) - 1]
    h, w = frames.shape[1:3]
    s = flow_size / min(h, w)
    size = (max(8, round(w * s)), max(8, round(h * s)))
    grey = [cv2.cvtColor(cv2.resize(frames[i], size, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY) for i in idx]
    pair_scores = []
    for a, b in zip(grey[:-1], grey[1:]):
        flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)  # (h, w, 2)
        mag = np.sqrt((flow**2).sum(-1)).ravel()
        k = max(1, int(len(mag) * top))
        pair_scores.append(float(np.partition(mag, len(mag) - k)[-k:].mean()))
    threshold = 6.0 * min(size) / 256.0
    moving = sum(p > threshold for p in pair_scores)
    need = max(1, round(len(grey) / 4))
    return Dynamics(dynamic=moving >= need, score=float(np.mean(pair_scores)), pair_scores=pair_scores,
                    threshold=threshold)
