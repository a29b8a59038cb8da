"""Face detection for the analysis in forked worker processes, results yielded in frame order.

Each analysed frame is detected (dlib HOG + 68 landmarks), quality-scored and, on key frames,
embedded in a worker; :func:`ordered_detections` keeps at most 2 × workers frames in flight. The
pool is made once per process (:func:`_pool`) and its workers die with their parent.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Iterator

import numpy as np

from pvchat.faces.detect import Face, FaceEngine, _models
from pvchat.faces.quality import FaceQuality, assess
from pvchat.faces.records import AnalyzeSettings
from pvchat.proc import die_with_parent

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


def ordered_detections(
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
