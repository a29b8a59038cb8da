"""Face tracks of the analysis: faces linked across analysed frames by box overlap, and the few
best face crops each track keeps (one per segment of :data:`SEGMENT` faces, so they come from
different moments; memory bounded per track and in all by :data:`CROP_BUDGET`).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import cv2
import numpy as np

from pvchat.faces.quality import rank_key
from pvchat.faces.records import FaceRecord

SAME_PERSON = 0.6  # dlib euclidean threshold: a larger jump inside a track starts a new track
CROP_MARGIN = 0.5  # saved face images: the box grown by this fraction of its size on each side
CROP_MAX_SIDE = 384  # px, saved face images are at most this large
KEEP_FINISHED = 3  # crops a track keeps once it has ended
CROP_BUDGET = 1000  # crops kept in all; above it every ended track keeps only its best
SEGMENT = 8  # faces per track segment; each segment contributes at most one crop (time diversity)


@dataclass
class Track:
    id: int
    last_frame: int  # ordinal of the analysed frame it was last seen in
    box: tuple[int, int, int, int]
    embedding_id: int
    crops: list = field(default_factory=list)  # min-heap of (rank, seq, record, PNG bytes), segment winners
    seg_best: tuple | None = None  # best (rank, seq, record, (h, w, 3) crop) of the current segment
    seg_n: int = 0


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def link(boxes: list[tuple[int, int, int, int]], live: list[Track], iou_link: float) -> dict[int, int]:
    """face index → track id: faces linked to live tracks by box overlap, most overlapping pairs first."""
    pairs = sorted(((iou(box, tr.box), i, tr.id) for i, box in enumerate(boxes) for tr in live), reverse=True)
    assigned: dict[int, int] = {}
    used: set[int] = set()
    for overlap, i, tid in pairs:
        if overlap < iou_link or i in assigned or tid in used:
            continue
        assigned[i] = tid
        used.add(tid)
    return assigned


def _crop(rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The face box grown by CROP_MARGIN, clipped to the frame, at most CROP_MAX_SIDE px."""
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = box
    mx, my = int((x1 - x0) * CROP_MARGIN), int((y1 - y0) * CROP_MARGIN)
    crop = rgb[max(0, y0 - my) : min(h, y1 + my), max(0, x0 - mx) : min(w, x1 + mx)]
    s = CROP_MAX_SIDE / max(crop.shape[:2])
    if s < 1:
        crop = cv2.resize(crop, (max(1, round(crop.shape[1] * s)), max(1, round(crop.shape[0] * s))),
                          interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(crop)


def _encode(crop: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


def decode_png(data: bytes) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def flush_segment(track: Track, keep: int) -> None:
    """Move the segment's winner into the track's top-``keep`` heap (stored PNG-encoded)."""
    if track.seg_best is not None:
        rank, seq, rec, crop = track.seg_best
        if len(track.crops) < keep:
            heapq.heappush(track.crops, (rank, seq, rec, _encode(crop)))
        elif (rank, seq) > track.crops[0][:2]:
            heapq.heapreplace(track.crops, (rank, seq, rec, _encode(crop)))
    track.seg_best, track.seg_n = None, 0


def trim(track: Track, keep: int) -> None:
    if len(track.crops) > keep:
        track.crops = heapq.nlargest(keep, track.crops, key=lambda c: c[:2])
        heapq.heapify(track.crops)


def keep_crop(track: Track, rec: FaceRecord, box: tuple[int, int, int, int], rgb: np.ndarray, seq: int, keep: int) -> None:
    """Keep the best face of every SEGMENT faces of a track, and the ``keep`` best of those.

    Memory per track is bounded by ``keep + 1`` crops; winners come from different moments.
    """
    rank = rank_key(rec.quality)
    if track.seg_best is None or rank > track.seg_best[0]:
        track.seg_best = (rank, seq, rec, _crop(rgb, box))  # box: in rgb's pixels
    track.seg_n += 1
    if track.seg_n >= SEGMENT:
        flush_segment(track, keep)
