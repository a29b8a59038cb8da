"""A training-free baseline: is the subject's face among the faces of the query clip?

For each subject, the reference video is analysed (:func:`pvchat.faces.analyze.analyze_video`) and
the subject's best face is embedded with dlib. A query clip is answered from ``num_frames``
uniformly sampled frames: every face found is embedded, and the subject counts as present when a
face is closer than the subject's threshold (euclidean dlib distance). The threshold is the
repository's calibration (:func:`pvchat.synth.negatives.identity_threshold`): halfway between the
subject's own good faces and its nearest face in a pool of other people, within [0.4, 0.6]; with no
pool, dlib's documented 0.6.

Answers use the free-text form of the model ("Yes, <Anna> is in this video." / "No, <Anna> is not
in this video."), so the same metric code scores both. Location questions are answered from where
the matched face is in the frame; the baseline cannot see actions or clothing and says so.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pvchat.errors import ConfigError, InputError
from pvchat.eval.benchmark import Benchmark, load_benchmark
from pvchat.eval.questions import question_type
from pvchat.faces import FaceEngine
from pvchat.faces.analyze import analyze_video
from pvchat.faces.records import AnalyzeSettings
from pvchat.qa.facts import position_word
from pvchat.synth.negatives import build_face_bank, identity_threshold, rank_by_similarity
from pvchat.video import read_frames_uniform

DEFAULT_THRESHOLD = 0.6


@dataclass
class SubjectFace:
    """What the baseline knows about one subject."""

    name: str
    reference: str
    embedding: np.ndarray  # (128,) dlib embedding of the best reference face
    threshold: float
    source: str  # "best face" or "mean embedding" (when no face is found in the best crop)
    self_distances: list[float] = field(default_factory=list)
    nearest_pool: float | None = None

    def to_dict(self) -> dict:
        return {"reference": self.reference, "threshold": round(self.threshold, 4), "embedding": self.source,
                "self_distances": [round(d, 4) for d in self.self_distances],
                "nearest_pool_distance": None if self.nearest_pool is None else round(self.nearest_pool, 4)}


@dataclass
class _Frame:
    width: int
    faces: list[tuple[np.ndarray, tuple[int, int, int, int]]]  # (embedding, box)


def _token(name: str) -> str:
    return f"<{name}>"


class FaceBaseline:
    """``answer_fn(video, question, subject) -> str`` from dlib face matching; subjects added first.

    Args:
        num_frames: frames sampled uniformly from each query clip.
        pool: a directory of other people's images/videos (one person per file) to calibrate the
            threshold on; None: the default threshold 0.6.
        min_frames: sampled frames that must show a matching face for "present".
        reference_fps: frames per second analysed in a reference video.
    """

    name = "face-baseline"

    def __init__(self, num_frames: int = 8, pool: str | os.PathLike | None = None, min_frames: int = 1,
                 reference_fps: float = 4.0):
        if num_frames < 1 or min_frames < 1 or min_frames > num_frames:
            raise ConfigError(f"face baseline: need 1 <= min_frames <= num_frames, got {min_frames} and {num_frames}")
        self.num_frames, self.min_frames, self.reference_fps = int(num_frames), int(min_frames), float(reference_fps)
        self.engine = FaceEngine()
        self.pool = Path(pool) if pool is not None else None
        self._bank = None
        self.subjects: dict[str, SubjectFace] = {}
        self._frames: dict[str, list[_Frame]] = {}
        self.decisions: dict[str, dict] = {}  # "subject:clip file" -> closest distance, frames matched

    @classmethod
    def from_benchmark(cls, bench, subjects: list[str] | None = None, **kwargs) -> "FaceBaseline":
        """A baseline that knows the benchmark's subjects (or those named), calibrated on its pool."""
        bench = bench if isinstance(bench, Benchmark) else load_benchmark(bench)
        kwargs.setdefault("pool", bench.pool_dir)
        baseline = cls(**kwargs)
        names = subjects or [s["name"] for s in bench.subjects]
        for name in names:
            s = bench.subject(name)
            for m in s.get("members") or [{"name": s["name"], "reference": s["reference"]}]:
                if m["name"] not in baseline.subjects:
                    baseline.add_subject(m["name"], bench.root / m["reference"])
        return baseline

    def _pool_distances(self, embedding: np.ndarray) -> list[float]:
        if self.pool is None:
            return []
        if self._bank is None:
            self._bank = build_face_bank(self.pool, progress=False)
        return [d for d, _ in rank_by_similarity(self._bank, embedding)]

    def add_subject(self, name: str, reference: str | os.PathLike) -> SubjectFace:
        """Analyse ``reference`` and remember its subject's best face and threshold under ``name``."""
        analysis = analyze_video(reference, settings=AnalyzeSettings(fps=self.reference_fps), progress=False)
        person = analysis.people[analysis.subject]
        found = self.engine.detect(person.best_image)
        embedding, source = (found[0].embedding, "best face") if found else (person.embedding, "mean embedding")
        others = [img for img, rec in zip(person.good_images, person.good) if rec is not person.best] or person.good_images
        self_d = []
        for img in others[:4]:
            faces = self.engine.detect(img)
            if faces:
                self_d.append(float(np.linalg.norm(faces[0].embedding - embedding)))
        pool_d = self._pool_distances(embedding)
        threshold = identity_threshold(self_d, pool_d[:1], default=DEFAULT_THRESHOLD)
        subject = SubjectFace(name=name, reference=str(reference), embedding=np.asarray(embedding, np.float32),
                              threshold=threshold, source=source, self_distances=self_d,
                              nearest_pool=pool_d[0] if pool_d else None)
        self.subjects[name] = subject
        return subject

    def _faces(self, video: str | os.PathLike) -> list[_Frame]:
        key = str(Path(video).resolve())
        if key not in self._frames:
            frames = []
            for rgb in read_frames_uniform(video, self.num_frames):
                faces = self.engine.detect(rgb)
                frames.append(_Frame(width=rgb.shape[1], faces=[(f.embedding, f.box) for f in faces]))
            self._frames = {key: frames}  # one clip at a time: questions about a clip come together
        return self._frames[key]

    def matches(self, video: str | os.PathLike, subject: str) -> list[tuple[int, float, tuple[int, int, int, int]]]:
        """Per sampled frame with a face closer than the threshold: (frame, distance, box) of the closest."""
        s = self._subject(subject)
        out, closest = [], None
        frames = self._faces(video)
        for t, frame in enumerate(frames):
            if not frame.faces:
                continue
            d, box = min(((float(np.linalg.norm(e - s.embedding)), b) for e, b in frame.faces), key=lambda x: x[0])
            closest = d if closest is None else min(closest, d)
            if d < s.threshold:
                out.append((t, d, box))
        self.decisions[f"{subject}:{Path(video).name}"] = {
            "closest": None if closest is None else round(closest, 4), "frames_matched": len(out),
            "frames_with_faces": sum(bool(f.faces) for f in frames), "frames": len(frames)}
        return out

    def _subject(self, name: str) -> SubjectFace:
        if name not in self.subjects:
            raise InputError(f"face baseline: no reference for subject {name!r}; known: {', '.join(self.subjects) or 'none'}")
        return self.subjects[name]

    def present(self, video: str | os.PathLike, subject: str) -> bool:
        """The baseline's existence decision."""
        return len(self.matches(video, subject)) >= self.min_frames

    def __call__(self, video: str | os.PathLike, question: str, subject: str) -> str:
        kind = question_type(question)
        members = subject.split("+")  # a pair or triple of the benchmark: "Anna+Ben"
        if len(members) > 1:
            named = [m for m in members if _token(m) in question]
            if kind == "existence" or not named:
                found = [m for m in (named or members) if len(self.matches(video, m)) >= self.min_frames]
                toks = " and ".join(_token(m) for m in (named or members))
                if len(found) == len(named or members):
                    return f"Yes, {toks} {'are' if len(named or members) > 1 else 'is'} in this video."
                return f"No, {toks} {'are' if len(named or members) > 1 else 'is'} not in this video."
            subject = named[0]
        tok = _token(subject)
        hits = self.matches(video, subject)
        if len(hits) < self.min_frames:
            return f"No, {tok} is not in this video."
        if kind == "existence":
            return f"Yes, {tok} is in this video."
        if kind == "location":
            return f"{tok} is {self._where(video, hits)}."
        if kind == "action":
            return f"{tok} is in this video, but I cannot tell what {tok} is doing."
        return f"{tok} is in this video, but I cannot describe what {tok} is wearing."

    def _where(self, video, hits) -> str:
        frames = self._faces(video)
        words = [position_word((box[0] + box[2]) / 2 / frames[t].width) for t, _, box in hits]
        start, end = words[0], words[-1]
        if start != end:
            return f"moving from the {start} to the {end} of the frame"
        majority = Counter(words).most_common(1)[0][0]
        return "in the centre of the frame" if majority == "centre" else f"on the {majority} of the frame"

    def describe(self) -> dict:
        """Settings, per-subject calibration and each clip's closest face distance, for the report."""
        return {"name": self.name, "num_frames": self.num_frames, "min_frames": self.min_frames,
                "pool": str(self.pool) if self.pool else None, "default_threshold": DEFAULT_THRESHOLD,
                "subjects": {n: s.to_dict() for n, s in self.subjects.items()}, "decisions": dict(self.decisions)}
