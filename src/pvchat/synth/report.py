"""VideoAlchemy metrics, keep/drop and a contact sheet per backend (``pvchat eval-generator``).

Input (until the synthesis manifest exists, this is the minimal layout it reads)::

    DATA_DIR/
      clips.jsonl      one generated clip per line:
                       {"path": "clips/a.mp4", "backend": "consisid", "subject": "anna",
                        "prompt": "...",             # optional: enables Text-S
                        "label": "positive"}         # optional: "positive" (default) | "negative"
      subjects.json    per subject, paths relative to DATA_DIR:
                       {"anna": {"faces": ["refs/anna_0.png", ...],       # >= 1 reference face image
                                 "negatives": ["neg/x.png", ...],         # optional hard negatives
                                 "reference": "anna.mp4",                 # optional: enables Vid-S
                                 "subject_crops": ["refs/anna_body.png"]}}# optional: enables Subj-S

``DATA_DIR`` may also be a ``pvchat synthesize`` output (``settings.json`` + ``manifest.jsonl``): the
subject's faces and reference frames then come from its analysis, and the faces in its negative
clips are the hard negatives the gate is calibrated against.

Output (``OUT``, default ``DATA_DIR/eval``): ``report.json`` (thresholds per subject; per backend
the clip counts, kept/dropped counts and the mean scores of its positives and of its negatives; every clip's scores and reasons),
``decisions.jsonl`` (one row per clip) and ``contact_sheet.png`` (per backend a row of kept and a
row of dropped positives, and of negatives if any: the middle frame of each clip).

The Face-S gate of a subject is calibrated between its own reference faces and its hard negatives
(:func:`pvchat.synth.quality_filter.calibrate_face_threshold`) when it has >= 2 faces and >= 1 negative,
else ``face_threshold`` is used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pvchat.data import read_manifest
from pvchat.errors import InputError
from pvchat.faces.contact_sheet import contact_sheet
from pvchat.io import atomic_path, read_json, read_jsonl, write_json, write_text
from pvchat.synth import metrics as M, quality_filter
from pvchat.synth.identity import identity_from_analysis
from pvchat.video import iter_frames, read_frames_uniform


@dataclass
class ClipRow:
    path: Path
    backend: str
    subject: str
    prompt: str | None
    positive: bool


def _read_image(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(f"{path}: missing or not a readable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def load_clips(data_dir: Path) -> list[ClipRow]:
    """Rows of ``clips.jsonl`` (paths checked); a bad line is an InputError naming it."""
    f = data_dir / "clips.jsonl"
    if not f.is_file():
        raise InputError(f"{f}: no such file (eval-generator reads DATA_DIR/clips.jsonl and subjects.json)")
    rows = []
    for n, d in enumerate(read_jsonl(f), 1):
        try:
            row = ClipRow(path=data_dir / d["path"], backend=str(d["backend"]), subject=str(d["subject"]),
                          prompt=d.get("prompt"), positive=d.get("label", "positive") != "negative")
        except (KeyError, TypeError) as e:
            raise InputError(f"{f}: record {n}: need a JSON object with path, backend and subject ({type(e).__name__}: {e})") from None
        if not row.path.is_file():
            raise InputError(f"{f}:{n}: clip {row.path} does not exist")
        rows.append(row)
    if not rows:
        raise InputError(f"{f}: no clips listed")
    return rows


@dataclass
class SubjectRefs:
    """What a subject's clips are compared with: face images, hard-negative face images, reference
    video frames (Vid-S) and subject crops (Subj-S)."""

    faces: list[np.ndarray]
    negatives: list[np.ndarray]
    reference: np.ndarray | None = None
    crops: list[np.ndarray] | None = None


def load_subjects(data_dir: Path, num_frames: int = 8) -> dict[str, SubjectRefs]:
    """``subjects.json`` with its images read."""
    subjects = read_json(data_dir / "subjects.json")
    if not isinstance(subjects, dict):
        raise InputError(f"{data_dir / 'subjects.json'}: expected an object of subjects")
    out = {}
    for name, s in subjects.items():
        if not isinstance(s, dict) or not s.get("faces"):
            raise InputError(f"subjects.json: subject {name!r} needs a non-empty 'faces' list")
        out[name] = SubjectRefs(
            faces=[_read_image(data_dir / p) for p in s["faces"]],
            negatives=[_read_image(data_dir / p) for p in s.get("negatives", [])],
            reference=read_frames_uniform(data_dir / s["reference"], num_frames) if s.get("reference") else None,
            crops=[_read_image(data_dir / p) for p in s.get("subject_crops", [])] or None)
    return out


def load_synthesis(data_dir: Path, num_frames: int = 8, max_side: int = 512) -> tuple[list[ClipRow], dict[str, SubjectRefs]]:
    """A ``pvchat synthesize`` output (settings.json + manifest.jsonl): the subject's faces and reference
    frames come from its analysis; the middle frames of the negative clips are the hard negatives."""
    settings = read_json(data_dir / "settings.json")
    name = settings.get("name") if isinstance(settings, dict) else None
    if not name or not settings.get("analysis"):
        raise InputError(f"{data_dir / 'settings.json'}: not a 'pvchat synthesize' output (needs name and analysis)")
    rows = []
    for n, rec in enumerate(read_manifest(data_dir / "manifest.jsonl"), 1):
        path = data_dir / rec.clip
        if not path.is_file():
            raise InputError(f"{data_dir / 'manifest.jsonl'}:{n}: clip {path} does not exist")
        rows.append(ClipRow(path=path, backend=str(rec.provenance.get("backend", "unknown")), subject=name,
                            prompt=rec.provenance.get("prompt"), positive=rec.kind != "negative"))
    if not rows:
        raise InputError(f"{data_dir / 'manifest.jsonl'}: no clips listed")
    ident = identity_from_analysis(settings["analysis"], name, max_frames=num_frames)
    negatives = [_clip_frames(r.path, 8.0, 64, max_side) for r in rows if not r.positive]
    refs = SubjectRefs(faces=list(ident.faces[:8]), negatives=[f[len(f) // 2] for f in negatives],
                       reference=np.stack(ident.frames) if ident.frames else None)
    return rows, {name: refs}


def _clip_frames(path: Path, fps: float, max_frames: int, max_side: int) -> np.ndarray:
    """Up to ``max_frames`` consecutive frames resampled to ``fps`` (Dync-D's ~8 fps), (T, H, W, 3)."""
    frames = [f for _, (_, _, f) in zip(range(max_frames), iter_frames(path, fps=fps, max_side=max_side))]
    if not frames:
        raise InputError(f"{path}: no decodable frames")
    return np.stack(frames)


def _means(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key in ("text_s", "vid_s", "subj_s", "face_s", "face_cos", "face_rate", "dync_score"):
        vals = [r["scores"][key] for r in rows if r["scores"].get(key) is not None]
        out[key] = float(np.mean(vals)) if vals else None
    dyn = [r["scores"]["dynamic"] for r in rows if r["scores"].get("dynamic") is not None]
    out["dync_d"] = float(np.mean(dyn)) if dyn else None  # the benchmark's fraction of dynamic clips
    return out


def evaluate_generated(
    data_dir: Path,
    out: Path | None = None,
    clip_dir: str | None = None,
    subject_dir: str | None = None,
    face_encoder: str = "dlib",
    face_threshold: float = 0.9,
    min_text: float | None = None,
    min_dync: float | None = None,
    max_vid_s: float | None = 0.95,
    num_frames: int = 8,
    max_side: int = 512,
    tiles: int = 8,
) -> tuple[dict[str, Any], Path]:
    """Score generated clips with VideoAlchemy's metrics and keep or drop each, per backend.

    Writes report.json, decisions.jsonl and contact_sheet.png to ``out`` (default
    ``data_dir/eval``); returns (the report, ``out``). The arguments are those of
    ``pvchat eval-generator`` (:func:`pvchat.commands.eval_generator.eval_generator`).
    """
    data_dir = Path(data_dir)
    out = Path(out) if out is not None else data_dir / "eval"
    if not (data_dir / "clips.jsonl").is_file() and (data_dir / "manifest.jsonl").is_file():
        clips, subjects = load_synthesis(data_dir, num_frames, max_side)
    else:
        clips = load_clips(data_dir)
        subjects = load_subjects(data_dir, num_frames)
    unknown = sorted({c.subject for c in clips} - set(subjects))
    if unknown:
        raise InputError(f"clips.jsonl names subjects missing from subjects.json: {', '.join(unknown)}")
    scorer = M.VideoAlchemyMetrics(M.MetricsConfig(clip_dir=clip_dir, subject_dir=subject_dir,
                                                   face_encoder=face_encoder, num_frames=num_frames))
    filters: dict[str, quality_filter.QualityFilter] = {}
    for name in sorted({c.subject for c in clips}):
        s = subjects[name]
        filters[name] = quality_filter.QualityFilter(
            s.faces, s.negatives, metrics=scorer, face_threshold=face_threshold, min_text=min_text, min_dync=min_dync,
            max_vid_s=max_vid_s, ref_frames=s.reference, ref_subject_crops=s.crops)

    rows: list[dict[str, Any]] = []
    thumbs: dict[tuple[str, bool, bool], list[np.ndarray]] = {}  # (backend, positive, kept) → middle frames
    for c in clips:
        frames = _clip_frames(c.path, 8.0, max(2 * num_frames, 16), max_side)
        d = filters[c.subject](frames, fps=8.0, prompt=c.prompt, positive=c.positive)
        rows.append({"path": str(c.path.relative_to(data_dir)), "backend": c.backend, "subject": c.subject,
                     "label": "positive" if c.positive else "negative", **d.to_dict()})
        thumbs.setdefault((c.backend, c.positive, d.keep), []).append(frames[len(frames) // 2])

    backends = sorted({c.backend for c in clips})
    summary = {}
    for b in backends:
        br = [r for r in rows if r["backend"] == b]
        pos = [r for r in br if r["label"] == "positive"]
        neg = [r for r in br if r["label"] == "negative"]
        summary[b] = {"clips": len(br), "positives": len(pos), "negatives": len(neg),
                      "kept": sum(r["keep"] for r in br), "dropped": sum(not r["keep"] for r in br),
                      "mean": _means(pos), "mean_negatives": _means(neg)}
    report = {"data_dir": str(data_dir), "backends": summary,
              "thresholds": {n: f.thresholds.to_dict() for n, f in filters.items()}, "clips": rows}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "report.json", report)
    write_text(out / "decisions.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    sheet_rows = []
    for b in backends:
        for positive in (True, False):
            for keep in (True, False):
                found = thumbs.get((b, positive, keep), [])
                if found or positive:  # positives always show both rows; negatives only when present
                    label = f"{b}\n{'positive' if positive else 'negative'}\n{'kept' if keep else 'dropped'} {len(found)}"
                    sheet_rows.append((label, found[:tiles]))
    sheet = contact_sheet(sheet_rows)
    ok, png = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))

    with atomic_path(out / "contact_sheet.png") as tmp:
        tmp.write_bytes(png.tobytes())
    return report, out
