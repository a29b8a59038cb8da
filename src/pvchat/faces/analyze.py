"""Analyse a reference video: faces, people, best face, demographics (paper §3.2, Fig. 2).

Flow: stream frames at ``fps`` (official: DeepFaceLab ``extract-video --fps 8``) → in worker
processes, detect faces and 68 landmarks (dlib HOG on a downscaled frame) and score quality →
link faces across frames by box overlap (tracks) → embed every face of every ``embed_every``-th
analysed frame and the first face of every new track; the other faces of a track are
represented by its latest embedding, and a new track starts where the identity jumps → DBSCAN
the embeddings, each weighted by the faces it stands for, so the density matches embedding every
face as the official pipeline does → each cluster is a person, noise is dropped → best face and
good faces per person by the official quality score → demographics of the chosen subject.

:func:`analyze_video` is the Python API (returns an :class:`Analysis`, writes nothing);
:func:`write_analysis` writes it; the ``pvchat analyze`` command is :mod:`pvchat.commands.analyze`.
"""

from __future__ import annotations

import heapq
import multiprocessing
import os
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from pvchat.errors import InputError
from pvchat.faces.cluster import DBSCAN_STEPS, cluster_embeddings
from pvchat.faces.contact_sheet import contact_sheet
from pvchat.faces.demographics import Demographics, estimate_demographics
from pvchat.faces.detect import Face, FaceEngine, _models, embed_chip, face_chip
from pvchat.faces.quality import MIN_SIZE, FaceQuality, assess, rank_key
from pvchat.io import atomic_dir, load_tensors, read_json, save_tensors, write_json
from pvchat.video import VideoInfo, check_video, iter_frames, read_frames_uniform

SAME_PERSON = 0.6  # dlib euclidean threshold: a larger jump inside a track starts a new track
CROP_MARGIN = 0.5  # saved face images: the box grown by this fraction of its size on each side
CROP_MAX_SIDE = 384  # px, saved face images are at most this large
KEEP_FINISHED = 3  # crops a track keeps once it has ended
CROP_BUDGET = 1000  # crops kept in all; above it every ended track keeps only its best
SEGMENT = 8  # faces per track segment; each segment contributes at most one crop (time diversity)


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


@dataclass
class _Track:
    id: int
    last_frame: int  # ordinal of the analysed frame it was last seen in
    box: tuple[int, int, int, int]
    embedding_id: int
    crops: list = field(default_factory=list)  # min-heap of (rank, seq, record, PNG bytes), segment winners
    seg_best: tuple | None = None  # best (rank, seq, record, (h, w, 3) crop) of the current segment
    seg_n: int = 0


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _crop(rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The face box grown by CROP_MARGIN, clipped to the frame, at most CROP_MAX_SIDE px."""
    import cv2

    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = box
    mx, my = int((x1 - x0) * CROP_MARGIN), int((y1 - y0) * CROP_MARGIN)
    crop = rgb[max(0, y0 - my) : min(h, y1 + my), max(0, x0 - mx) : min(w, x1 + mx)]
    s = CROP_MAX_SIDE / max(crop.shape[:2])
    if s < 1:
        crop = cv2.resize(crop, (max(1, round(crop.shape[1] * s)), max(1, round(crop.shape[0] * s))),
                          interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(crop)


_ENGINES: dict[tuple[int, int], FaceEngine] = {}


def _detect_frame(
    rgb: np.ndarray, embed: bool, max_side: int, upsample: int, min_face: int
) -> list[tuple[Face, FaceQuality]]:
    """Detect, fit landmarks, assess quality and (on key frames) embed every face of one frame.

    Runs in a worker process (module-level so it pickles); the engine is made once per process.
    """
    engine = _ENGINES.get((max_side, upsample))
    if engine is None:
        engine = _ENGINES[(max_side, upsample)] = FaceEngine(max_side, upsample)
    faces = engine.detect(rgb, embed=embed)
    return [(f, assess(rgb, f, min_size=min_face)) for f in faces]


_POOL: tuple[int, int, ProcessPoolExecutor] | None = None  # (pid, workers, pool)


def _noop() -> None:
    return None


def _worker_init(parent: int | None = None) -> None:
    """Workers leave Ctrl-C to the parent, which cancels the work and reports it once, and end
    when the parent is gone (a ``kill -9`` of it would otherwise leave them running)."""
    import signal

    from pvchat.proc import die_with_parent

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent)


def _pool(workers: int) -> ProcessPoolExecutor:
    """A pool of forked worker processes, kept for the life of this process.

    Processes, not threads: dlib's recognizer holds the GIL and its detector re-takes it often,
    so detection threads fought over it and ran at ~1 core (bench/analyze.py). Fork, not spawn:
    spawn re-runs the caller's ``__main__``, which breaks any script without a main guard. The
    workers are forked at once (a no-op task), before any decoder thread of this call exists;
    they only run dlib, OpenCV and numpy.
    """
    global _POOL
    if _POOL is not None and _POOL[:2] == (os.getpid(), workers):
        return _POOL[2]
    if _POOL is not None and _POOL[0] == os.getpid():
        _POOL[2].shutdown(cancel_futures=True)
    _models()  # load the dlib models here first: forked workers inherit them (copy-on-write)
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"), initializer=_worker_init,
                               initargs=(os.getpid(),))
    pool.submit(_noop).result()  # forks all workers now
    _POOL = (os.getpid(), workers, pool)
    return pool


def _ordered_results(
    frames: Iterator[tuple[int, float, np.ndarray]], settings: AnalyzeSettings
) -> Iterator[tuple[int, float, np.ndarray, list[tuple[Face, FaceQuality]]]]:
    """Detect in worker processes, yield in frame order; at most 2 × workers frames in flight.

    Every ``embed_every``-th frame is a key frame whose faces are all embedded in the worker.
    ``workers <= 1`` runs everything in this process.
    """
    args = (settings.detect_max_side, settings.upsample, settings.min_face)
    every = max(1, settings.embed_every)
    if settings.workers <= 1:
        for k, (idx, t, rgb) in enumerate(frames):
            yield idx, t, rgb, _detect_frame(rgb, k % every == 0, *args)
        return
    pool = _pool(settings.workers)  # before the first frame is decoded (see _pool)
    pending: deque[tuple[int, float, np.ndarray, Future]] = deque()
    global _POOL
    try:
        for k, (idx, t, rgb) in enumerate(frames):
            pending.append((idx, t, rgb, pool.submit(_detect_frame, rgb, k % every == 0, *args)))
            while len(pending) >= 2 * settings.workers:
                i, tt, img, fut = pending.popleft()
                yield i, tt, img, fut.result()
        while pending:
            i, tt, img, fut = pending.popleft()
            yield i, tt, img, fut.result()
    except BrokenProcessPool:
        _POOL = None  # a worker died (e.g. out of memory): the next call starts a new pool
        raise
    finally:
        for *_, fut in pending:
            fut.cancel()


def _encode(crop: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


def _decode_png(data: bytes) -> np.ndarray:
    import cv2

    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _flush_segment(track: _Track, keep: int) -> None:
    """Move the segment's winner into the track's top-``keep`` heap (stored PNG-encoded)."""
    if track.seg_best is not None:
        rank, seq, rec, crop = track.seg_best
        if len(track.crops) < keep:
            heapq.heappush(track.crops, (rank, seq, rec, _encode(crop)))
        elif (rank, seq) > track.crops[0][:2]:
            heapq.heapreplace(track.crops, (rank, seq, rec, _encode(crop)))
    track.seg_best, track.seg_n = None, 0


def _trim(track: _Track, keep: int) -> None:
    if len(track.crops) > keep:
        track.crops = heapq.nlargest(keep, track.crops, key=lambda c: c[:2])
        heapq.heapify(track.crops)


def _keep_crop(track: _Track, rec: FaceRecord, box: tuple[int, int, int, int], rgb: np.ndarray, seq: int, keep: int) -> None:
    """Keep the best face of every SEGMENT faces of a track, and the ``keep`` best of those.

    Memory per track is bounded by ``keep + 1`` crops; winners come from different moments.
    """
    rank = rank_key(rec.quality)
    if track.seg_best is None or rank > track.seg_best[0]:
        track.seg_best = (rank, seq, rec, _crop(rgb, box))  # box: in rgb's pixels
    track.seg_n += 1
    if track.seg_n >= SEGMENT:
        _flush_segment(track, keep)


def _vlm_frames(video: Path, people: list[Person], subject: int) -> np.ndarray:
    """What the VLM is shown: the paper's 8 uniform frames when the video has one person; with
    several, the subject's own face crops (up to 8, 224 px), so that "the protagonist" it is asked
    about is the chosen subject and not whoever dominates the frames."""
    import cv2

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
    from tqdm import tqdm

    settings = settings or AnalyzeSettings()
    if settings.fps <= 0:
        raise InputError(f"fps must be > 0, got {settings.fps}")
    start = time.perf_counter()
    video = Path(video)
    info = check_video(video)  # InputError for non-videos (and one-frame stills) before any work

    records: list[FaceRecord] = []
    embeddings: list[np.ndarray] = []
    weights: list[int] = []  # faces each embedding stands for
    tracks: dict[int, _Track] = {}
    finished: list[_Track] = []
    frames_analyzed = seq = kept = 0
    total = int(info.duration_s * min(settings.fps, info.fps or settings.fps)) or None
    bar = tqdm(total=total, desc=f"analyze {video.name}", unit="frame", disable=not progress or None, leave=False)
    try:
        frames = iter_frames(video, settings.fps, settings.frame_max_side)
        for ordinal, (idx, t, rgb, found) in enumerate(_ordered_results(frames, settings)):
            frames_analyzed += 1
            bar.update(1)
            # Link faces to live tracks by box overlap, most overlapping pairs first.
            live = [tr for tr in tracks.values() if ordinal - tr.last_frame <= settings.max_gap]
            pairs = sorted(((_iou(f.box, tr.box), i, tr.id) for i, (f, _) in enumerate(found) for tr in live), reverse=True)
            assigned: dict[int, int] = {}
            used: set[int] = set()
            for iou, i, tid in pairs:
                if iou < settings.iou_link or i in assigned or tid in used:
                    continue
                assigned[i] = tid
                used.add(tid)
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
                    tr = _Track(id=len(tracks) + len(finished), last_frame=ordinal, box=face.box,
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
                _keep_crop(tr, rec, face.box, rgb, seq, settings.max_good)
            for tid in [tid for tid, tr in tracks.items() if ordinal - tr.last_frame > settings.max_gap]:
                ended = tracks.pop(tid)
                _flush_segment(ended, settings.max_good)
                _trim(ended, KEEP_FINISHED)
                finished.append(ended)
                kept += len(ended.crops)
                if kept > CROP_BUDGET:  # bounded memory on long videos with many short tracks
                    for tr_ in finished:
                        _trim(tr_, 1)
                    kept = len(finished)
    finally:
        bar.close()
    finished.extend(tracks.values())
    for tr in finished:
        _flush_segment(tr, settings.max_good)
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
        people.append(Person(id=len(people), faces=faces, embedding=mean.astype(np.float32), best_image=_decode_png(best_png),
                             best=best_rec, good_images=[_decode_png(c[3]) for c in good], good=[c[2] for c in good]))
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


def _png(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(rgb).save(path, format="PNG")


def _face_row(r: FaceRecord) -> dict:
    return {"frame": r.frame, "time": r.time, "box": list(r.box), "track": r.track}


def summary_dict(a: Analysis) -> dict:
    """The JSON written as summary.json."""
    s = asdict(a.settings)
    s["dbscan_steps"] = [list(x) for x in a.settings.dbscan_steps]
    return {
        "video": a.video,
        "info": asdict(a.info),
        "people": [
            {"id": p.id, "dir": f"person_{p.id}", "faces": p.num_faces, "tracks": len({r.track for r in p.faces}),
             "first_time": min(r.time for r in p.faces), "last_time": max(r.time for r in p.faces),
             "best": {**_face_row(p.best), "score": round(p.best.quality.score, 3), "passed": p.best.quality.passed},
             "good_faces": len(p.good)}
            for p in a.people
        ],
        "subject": a.subject,
        "subject_reason": a.subject_reason,
        "demographics": a.demographics.to_dict() if a.demographics else None,
        "frames_analyzed": a.frames_analyzed,
        "faces_detected": a.faces_detected,
        "clustering": a.clustering,
        "settings": s,
        "seconds": a.seconds,
        "notes": a.notes,
    }


def write_analysis(a: Analysis, out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``a`` under ``out`` atomically (nothing appears unless all of it is written)."""
    out = Path(out)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        rows = []
        for p in a.people:
            d = tmp / f"person_{p.id}"
            (d / "good_faces").mkdir(parents=True)
            _png(d / "best_face.png", p.best_image)
            for j, (img, rec) in enumerate(zip(p.good_images, p.good)):
                _png(d / "good_faces" / f"{j:02d}_frame{rec.frame:06d}.png", img)
            save_tensors(d / "embedding.safetensors", {"embedding": torch.from_numpy(p.embedding)},
                         metadata={"model": "dlib_face_recognition_resnet_model_v1", "faces": str(p.num_faces)})
            write_json(d / "track.json", [_face_row(r) for r in p.faces])
            write_json(d / "quality.json", [{**_face_row(r), **r.quality.to_dict()} for r in p.faces])
            label = f"person_{p.id}\n{p.num_faces} faces" + ("\nSUBJECT" if p.id == a.subject else "")
            rest = [img for img, rec in zip(p.good_images, p.good) if rec is not p.best]
            rows.append((label, [p.best_image, *rest]))
        _png(tmp / "contact_sheet.png", contact_sheet(rows))
        write_json(tmp / "summary.json", summary_dict(a))
    return out


def load_summary(out: str | os.PathLike) -> dict:
    """summary.json of an analysis directory."""
    return read_json(Path(out) / "summary.json")


def load_embedding(out: str | os.PathLike, person: int | None = None) -> np.ndarray:
    """(128,) mean embedding of ``person`` (default: the chosen subject) of an analysis directory."""
    k = load_summary(out)["subject"] if person is None else person
    return load_tensors(Path(out) / f"person_{k}" / "embedding.safetensors")["embedding"].numpy()
