"""The data of a video analysis: the settings it runs with (:class:`AnalyzeSettings`), one
:class:`FaceRecord` per face seen, the :class:`Person` clusters, and the :class:`Analysis` that holds
them. :func:`pvchat.faces.analyze.analyze_video` makes one; :mod:`pvchat.faces.analysis_dir` writes and reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pvchat.faces.cluster import DBSCAN_STEPS
from pvchat.faces.demographics import Demographics
from pvchat.faces.quality import MIN_SIZE, FaceQuality
from pvchat.video import VideoInfo


@dataclass
class AnalyzeSettings:
    """Knobs of :func:`analyze_video` (recorded in summary.json)."""

    fps: float = 8.0  # frames analysed per second of video (official 8)
    frame_max_side: int | None = 1280  # frames are decoded at most this large (boxes are reported in source pixels)
    detect_max_side: int = 640  # detector input size (longer side)
    upsample: int = 1  # dlib HOG upsampling
    embed_every: int = 8  # embed all faces on every n-th analysed frame (1 = every face, as official)
    max_good: int = 8  # good faces kept per person
    min_face: int = MIN_SIZE  # px; smaller faces fail the quality gate
    iou_link: float = 0.3  # box overlap that links a face to the previous frame's face
    max_gap: int = 8  # analysed frames a track may miss (a missed detection) and still be continued
    workers: int = 2  # detection processes (<= 1: in this process)
    dbscan_steps: tuple[tuple[float, int], ...] = DBSCAN_STEPS


@dataclass
class FaceRecord:
    """One face in one analysed frame (what track.json and quality.json list)."""

    frame: int
    time: float
    box: tuple[int, int, int, int]
    track: int
    quality: FaceQuality
    embedding_id: int  # the embedding standing for this face (its own or its track's latest)


@dataclass
class Person:
    """One cluster of faces: a person of the video."""

    id: int
    faces: list[FaceRecord]
    embedding: np.ndarray  # (128,) weighted mean dlib embedding
    best_image: np.ndarray  # (h, w, 3) uint8 crop of the best face
    best: FaceRecord
    good_images: list[np.ndarray]
    good: list[FaceRecord]

    @property
    def num_faces(self) -> int:
        return len(self.faces)


@dataclass
class Analysis:
    """Everything :func:`analyze_video` found; :func:`write_analysis` puts it on disk."""

    video: str
    info: VideoInfo
    settings: AnalyzeSettings
    frames_analyzed: int
    faces_detected: int
    people: list[Person]
    subject: int
    subject_reason: str
    demographics: Demographics | None
    clustering: dict
    seconds: float
    notes: list[str] = field(default_factory=list)
