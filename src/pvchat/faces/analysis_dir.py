"""The analysis directory that ``pvchat analyze`` writes: :func:`write_analysis` puts an
:class:`~pvchat.faces.records.Analysis` on disk (per person the best and good faces, the mean
embedding, track.json and quality.json; a contact sheet; summary.json), and :func:`load_summary` and
:func:`load_embedding` read it back.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pvchat.faces.contact_sheet import contact_sheet
from pvchat.faces.records import Analysis, FaceRecord
from pvchat.io import atomic_dir, load_tensors, read_json, save_tensors, write_json


def _png(path: Path, rgb: np.ndarray) -> None:
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
