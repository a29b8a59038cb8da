"""Build a generator :class:`~pvchat.synth.base.Identity` from a ``pvchat analyze`` directory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pvchat.errors import InputError
from pvchat.faces.analysis_dir import load_embedding, load_summary
from pvchat.io import read_json
from pvchat.synth.base import Identity
from pvchat.video import iter_frames


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def identity_from_analysis(analysis: str | Path, name: str, person: int | None = None,
                           max_frames: int = 24) -> Identity:
    """The subject of an analysis (or ``person``): faces, embedding, demographics and up to
    ``max_frames`` reference frames spread over its track, with its face box in each."""
    analysis = Path(analysis)
    if not (analysis / "summary.json").is_file():
        raise InputError(f"{analysis}: not an analysis directory (run 'pvchat analyze' first)")
    summary = load_summary(analysis)
    k = summary["subject"] if person is None else person
    pdir = analysis / f"person_{k}"
    if not pdir.is_dir():
        raise InputError(f"{analysis}: no person {k}")
    faces = [_png(pdir / "best_face.png")] + [_png(p) for p in sorted((pdir / "good_faces").glob("*.png"))]
    track = read_json(pdir / "track.json")  # [{"frame", "time", "box", ...}] in analysed order
    picks = track if len(track) <= max_frames else [track[i] for i in np.linspace(0, len(track) - 1, max_frames).round().astype(int)]
    wanted = {round(float(r["time"]), 3): tuple(int(v) for v in r["box"]) for r in picks}
    frames, boxes = [], []
    video = Path(summary["video"])
    if video.is_file():
        fps = float(summary["settings"]["fps"])
        for _, t, rgb in iter_frames(video, fps=fps):
            box = wanted.get(round(float(t), 3))
            if box is not None:
                frames.append(rgb)
                boxes.append(box)
            if len(frames) == len(wanted):
                break
    demo = summary.get("demographics") or {}
    return Identity(name=name, faces=faces, embedding=load_embedding(analysis, k), frames=frames, boxes=boxes,
                    gender=demo.get("gender"), age=demo.get("age"))
