"""Hard negatives (paper §3.2): the people of a pool who look most like the subject.

A face bank embeds one face per pool person (dlib 128-d) and ranks them by distance to the
subject. Anything closer than ``same_person`` is probably the subject and is excluded. The
paper adds R = 30 random pool clips to the k nearest.

Pool: a directory of images and/or videos, one person per file (the largest face is taken), e.g.
CelebV-HQ clips, or the same in memory: a list of ``(source, frames)``. The caller chooses it; the
commands pass the offline world's people where the user names none (:func:`pvchat.offline.pool.world_pool`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from pvchat.errors import InputError
from pvchat.faces import FaceEngine
from pvchat.synth.base import Identity
from pvchat.video import read_frames_uniform

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
VIDEO_EXT = {".mp4", ".mov", ".avi", ".mkv", ".webm"}
SAME_PERSON = 0.35  # dlib distance under which a pool face is taken to be the subject itself

PoolItems = list[tuple[str, list[np.ndarray]]]  # (source, frames): one person each
Pool = Union[str, Path, PoolItems]  # a directory (read_pool) or people already in memory


@dataclass
class PoolPerson:
    source: str
    embedding: np.ndarray  # (128,)
    frames: list[np.ndarray]
    boxes: list[tuple[int, int, int, int]]

    def identity(self, name: str) -> Identity:
        x0, y0, x1, y1 = self.boxes[0]
        return Identity(name=name, faces=[self.frames[0][y0:y1, x0:x1]], embedding=self.embedding,
                        frames=self.frames, boxes=self.boxes)


def _largest_face(engine, rgb: np.ndarray):
    faces = engine.detect(rgb)
    return max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1])) if faces else None


def _person(engine, source: str, frames: list[np.ndarray]) -> PoolPerson | None:
    kept, boxes, embs = [], [], []
    for rgb in frames:
        f = _largest_face(engine, rgb)
        if f is not None:
            kept.append(rgb)
            boxes.append(tuple(int(v) for v in f.box))
            embs.append(f.embedding)
    if not kept:
        return None
    return PoolPerson(source, np.mean(embs, 0).astype(np.float32), kept, boxes)


def read_pool(pool: str | Path) -> list[tuple[str, list[np.ndarray]]]:
    """Files of a pool directory as (source, frames): an image is one frame, a video 4 uniform frames."""
    pool = Path(pool)
    if not pool.is_dir():
        raise InputError(f"{pool}: the pool is not a directory")
    files = sorted(p for p in pool.rglob("*") if p.suffix.lower() in IMAGE_EXT | VIDEO_EXT)
    if not files:
        raise InputError(f"{pool}: the pool has no images or videos ({', '.join(sorted(IMAGE_EXT | VIDEO_EXT))})")
    out = []
    for p in files:
        try:
            if p.suffix.lower() in IMAGE_EXT:
                with Image.open(p) as im:
                    out.append((str(p), [np.asarray(im.convert("RGB"))]))
            else:
                out.append((str(p), list(read_frames_uniform(p, 4))))
        except (InputError, OSError):
            continue  # an unreadable pool file is skipped, not fatal
    return out


def pool_label(pool: Pool) -> str | list[str]:
    """What a synthesis records about its pool: the directory, or the sources of people in memory."""
    return str(pool) if isinstance(pool, (str, Path)) else [source for source, _ in pool]


def pool_name(pool: Pool) -> str:
    """How an error names the pool: its directory, or "the pool" for people in memory."""
    return str(pool) if isinstance(pool, (str, Path)) else "the pool"


def build_face_bank(pool: Pool | None, progress: bool = True) -> list[PoolPerson]:
    """Embed every pool person; files without a detectable face are left out."""
    if pool is None:
        raise InputError("no pool of other people for the negatives: pass a directory of their images/videos")
    engine = FaceEngine()
    items = read_pool(pool) if isinstance(pool, (str, Path)) else list(pool)
    bank = []
    for source, frames in tqdm(items, desc="face bank", disable=not progress):
        person = _person(engine, source, frames)
        if person is not None:
            bank.append(person)
    if not bank:
        raise InputError(f"{pool_name(pool)}: no face found in any pool file")
    return bank


def rank_by_similarity(bank: list[PoolPerson], subject: np.ndarray, same_person: float = SAME_PERSON
                       ) -> list[tuple[float, PoolPerson]]:
    """Pool people by distance to ``subject`` (nearest first), without probable copies of the subject."""
    scored = sorted(((float(np.linalg.norm(p.embedding - subject)), p) for p in bank), key=lambda x: x[0])
    return [(d, p) for d, p in scored if d >= same_person]


def pick_negatives(bank: list[PoolPerson], subject: np.ndarray, k: int, r: int, seed: int = 0,
                   same_person: float = SAME_PERSON) -> tuple[list[tuple[float, PoolPerson]], list[tuple[float, PoolPerson]]]:
    """(the k hardest negatives, r random others) — the paper's hard and random negatives."""
    ranked = rank_by_similarity(bank, subject, same_person)
    hard = ranked[:k]
    rest = ranked[k:]
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(rest), size=min(r, len(rest)), replace=False) if rest else []
    return hard, [rest[i] for i in sorted(picks)]


def identity_threshold(subject_self: list[float], hard: list[float], default: float = 0.6) -> float:
    """Face-distance threshold for keeping a generated clip: halfway between the subject's own
    faces (their distance to its mean embedding) and its nearest negatives, within [0.4, 0.6]."""
    if not subject_self or not hard:
        return default
    return float(np.clip((np.median(subject_self) + min(hard)) / 2, 0.4, 0.6))
