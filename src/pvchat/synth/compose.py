"""``pvchat compose``: training clips with two or three subjects at once (pvchat issue 7).

VideoAlchemy's idea of several reference conditions per clip, on the CPU: every person is cut
out of *their own* reference frames (GrabCut, :func:`pvchat.synth.classic.person_mask`), moved by
their own landmark motion (:mod:`pvchat.synth.motion`) and augmented with their own Table-4
parameters (:class:`pvchat.synth.augment.AugmentParams`, drawn per subject), scaled to a common
height (the same face height, heads level) and placed at distinct horizontal slots (left /
centre / right, shuffled per clip) over one shared background (:mod:`pvchat.synth.backgrounds`)::

    analysis A ─┐                                      per person: source frames, motion,
    analysis B ─┼─► ClassicGenerator.prepare ─► cast ─► augmentation ─► layer ─┐
    pool (opt.) ┘   (landmarks; masks on demand)                               ▼
    presence pattern (all / some / none) ──────────────────► one clip over one background
         ─► dlib check: each present subject's face at its slot, nearest its own reference
         ─► ClipFacts (names, x, motion, clothing) ─► QA: existence for 2/3 people, Table 6,
            "Where is <A> relative to <B>?" ─► records/*.json ─► manifest.jsonl

Presence patterns cycle over every non-empty subset of the subjects (and the empty one when a
pool is given), shuffled per round, so each subject is present in about half of the clips. With
a pool, strangers stand in for the absent subjects, so how many people a clip shows does not give
its answer away. ``people_per_clip`` above the number of subjects fills every clip with strangers
up to it: one subject beside a stranger, or two strangers (the two-person clips a one-person
training set otherwise lacks). A clip whose faces fail the check is drawn again. Each clip is
written (mp4, then its record) before the next starts, so a re-run resumes; ``manifest.jsonl`` is assembled at the end.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from pvchat.data import ClipRecord, QARecord, write_manifest
from pvchat.errors import InputError
from pvchat.faces import FaceEngine
from pvchat.io import read_json, write_json
from pvchat.model.prompt import validate_name
from pvchat.qa.describe import relation_words
from pvchat.qa.facts import ClipFacts, PersonFacts, subject_token
from pvchat.qa.generate import get_recipe, make_qa
from pvchat.qa.measure import colour_name
from pvchat.synth.augment import AugmentParams, apply, geometry_matrix
from pvchat.synth.backgrounds import BACKGROUNDS, paint_background
from pvchat.synth.base import Identity
from pvchat.synth.classic import ClassicGenerator, nearest_face
from pvchat.synth.identity import identity_from_analysis
from pvchat.synth.motion import MOTIONS, animate
from pvchat.synth.negatives import SAME_PERSON, Pool, build_face_bank, pool_label, pool_name
from pvchat.synth.pipeline import MOTION_WORDS, dedupe_qa
from pvchat.video import read_frames_uniform, write_video

SLOTS = {"left": 1 / 6, "centre": 1 / 2, "right": 5 / 6}  # face centre, fraction of the width
MIN_FACE = 48  # px: the smallest face height composed (dlib finds faces from ~40 px)
PAIR_QUESTIONS = ("Where is {a} relative to {b}?", "Where is {a} standing relative to {b}?",
                  "How is {a} positioned relative to {b}?")
PAIR_ANSWERS = ("{a} is {where}.", "{a} stands {where}.", "Seen from the camera, {a} is {where}.")


@dataclass
class _Person:
    """A subject (``name``) or a pool stranger standing in (``name`` None)."""

    name: str | None
    identity: Identity
    source: str
    _gen: ClassicGenerator | None = None

    @property
    def embedding(self) -> np.ndarray:
        return self.identity.embedding

    @property
    def gen(self) -> ClassicGenerator:
        """The classic backend prepared on this person (landmarks; GrabCut masks on demand), made
        on first use, so a re-run with nothing left to compose does not pay for it."""
        if self._gen is None:
            self._gen = ClassicGenerator()
            self._gen.prepare(self.identity)
        return self._gen


@dataclass
class _Cast:
    """One person's part in one clip, drawn per person: the per-subject augmentation policy."""

    person: _Person
    slot: str
    frames: list[int]  # reference frame per output frame
    motion: str
    aug: AugmentParams


def presence_patterns(n: int, with_none: bool) -> list[tuple[bool, ...]]:
    """Who of ``n`` subjects is present: every non-empty subset, and the empty one if ``with_none``."""
    return [p for p in itertools.product((True, False), repeat=n) if any(p) or with_none]


def pattern_for(index: int, n: int, with_none: bool, seed: int) -> tuple[bool, ...]:
    """The presence pattern of clip ``index``: each round of patterns in its own shuffled order,
    so it depends only on the seed and the index (and a longer run keeps the shorter one's clips)."""
    patterns = presence_patterns(n, with_none)
    order = np.random.default_rng([seed, index // len(patterns)]).permutation(len(patterns))
    return patterns[order[index % len(patterns)]]


def _subject(name: str, analysis: str | Path) -> _Person:
    identity = identity_from_analysis(analysis, name)
    if not identity.frames:
        raise InputError(f"{analysis}: the reference video is gone; composing needs its frames")
    return _Person(name, identity, str(analysis))


def _framed(identity: Identity) -> Identity:
    """A pool portrait with a margin of its edge colours on the left, right and top, so GrabCut
    sees background outside the person's rectangle (a tight portrait is otherwise cut out whole)."""
    m = [max(f.shape[:2]) // 2 for f in identity.frames]
    return replace(identity, frames=[np.pad(f, ((k, 0), (k, k), (0, 0)), mode="edge") for f, k in zip(identity.frames, m)],
                   boxes=[(x0 + k, y0 + k, x1 + k, y1 + k) for (x0, y0, x1, y1), k in zip(identity.boxes, m)])


def _check_subjects(subjects, per_clip: int, pool) -> None:
    if not 1 <= len(subjects) <= 3 or (len(subjects) == 1 and per_clip < 2):
        raise InputError(f"compose needs 2 or 3 subjects, got {len(subjects)} (one person: use 'pvchat synthesize', "
                         "or give a pool and 2 or 3 people per clip)")
    if not len(subjects) <= per_clip <= 3:
        raise InputError(f"people per clip must be from {len(subjects)} (the subjects) to 3, got {per_clip}")
    if per_clip > len(subjects) and pool is None:
        raise InputError(f"{per_clip} people per clip with {len(subjects)} subject(s) needs a pool of strangers")
    names = [validate_name(name) for name, _ in subjects]
    if len(set(names)) != len(names):
        raise InputError(f"subject names repeat: {', '.join(names)}; give each person their own name")


def _cast(people: list[_Person], rng: np.random.Generator, T: int, H: int, sw: int) -> list[_Cast]:
    """Slots shuffled; each person's own source frames (the classic backend's: a run resampled in
    time, sometimes reversed, or one held), motion and augmentation parameters."""
    slots = [str(s) for s in rng.permutation(list(SLOTS))[: len(people)]]
    casts = []
    for person, slot in zip(people, slots):
        frames, _ = person.gen.source_frames(rng, T)
        motion = str(rng.choice([m for m in MOTIONS if m != "still"]))
        casts.append(_Cast(person, slot, frames, motion, AugmentParams.sample(rng, H, sw, person.gen.strength)))
    return casts


def sprite_width(W: int) -> int:
    """Each person is drawn and augmented on a sprite two slots wide (shoulders may overlap a
    neighbour's), centred on their slot."""
    return int(round(2 * W / 3))


def _layer(cast: _Cast, t: int, T: int, H: int, sw: int, fh: float, face_top: float):
    """(premultiplied RGB float32 (H, sw, 3), alpha (H, sw)) of one person in frame ``t``: the
    person's cut-out scaled to face height ``fh``, face centred at ``sw / 2``, then augmented with
    the person's own parameters (colour on RGB only; geometry, resolution and blur on both).
    Masks and landmarks are the classic backend's (cached per reference frame)."""
    gen = cast.person.gen
    i = cast.frames[t]
    alpha, (rx0, ry0, rx1, ry1) = gen.mask(i)
    x0, y0, x1, y1 = gen.identity.boxes[i]
    crop = gen.identity.frames[i][ry0:ry1, rx0:rx1]
    src = animate(crop, gen.landmarks[i] - np.float32([rx0, ry0]), cast.motion, t / max(1, T - 1))
    s = fh / max(1, y1 - y0)
    cw, ch = max(1, round(src.shape[1] * s)), max(1, round(src.shape[0] * s))
    src = cv2.resize(src, (cw, ch), interpolation=cv2.INTER_AREA).astype(np.float32)
    a = cv2.resize(alpha[ry0:ry1, rx0:rx1], (cw, ch), interpolation=cv2.INTER_AREA)
    x = round(sw / 2 - ((x0 + x1) / 2 - rx0) * s)
    y = round(face_top - (y0 - ry0) * s)
    rgb, mask = np.zeros((H, sw, 3), np.float32), np.zeros((H, sw), np.float32)
    xs, xe, ys, ye = max(0, x), min(sw, x + cw), max(0, y), min(H, y + ch)
    if xe > xs and ye > ys:
        mask[ys:ye, xs:xe] = a[ys - y : ye - y, xs - x : xe - x]
        rgb[ys:ye, xs:xe] = src[ys - y : ye - y, xs - x : xe - x] * mask[ys:ye, xs:xe, None]
    shape_only = replace(cast.aug, colour=(0.0, 0.0, 0.0), brightness=1.0)
    premult = apply(rgb.round().astype(np.uint8), cast.aug).astype(np.float32)
    a = apply(np.repeat((mask * 255).round().astype(np.uint8)[..., None], 3, axis=2), shape_only)[..., 0]
    return premult, a.astype(np.float32) / 255


def _torso_colour(frame: np.ndarray, centre: tuple[float, float], fh: float) -> str | None:
    """The clothes under a face: the most common colour word in the region below the chin."""
    h, w = frame.shape[:2]
    cx, cy = centre
    y0, y1 = int(min(h - 1, cy + 1.0 * fh)), int(min(h, cy + 2.0 * fh))
    x0, x1 = int(max(0, cx - 0.7 * fh)), int(min(w, cx + 0.7 * fh))
    pixels = frame[y0:y1, x0:x1].reshape(-1, 3)
    if not len(pixels):
        return None
    words = Counter(colour_name(p) for p in pixels[:: max(1, len(pixels) // 256)])
    return f"a {words.most_common(1)[0][0]} top"


def render(casts: list[_Cast], background: np.ndarray, T: int, fh: float, face_top: float):
    """Frames (T, H, W, 3) uint8 and each person's face centre in the first frame (pixels)."""
    H, W = background.shape[:2]
    sw = sprite_width(W)
    lefts = [round(SLOTS[c.slot] * W - sw / 2) for c in casts]
    centres = []
    for c, left in zip(casts, lefts):
        M = geometry_matrix(c.aug, H, sw)
        cx, cy = M @ np.array([sw / 2, face_top + fh / 2, 1.0])
        centres.append((float(left + cx), float(cy)))
    frames = np.empty((T, H, W, 3), np.uint8)
    for t in range(T):
        canvas = background.astype(np.float32)
        for c, left in zip(casts, lefts):
            premult, a = _layer(c, t, T, H, sw, fh, face_top)
            xs, xe = max(0, left), min(W, left + sw)
            region = canvas[:, xs:xe]
            canvas[:, xs:xe] = premult[:, xs - left : xe - left] + region * (1 - a[:, xs - left : xe - left, None])
        frames[t] = np.clip(canvas, 0, 255).round().astype(np.uint8)
    return frames, centres


def check_faces(engine, frames: np.ndarray, casts: list[_Cast], centres, others: list[np.ndarray]) -> dict | None:
    """Identity per subject, over about four frames spread through the clip: the face nearest each
    present subject's slot centre (within a sixth of the width) must be found in at least half of
    them, and its median distance to the subject's own reference embedding must be under 0.6 and
    under its median distance to everyone else's (the other people in the clip and ``others``,
    the absent subjects). Returns the median distances, or None when a check fails."""
    W = frames.shape[2]
    everyone = [c.person.embedding for c in casts] + list(others)
    checked = frames[:: max(1, len(frames) // 4)]
    found: dict[int, list[list[float]]] = {k: [] for k, c in enumerate(casts) if c.person.name is not None}
    for frame in checked:
        faces = engine.detect(frame, embed=False)  # embeddings only for the faces matched below
        for k in found:
            cx, cy = centres[k]
            near = [f for f in faces if abs((f.box[0] + f.box[2]) / 2 - cx) < W / 6]
            if near:
                f = nearest_face(near, (cx, cy))
                embedding = f.embedding if f.embedding is not None else engine.embed(frame, f)
                found[k].append([float(np.linalg.norm(embedding - e)) for e in everyone])
    out = {}
    for k, rows in found.items():
        if 2 * len(rows) < len(checked):
            return None
        d = np.median(np.asarray(rows), axis=0)
        if d[k] >= 0.6 or d[k] > d.min():
            return None
        out[casts[k].person.name] = round(float(d[k]), 4)
    return out


def _pair_qa(facts, names: list[str], rng: random.Random) -> list[QARecord]:
    """"Where is <A> relative to <B>?" for every ordered pair of present subjects, answered from
    the facts' relations (:meth:`pvchat.qa.facts.ClipFacts.relations_of`)."""
    tokens = {n: subject_token(n) for n in names}
    out = []
    for a, b in itertools.permutations([n for n in names if facts.is_present(n)], 2):
        i, j = facts.index_of(a), facts.index_of(b)
        rel = [r for r in facts.relations_of(i) if r.other == j]
        where = relation_words(facts, rel, tokens)
        out.append(QARecord("location", rng.choice(PAIR_QUESTIONS).format(a=tokens[a], b=tokens[b]),
                            rng.choice(PAIR_ANSWERS).format(a=tokens[a], where=where)))
    return out


def compose_dataset(
    subjects: list[tuple[str, Path]],
    out: Path,
    clips: int = 16,
    seed: int = 0,
    progress: bool = True,
    pool: Pool | None = None,
    num_frames: int = 16,
    width: int = 384,
    height: int = 256,
    fps: float = 8.0,
    qa: str = "paper",
    max_attempts: int = 4,
    people_per_clip: int | None = None,
    hard_strangers: int = 0,
) -> Path:
    """Compose ``clips`` clips of 1–3 subjects (``(name, analysis dir)`` each; one needs
    ``people_per_clip`` of 2 or 3) under ``out``; returns the manifest path. Resumes a partial
    ``out`` (and extends it when ``clips`` grows).

    ``pool``: a directory of other people's images/videos (or them in memory, as ``(source, frames)``,
    e.g. :func:`pvchat.offline.pool.world_pool`); strangers from it stand in for absent
    subjects, and some clips show none of the subjects. ``qa``: a QA recipe of :mod:`pvchat.qa`.
    ``people_per_clip``: how many people every clip shows (default: one per subject); with more,
    strangers from ``pool`` fill the rest, so one subject can be composed beside a stranger, and
    two strangers together stand in for the clips without them. ``hard_strangers``: in a clip
    without any subject, one stranger is one of the ``hard_strangers`` pool people whose faces are
    nearest the subjects' (the paper's hard negatives, here beside another person: a one-person
    pack trained on random pairs said yes to clips of a look-alike beside a stranger).
    """
    per_clip = len(subjects) if people_per_clip is None else people_per_clip
    _check_subjects(subjects, per_clip, pool)
    if clips < 1 or num_frames < 1 or fps <= 0:
        raise InputError(f"bad clip settings: {clips} clips of {num_frames} frames at {fps} fps")
    if width % 2 or height % 2:
        raise InputError(f"{width}x{height}: the frame width and height must be even (h264)")
    if width * 0.45 / 3 < MIN_FACE or height < 3.5 * MIN_FACE:
        raise InputError(f"{width}x{height} frames are too small for three people whose faces can be checked; "
                         f"use at least {int(np.ceil(MIN_FACE * 3 / 0.45))}x{int(3.5 * MIN_FACE)}")
    get_recipe(qa)
    out = Path(out)
    people = [_subject(name, analysis) for name, analysis in subjects]
    for p, q in itertools.combinations(people, 2):
        d = float(np.linalg.norm(p.embedding - q.embedding))
        if d < SAME_PERSON:
            raise InputError(f"{p.name} ({p.source}) and {q.name} ({q.source}) look like the same person "
                             f"(face distance {d:.2f} < {SAME_PERSON}); compose different people")
    strangers: list = []
    away: list[float] = []  # each stranger's face distance to the nearest subject
    if pool is not None:
        bank = build_face_bank(pool, progress=progress)
        for s in bank:
            d = min(float(np.linalg.norm(s.embedding - p.embedding)) for p in people)
            if d >= SAME_PERSON:
                strangers.append(s)
                away.append(d)
        if not strangers:
            raise InputError(f"{pool_name(pool)}: every pool person looks like one of the subjects; add other people")
        if per_clip > len(subjects) and len(strangers) < per_clip:  # a clip without the subjects: strangers only
            raise InputError(f"{pool_name(pool)}: {len(strangers)} pool people look unlike the subjects; "
                             f"clips of {per_clip} people need at least {per_clip}")
    nearest = sorted(range(len(strangers)), key=away.__getitem__)[:hard_strangers]
    settings = {"subjects": [[name, str(analysis)] for name, analysis in subjects],
                "pool": pool_label(pool) if pool is not None else None, "seed": seed, "num_frames": num_frames,
                "width": width, "height": height, "fps": fps, "qa": qa}
    if per_clip != len(subjects):  # (absent before, so older compositions resume)
        settings["people_per_clip"] = per_clip
    if nearest:  # (likewise)
        settings["hard_strangers"] = len(nearest)
    if (out / "settings.json").exists() and read_json(out / "settings.json") != settings:
        raise InputError(f"{out} holds a composition with other settings; choose another directory")
    (out / "clips").mkdir(parents=True, exist_ok=True)
    (out / "records").mkdir(exist_ok=True)
    write_json(out / "settings.json", settings)

    engine = FaceEngine()
    names = [p.name for p in people]
    stand_ins: dict[int, _Person] = {}  # pool index -> prepared stranger
    ids = [f"multi_{i:04d}" for i in range(clips)]
    done = {p.stem for p in (out / "records").glob("*.json")}
    bar = tqdm(total=clips, desc="compose", disable=not progress)
    for i, clip_id in enumerate(ids):
        bar.update(1)
        if clip_id in done:
            continue
        present = pattern_for(i, len(people), bool(strangers), seed)
        path = out / "clips" / f"{clip_id}.mp4"
        for attempt in range(max_attempts):
            rng = np.random.default_rng([seed, i, attempt])
            cast_people = [p for p, here in zip(people, present) if here]
            picks = [int(k) for k in rng.permutation(len(strangers))] if strangers else []
            if nearest and not cast_people:  # strangers only: one of them looks like a subject
                hard = int(rng.choice(nearest))
                picks = [hard] + [k for k in picks if k != hard]
            for k in picks[: per_clip - len(cast_people)]:
                if k not in stand_ins:
                    stand_ins[k] = _Person(None, _framed(strangers[k].identity("stranger")), strangers[k].source)
                cast_people.append(stand_ins[k])
            casts = _cast(cast_people, rng, num_frames, height, sprite_width(width))
            background = str(rng.choice(sorted(BACKGROUNDS)))
            fh = float(np.clip(rng.uniform(0.22, 0.3) * height, MIN_FACE, 0.45 * width / 3))
            face_top = 0.8 * fh + float(rng.uniform(0.02, 0.08)) * height
            frames, centres = render(casts, paint_background(background, height, width, rng), num_frames, fh, face_top)
            write_video(path, frames, fps=fps)  # checked as written: h264 costs small faces detail
            absent = [p.embedding for p, here in zip(people, present) if not here]
            distances = check_faces(engine, read_frames_uniform(path, num_frames), casts, centres, absent)
            if distances is not None:
                break
        else:
            path.unlink(missing_ok=True)
            raise InputError(f"clip {clip_id}: no attempt kept every subject's identity at its slot "
                             f"({max_attempts} tries); the reference faces may be too small or blurred")
        facts = ClipFacts(people=tuple(
            PersonFacts(name=c.person.name, x=min(1.0, max(0.0, cx / width)), action=MOTION_WORDS[c.motion],
                        clothing=_torso_colour(frames[0], (cx, cy), fh),
                        gender=c.person.identity.gender, age=c.person.identity.age)
            for c, (cx, cy) in zip(casts, centres)), clip_id=clip_id)
        records = []
        for stage in (1, 2):
            qrng = random.Random(f"{seed}:{clip_id}:{stage}")
            records += [QARecord(**q.to_manifest())
                        for q in make_qa(facts, names, stage=stage, rng=qrng, recipe=qa, on_missing="skip")]
        records += _pair_qa(facts, names, random.Random(f"{seed}:{clip_id}:pairs"))
        layout = [{"name": c.person.name, "source": c.person.source, "slot": c.slot,
                   "face_centre": [round(cx, 1), round(cy, 1)], "x": round(cx / width, 4), "motion": c.motion,
                   "source_frames": c.frames, "augment": c.aug.to_dict()}
                  for c, (cx, cy) in zip(casts, centres)]
        rec = ClipRecord(clip=f"clips/{clip_id}.mp4", people=[c.person.name for c in casts if c.person.name],
                         qa=dedupe_qa(records), stage=[1, 2], kind="composed",
                         provenance={"backend": "compose", "seed": seed, "attempt": attempt, "background": background,
                                     "face_height": round(fh, 1), "layout": layout},
                         quality={f"face_distance:{n}": d for n, d in distances.items()})
        write_json(out / "records" / f"{clip_id}.json", rec.to_dict())
    bar.close()
    recs = [ClipRecord.from_dict(read_json(out / "records" / f"{c}.json")) for c in ids]
    write_manifest(out / "manifest.jsonl", recs)
    write_json(out / "summary.json", {
        **settings, "clips": len(recs), "qa_pairs": sum(len(r.qa) for r in recs),
        "present": {n: sum(n in r.people for r in recs) for n in names},
        "with_all": sum(len(r.people) == len(names) for r in recs),
    })
    return out / "manifest.jsonl"
