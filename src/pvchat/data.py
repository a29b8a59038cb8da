"""The manifest (JSONL) of a personalised training set, and the dataset the trainer reads.

One line per clip::

    {"clip": "clips/pos_0003.mp4",          # relative to the manifest's directory
     "people": ["Anna"],                     # subjects present (names; strangers are not listed)
     "stage": [1, 2],                        # stages whose data includes this clip
     "kind": "positive",                     # positive | negative | random (paper §3.2)
     "qa": [{"type": "existence", "question": "Is <Anna> in this video?",
             "answer": "Yes, <Anna> is in this video.", "label": true}, ...],
     "provenance": {"backend": "classic", "seed": 3, "source": "reference.mp4"},
     "quality": {"face_sim": 0.91, "dync_d": 0.12}}

One training sample is one (clip, QA pair), as in the official trainer. Stage 1 reads the clip's
first frame as a one-frame video with existence and appearance questions; stage 2 reads T frames
uniformly and every question type (paper §3.4).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch.utils.data import Dataset

from pvchat.errors import InputError
from pvchat.io import read_jsonl, write_text
from pvchat.video import read_first_frame, read_frames_uniform, to_model_input

QA_TYPES = ("existence", "appearance", "action", "location")
STAGE_TYPES = {1: ("existence", "appearance"), 2: QA_TYPES}


@dataclass
class QARecord:
    type: str
    question: str
    answer: str
    label: bool | None = None

    def __post_init__(self):
        if self.type not in QA_TYPES:
            raise InputError(f"QA type {self.type!r} is not one of {', '.join(QA_TYPES)}")


@dataclass
class ClipRecord:
    clip: str
    people: list[str]
    qa: list[QARecord]
    stage: list[int] = field(default_factory=lambda: [1, 2])
    kind: str = "positive"
    provenance: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ClipRecord":
        try:
            qa = [QARecord(**q) for q in d["qa"]]
            return cls(**{**d, "qa": qa})
        except (KeyError, TypeError) as e:
            raise InputError(f"bad manifest record ({e}): {json.dumps(d)[:120]}") from None


def write_manifest(path: str | Path, records: Iterable[ClipRecord]) -> None:
    """Write records as JSONL, atomically."""
    write_text(path, "".join(json.dumps(r.to_dict()) + "\n" for r in records))


def read_manifest(path: str | Path) -> list[ClipRecord]:
    records = [ClipRecord.from_dict(d) for d in read_jsonl(path)]
    if not records:
        raise InputError(f"{path}: the manifest is empty")
    return records


@dataclass
class Sample:
    clip: Path
    question: str
    answer: str
    type: str
    label: bool | None


class QADataset(Dataset):
    """(clip, QA) samples of one stage, with frames decoded and normalised for the vision tower.

    Args:
        records: manifest records (or a manifest path).
        stage: 1 (first frame; existence + appearance) or 2 (T frames; all types).
        num_frames: T for stage 2.
        image_size: the vision tower's input size.
        root: directory that relative clip paths are resolved against.
        types: restrict to these QA types (default: the stage's types).
        snippet: k, consecutive frames per step the vision tower reads (``PVChat.frames_per_step``).
    """

    def __init__(self, records: list[ClipRecord] | str | Path, stage: int, num_frames: int = 8,
                 image_size: int = 224, root: str | Path | None = None, types: tuple[str, ...] | None = None,
                 snippet: int = 1):
        if isinstance(records, (str, Path)):
            root = Path(records).parent if root is None else root
            records = read_manifest(records)
        if stage not in STAGE_TYPES:
            raise InputError(f"stage must be 1 or 2, got {stage}")
        self.root = Path(root or ".")
        self.stage, self.num_frames, self.image_size, self.snippet = stage, num_frames, image_size, snippet
        bad = set(types or ()) - set(QA_TYPES)
        if bad:
            raise InputError(f"unknown QA types {sorted(bad)}; valid: {', '.join(QA_TYPES)}")
        types = tuple(t for t in STAGE_TYPES[stage] if types is None or t in types)
        self.samples = [
            Sample(self.root / r.clip, q.question, q.answer, q.type, q.label)
            for r in records if stage in r.stage for q in r.qa if q.type in types
        ]
        if not self.samples:
            raise InputError(f"no stage-{stage} samples in the manifest")
        self.clips = sorted({s.clip for s in self.samples})

    def __len__(self) -> int:
        return len(self.samples)

    def frames(self, clip: Path) -> torch.Tensor:
        """(T·k, 3, S, S) float: the first frame for stage 1 (a still: k copies), T uniform snippets of
        k frames for stage 2."""
        if self.stage == 1:
            arr = np.repeat(read_first_frame(clip)[None], self.snippet, axis=0)
        else:
            arr = read_frames_uniform(clip, self.num_frames, self.snippet)
        return to_model_input(arr, size=self.image_size)

    def __getitem__(self, i: int) -> Sample:
        return self.samples[i]
