"""Analysed frames per second of `pvchat analyze` on a 720p clip of real faces, vs a naive baseline.

    python bench/analyze.py [--seconds 8] [--src-fps 25] [--fps 8] [--repeats 2]

The clip (1280×720, h264, ``--src-fps``) shows three real people who ship offline: the astronaut
(scikit-image), Grace Hopper (matplotlib) for most of the clip, and an LFW face (upscaled 8×)
in the middle third, each drifting and changing scale. ``analyze_video`` samples it at ``--fps``
(paper: 8) with the shipped settings: HOG on the frame downscaled to 640 px, two detection
threads, embeddings for each new track and every 4th face of a track.

Baseline, same process and clip: detection at full resolution, every face embedded, one thread
(what a direct port of the per-frame pipeline does). Both runs alternate ``--repeats`` times;
medians are reported, with the ratio. Start-up (loading the models, forking the pool) is timed
once, separately. The goal on a 2-core machine is >= 8 analysed fps. Wall-clock fps depends on
what else runs on the machine, so CPU time per analysed frame (this process + the workers) is
reported too, with the frame rate it allows on idle cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from pvchat.faces.analyze import analyze_video
from pvchat.faces.records import AnalyzeSettings
from pvchat.faces.samples import Appearance, head, lfw_faces, render_frames
from pvchat.video import write_video


def make_clip(path: Path, seconds: float, src_fps: float) -> None:
    n = int(seconds * src_fps)
    lfw = lfw_faces(scale=8, pad=60)[3]
    people = [
        Appearance(head("astronaut"), center=(0.25, 0.45), height=0.42),
        Appearance(head("grace_hopper"), center=(0.75, 0.45), height=0.42, start=n // 6),
        Appearance(lfw, center=(0.5, 0.7), height=0.38, start=n // 3, stop=2 * n // 3),
    ]
    write_video(path, render_frames(people, n, size=(1280, 720), seed=1), fps=src_fps, crf=20)


def _cpu_seconds() -> float:
    """CPU time of this process and of the live analysis workers (they are not reaped, so
    RUSAGE_CHILDREN would miss them)."""
    from pvchat.faces import workers as A

    total = time.process_time()
    if A._POOL is not None and A._POOL[0] == os.getpid():
        tick = os.sysconf("SC_CLK_TCK")
        for pid in list(A._POOL[2]._processes):
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return total


def run(path: Path, settings: AnalyzeSettings) -> tuple[float, float, int, int]:
    """(wall fps, CPU seconds per analysed frame, frames, people)."""
    c0, t0 = _cpu_seconds(), time.perf_counter()
    a = analyze_video(path, settings=settings, progress=False)
    dt, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    return a.frames_analyzed / dt, cpu / a.frames_analyzed, a.frames_analyzed, len(a.people)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--src-fps", type=float, default=25.0)
    p.add_argument("--fps", type=float, default=8.0)
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        clip = Path(d) / "bench_720p.mp4"
        make_clip(clip, a.seconds, a.src_fps)
        warm = Path(d) / "warm.mp4"
        make_clip(warm, 0.5, a.src_fps)
        t0 = time.perf_counter()
        analyze_video(warm, progress=False)  # loads the dlib models, forks the worker pool
        print(f"start-up (models + worker pool, once per process): {time.perf_counter() - t0:.2f} s")
        ours = AnalyzeSettings(fps=a.fps)
        naive = AnalyzeSettings(fps=a.fps, detect_max_side=100_000, embed_every=1, workers=1)
        fps = {"ours": [], "naive": []}
        cpu = {"ours": [], "naive": []}
        for _ in range(a.repeats):
            for name, s in (("ours", ours), ("naive", naive)):
                r, c, frames, people = run(clip, s)
                fps[name].append(r)
                cpu[name].append(c)
                print(f"  {name:5s}: {r:6.2f} analysed frames/s, {1e3 * c:6.1f} CPU ms/frame "
                      f"({frames} frames, {people} people)")
    med = {k: statistics.median(v) for k, v in fps.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
    cores = os.cpu_count() or 1
    print(f"720p clip, {a.seconds:g} s at {a.src_fps:g} fps, analysed at {a.fps:g} fps, {a.repeats} repeats (median); "
          f"{cores} cores, load average {os.getloadavg()[0]:.1f}:")
    print(f"analyze: {med['ours']:.2f} analysed frames/s wall  (goal >= 8); "
          f"{1e3 * cpu_med['ours']:.0f} CPU ms/frame -> at most {cores / cpu_med['ours']:.1f} frames/s on {cores} idle cores")
    print(f"naive (full-res detection, embed every face, 1 process): {med['naive']:.2f} frames/s wall; "
          f"{1e3 * cpu_med['naive']:.0f} CPU ms/frame")
    print(f"speed-up vs naive: {med['ours'] / med['naive']:.2f}x wall, {cpu_med['naive'] / cpu_med['ours']:.2f}x CPU")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
