"""Analyse a reference video: faces, people, best face, demographics (paper §3.2, Fig. 2).

Flow: stream frames at ``fps`` (official: DeepFaceLab ``extract-video --fps 8``) → in worker
processes, detect faces and 68 landmarks (dlib HOG on a downscaled frame) and score quality →
link faces across frames by box overlap (tracks) → embed every face of every ``embed_every``-th
analysed frame and the first face of every new track; the other faces of a track are
represented by its latest embedding, and a new track starts where the identity jumps → DBSCAN
the embeddings, each weighted by the faces it stands for, so the density matches embedding every
face as the official pipeline does → each cluster is a person, noise is dropped → best face and
good faces per person by the official quality score → demographics of the chosen subject.

:func:`analyze_video` is the Python API (returns an :class:`~pvchat.faces.records.Analysis`, writes
nothing); its helpers are apart: detection in worker processes (:mod:`pvchat.faces.workers`), tracks
and the crops they keep (:mod:`pvchat.faces.tracks`), the data types (:mod:`pvchat.faces.records`).
:func:`pvchat.faces.analysis_dir.write_analysis` writes an analysis; the ``pvchat analyze`` command
is :mod:`pvchat.commands.analyze`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from pvchat.errors import InputError
from pvchat.faces.cluster import cluster_embeddings
from pvchat.faces.demographics import estimate_demographics
from pvchat.faces.detect import embed_chip, face_chip
from pvchat.faces.records import Analysis, AnalyzeSettings, FaceRecord, Person
from pvchat.faces.tracks import (
    CROP_BUDGET,
    KEEP_FINISHED,
    SAME_PERSON,
    Track,
    decode_png,
    flush_segment,
    keep_crop,
    link,
    trim,
)
from pvchat.faces.workers import ordered_detections
from pvchat.video import check_video, iter_frames, read_frames_uniform


def _vlm_frames(video: Path, people: list[Person], subject: int) -> np.ndarray:
    """What the VLM is shown: the paper's 8 uniform frames when the video has one person; with
    several, the subject's own face crops (up to 8, 224 px), so that "the protagonist" it is asked
    about is the chosen subject and not whoever dominates the frames."""
    if len(people) == 1:
        return read_frames_uniform(video, 8)  # (8, H, W, 3)
    p = people[subject]
    crops = [p.best_image, *[img for img, rec in zip(p.good_images, p.good) if rec is not p.best]][:8]
    return np.stack([cv2.resize(c, (224, 224), interpolation=cv2.INTER_AREA) for c in crops])  # (n, 224, 224, 3)


def analyze_video(
    video: str | os.PathLike,
    person: int | None = None,
    settings: AnalyzeSettings | None = None,
    demographics: str = "none",
    gender: str | None = None,
    age: str | None = None,
    progress: bool = True,
) -> Analysis:
    """Find the people in ``video``, their best faces, and pick the subject (paper §3.2).

    ``person`` picks the subject by its number (people are numbered by how often they are
    seen, 0 = most); by default the person seen most. Raises InputError for an unreadable
    video, a video without any detectable face, or a ``person`` that does not exist.
    """
    settings = settings or AnalyzeSettings()
    if settings.fps <= 0:
        raise InputError(f"fps must be > 0, got {settings.fps}")
    start = time.perf_counter()
    video = Path(video)
    info = check_video(video)  # InputError for non-videos (and one-frame stills) before any work

    records: list[FaceRecord] = []
    embeddings: list[np.ndarray] = []
    weights: list[int] = []  # faces each embedding stands for
    tracks: dict[int, Track] = {}
    finished: list[Track] = []
    frames_analyzed = seq = kept = 0
    total = int(info.duration_s * min(settings.fps, info.fps or settings.fps)) or None
    bar = tqdm(total=total, desc=f"analyze {video.name}", unit="frame", disable=not progress or None, leave=False)
    try:
        frames = iter_frames(video, settings.fps, settings.frame_max_side)
        for ordinal, (idx, t, rgb, found) in enumerate(ordered_detections(frames, settings)):
            frames_analyzed += 1
            bar.update(1)
            live = [tr for tr in tracks.values() if ordinal - tr.last_frame <= settings.max_gap]
            assigned = link([f.box for f, _ in found], live, settings.iou_link)
            for i, (face, q) in enumerate(found):
                tr = tracks.get(assigned.get(i, -1))
                emb = face.embedding  # set on key frames by the worker
                if emb is None and tr is None:  # a new track between key frames: embed it here
                    emb = embed_chip(face_chip(rgb, face))
                if tr is not None and emb is not None and np.linalg.norm(emb - embeddings[tr.embedding_id]) > SAME_PERSON:
                    tr = None  # identity jump inside a box-linked track: start a new track
                if emb is not None:
                    embeddings.append(emb)
                    weights.append(0)
                if tr is None:
                    tr = Track(id=len(tracks) + len(finished), last_frame=ordinal, box=face.box,
                                embedding_id=len(embeddings) - 1)
                    tracks[tr.id] = tr
                elif emb is not None:
                    tr.embedding_id = len(embeddings) - 1
                tr.last_frame, tr.box = ordinal, face.box
                weights[tr.embedding_id] += 1
                sx, sy = info.width / rgb.shape[1], info.height / rgb.shape[0]
                box = (round(face.box[0] * sx), round(face.box[1] * sy), round(face.box[2] * sx), round(face.box[3] * sy))
                rec = FaceRecord(frame=idx, time=round(t, 4), box=box, track=tr.id, quality=q,
                                 embedding_id=tr.embedding_id)
                records.append(rec)
                seq += 1
                keep_crop(tr, rec, face.box, rgb, seq, settings.max_good)
            for tid in [tid for tid, tr in tracks.items() if ordinal - tr.last_frame > settings.max_gap]:
                ended = tracks.pop(tid)
                flush_segment(ended, settings.max_good)
                trim(ended, KEEP_FINISHED)
                finished.append(ended)
                kept += len(ended.crops)
                if kept > CROP_BUDGET:  # bounded memory on long videos with many short tracks
                    for tr_ in finished:
                        trim(tr_, 1)
                    kept = len(finished)
    finally:
        bar.close()
    finished.extend(tracks.values())
    for tr in finished:
        flush_segment(tr, settings.max_good)
    if not records:
        raise InputError(f"{video}: no detectable face in {frames_analyzed} analysed frames")

    # People: DBSCAN over embeddings weighted by the faces they stand for.
    emb_arr = np.stack(embeddings)  # (E, 128)
    clustering = cluster_embeddings(emb_arr, settings.dbscan_steps, sample_weight=np.asarray(weights, float))
    labels = clustering.labels
    people: list[Person] = []
    crops_by_track = {tr.id: tr.crops for tr in finished}
    notes: list[str] = []
    for k in range(clustering.num_people):
        faces = [r for r in records if labels[r.embedding_id] == k]
        if not faces:
            continue
        ids = np.flatnonzero(labels == k)
        mean = (emb_arr[ids] * np.asarray(weights, np.float32)[ids, None]).sum(0) / max(1, sum(weights[i] for i in ids))
        cands = sorted((c for tid in {r.track for r in faces} for c in crops_by_track[tid]
                        if labels[c[2].embedding_id] == k), key=lambda c: (c[0], -c[1]), reverse=True)
        if not cands:  # every kept crop of these tracks went to another label: skip the sliver
            continue
        _, _, best_rec, best_png = cands[0]
        good = [c for c in cands if c[2].quality.passed][: settings.max_good] or cands[:1]
        people.append(Person(id=len(people), faces=faces, embedding=mean.astype(np.float32), best_image=decode_png(best_png),
                             best=best_rec, good_images=[decode_png(c[3]) for c in good], good=[c[2] for c in good]))
    if not people:
        raise InputError(f"{video}: faces were found but none could be grouped into a person")
    people.sort(key=lambda p: -p.num_faces)
    for new_id, p in enumerate(people):
        p.id = new_id
        if not p.best.quality.passed:
            notes.append(f"person_{p.id}: no face passes the quality gates ({p.best.quality.reason}); "
                         "the best-scoring face is used")

    if person is None:
        subject, reason = 0, "seen most" if len(people) > 1 else "only person"
    elif 0 <= person < len(people):
        subject, reason = person, "chosen with --person"
    else:
        raise InputError(f"{video}: no person {person}; found {len(people)} "
                         f"(0..{len(people) - 1}, numbered by how often they are seen)")

    frames_for_vlm = None
    if demographics.split(":", 1)[0] == "vlm":
        frames_for_vlm = _vlm_frames(video, people, subject)
    demo = estimate_demographics(demographics, frames=frames_for_vlm, gender=gender, age=age)
    noise = int(sum(weights[i] for i in np.flatnonzero(labels < 0)))
    return Analysis(
        video=str(video.resolve()), info=info, settings=settings, frames_analyzed=frames_analyzed,
        faces_detected=len(records), people=people, subject=subject, subject_reason=reason,
        demographics=demo, seconds=round(time.perf_counter() - start, 3), notes=notes,
        clustering={"eps": clustering.eps, "min_samples": clustering.min_samples, "metric": "cosine",
                    "embeddings": int(len(embeddings)), "noise_faces": noise},
    )
