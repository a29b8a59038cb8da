"""From one analysed reference video to a personalised training set (``pvchat synthesize``).

Paper §3.2, Fig. 2–3::

    analysis ─► Identity ─► backend.prepare ─► positives ──► quality filter (Face-S, Dync-D) ─┐
    pool ─► face bank ─► k hardest + R random people ─► backend clips (negatives) ────────────┤
                                                                                             ▼
                           facts per clip (who, where, doing what, wearing what) ─► QA (4 types)
                                                                                             ▼
                                                                   manifest.jsonl + clips/*.mp4

Each clip is written (mp4, then its record JSON) before the next starts, so a re-run resumes
where the last one stopped; ``manifest.jsonl`` is assembled at the end.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from pvchat import recipes
from pvchat.data import ClipRecord, QARecord, write_manifest
from pvchat.errors import ConfigError, InputError
from pvchat.faces import FaceEngine
from pvchat.io import read_json, write_json
from pvchat.model.prompt import validate_name
from pvchat.qa.facts import ClipFacts, PersonFacts
from pvchat.qa.generate import make_qa
from pvchat.qa.measure import colour_name
from pvchat.synth.base import ClipRequest, GeneratedClip, get_generator
from pvchat.synth.dynamics import dynamic_degree
from pvchat.synth.identity import identity_from_analysis
from pvchat.synth.negatives import Pool, build_face_bank, identity_threshold, pick_negatives, pool_label
from pvchat.synth.prompts import PromptLibrary
from pvchat.video import write_video

MOTION_WORDS = {
    "still": "looking at the camera", "nod": "nodding", "shake": "shaking the head", "tilt": "tilting the head",
    "question": "looking puzzled", "smile": "smiling", "frown": "frowning",
}


@dataclass
class SynthRecipe:
    """How much data per subject (``pvchat/recipes/synth/NAME.yaml``). ``paper``: 16 positives + 65
    negatives ≈ 81 clips, ≈ 1,455 QA pairs."""

    positives: int = 16
    hard_negatives: int = 35  # people, one clip each
    random_negatives: int = 30  # paper's R
    num_frames: int = 16
    fps: float = 8.0
    width: int = 320
    height: int = 256
    qa: str = "paper"  # QA recipe of pvchat.qa (a name or a YAML path)
    max_attempts: float = 4.0  # generation attempts per kept positive before giving up
    min_motion: float = 0.5  # Dync-D score (flow px) under which a clip counts as frozen and is dropped
    seed: int = 0

    def __post_init__(self) -> None:
        least = {"positives": 0, "hard_negatives": 0, "random_negatives": 0, "num_frames": 1, "width": 1, "height": 1,
                 "seed": 0}
        for k, low in least.items():
            v = getattr(self, k)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ConfigError(f"synthesis recipe: {k} must be an integer >= {low}, got {v!r}")
        for k in ("fps", "max_attempts", "min_motion"):
            v = getattr(self, k)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0 or (v == 0 and k != "min_motion"):
                raise ConfigError(f"synthesis recipe: {k} must be a number {'>= 0' if k == 'min_motion' else '> 0'}, "
                                  f"got {v!r}")
        if not isinstance(self.qa, str) or not self.qa:
            raise ConfigError(f"synthesis recipe: qa must be a QA recipe's name or YAML path, got {self.qa!r}")


# the shipped recipes (pvchat/recipes/synth/*.yaml), by name
SYNTH_RECIPES: dict[str, SynthRecipe] = recipes.load_all("synth", SynthRecipe)


def get_synth_recipe(recipe: str | Path | SynthRecipe) -> SynthRecipe:
    """A synthesis recipe by name (``paper``, ``demo``, ``tiny``), by YAML path, or as given."""
    if isinstance(recipe, str) and recipe in SYNTH_RECIPES:
        return SYNTH_RECIPES[recipe]
    return recipes.load("synth", recipe, SynthRecipe)


def _action(clip: GeneratedClip) -> str | None:
    """What the person does: the motion of motion-driven backends; text-driven backends (a prompt,
    no motion) leave it to the captioner, so no action question is made up."""
    return MOTION_WORDS.get(clip.info.get("motion") or "", None)


def _face_scores(engine, clip: GeneratedClip, reference: np.ndarray, every: int = 2):
    """Per sampled frame: the distance of the face nearest the reference, and its box."""
    dists, boxes = [], []
    for frame in clip.frames[::every]:
        faces = engine.detect(frame)
        if faces:
            f = min(faces, key=lambda f: float(np.linalg.norm(f.embedding - reference)))
            dists.append(float(np.linalg.norm(f.embedding - reference)))
            boxes.append(f.box)
    return dists, boxes


def _person_facts(name, clip: GeneratedClip, box, motion_word):
    """What a positive/negative clip shows of its person, for the captioner."""
    frame = clip.frames[0]
    h, w = frame.shape[:2]
    position, clothing = clip.info.get("position"), None
    if box is not None:
        x0, y0, x1, y1 = box
        fw, fh = x1 - x0, y1 - y0
        torso = frame[min(h - 1, int(y1 + 0.4 * fh)) : min(h, int(y1 + 1.6 * fh)), max(0, int(x0 - 0.2 * fw)) : min(w, int(x1 + 0.2 * fw))]
        if torso.size:
            clothing = f"a {colour_name(torso.reshape(-1, 3).mean(0))} top"
        if position is None:
            position = ("left", "centre", "right")[min(2, int(3 * ((x0 + x1) / 2) / w))]
    return PersonFacts(name=name, present=True, position=position, action=motion_word, clothing=clothing)


def synthesize_dataset(
    analysis: str | Path,
    name: str,
    out: str | Path,
    pool: Pool | None = None,
    recipe: str | Path | SynthRecipe = "paper",
    backend: str = "classic",
    progress: bool = True,
) -> Path:
    """Build the training set of one subject; returns the manifest path. Resumes a partial ``out``.

    ``pool``: the other people hard and random negatives are drawn from (a directory, or ``(source,
    frames)`` in memory, e.g. :func:`pvchat.offline.pool.world_pool`); required, checked before anything is written.
    """
    validate_name(name)
    recipe = get_synth_recipe(recipe)
    out = Path(out)
    identity = identity_from_analysis(analysis, name)
    if not identity.frames:
        raise InputError(f"{analysis}: the reference video is gone; the classic backend needs its frames")
    bank = build_face_bank(pool, progress=progress)  # bad pools fail before anything is written
    (out / "clips").mkdir(parents=True, exist_ok=True)
    (out / "records").mkdir(exist_ok=True)
    settings = {"name": name, "analysis": str(analysis), "pool": pool_label(pool),
                "backend": backend, "recipe": asdict(recipe)}
    if (out / "settings.json").exists() and read_json(out / "settings.json") != settings:
        raise InputError(f"{out} holds a synthesis with other settings; choose another directory")
    write_json(out / "settings.json", settings)

    engine = FaceEngine()
    hard, random_ = pick_negatives(bank, identity.embedding, recipe.hard_negatives, recipe.random_negatives, recipe.seed)
    self_d = []  # the subject's own faces against its mean embedding
    for face in identity.faces[:4]:
        found = engine.detect(face)
        if found:
            self_d.append(float(np.linalg.norm(found[0].embedding - identity.embedding)))
    threshold = identity_threshold(self_d, [d for d, _ in hard])

    library = PromptLibrary.load()

    def request(seed: int, gender: str | None = None, age: str | None = None) -> ClipRequest:
        # text-driven backends draw a scenario from the paper's prompt library (supp. Fig. 6-7)
        entry = library.sample(gender=gender, age=age, rng=seed)
        return ClipRequest(prompt=entry.text, scene=entry.scenario, num_frames=recipe.num_frames, fps=recipe.fps,
                           width=recipe.width, height=recipe.height, seed=seed)

    def emit(clip_id: str, clip: GeneratedClip, facts_person, kind: str, quality: dict, source: str) -> None:
        path = out / "clips" / f"{clip_id}.mp4"
        write_video(path, clip.frames, fps=clip.fps)
        facts = ClipFacts(people=(facts_person,), clip_id=clip_id)
        records = []
        for stage in (1, 2):
            rng = random.Random(f"{recipe.seed}:{clip_id}:{stage}")
            for q in make_qa(facts, [name], stage=stage, rng=rng, recipe=recipe.qa, on_missing="skip"):
                records.append(QARecord(**q.to_manifest()))
        rec = ClipRecord(clip=f"clips/{clip_id}.mp4", people=[name] if kind == "positive" else [],
                         qa=dedupe_qa(records), stage=[1, 2], kind=kind,
                         provenance={"backend": clip.backend, "seed": clip.request.seed, "source": source,
                                     **{k: v for k, v in clip.info.items() if k in ("motion", "background", "position", "prompt")}},
                         quality=quality)
        write_json(out / "records" / f"{clip_id}.json", rec.to_dict())

    done = {p.stem for p in (out / "records").glob("*.json")}
    gen = get_generator(backend)
    bar = tqdm(total=recipe.positives + len(hard) + len(random_), desc="synthesize", disable=not progress)
    # positives: generate, filter on identity and motion, keep until enough
    gen.prepare(identity, out / "backend")  # a tuning backend keeps (and resumes) its adapter here
    kept = sum(1 for d in done if d.startswith("pos_"))
    bar.update(kept)
    attempt = 0
    while kept < recipe.positives and attempt < recipe.max_attempts * recipe.positives:
        clip_id = f"pos_{kept:04d}"
        seed = recipe.seed * 1_000_003 + attempt
        attempt += 1
        clip = gen.generate(request(seed, identity.gender, identity.age))
        dists, boxes = _face_scores(engine, clip, identity.embedding)
        face_ok = bool(dists) and float(np.median(dists)) < threshold
        if not face_ok:
            continue
        dyn = dynamic_degree(clip.frames, fps=clip.fps)
        if dyn.score < recipe.min_motion:  # VideoAlchemy's Dync-D: a frozen clip teaches no action
            continue
        quality = {"face_distance": round(float(np.median(dists)), 4), "face_threshold": round(threshold, 4),
                   "faces_found": len(dists), "dync_d": round(dyn.score, 4)}
        emit(clip_id, clip, _person_facts(name, clip, boxes[0], _action(clip)), "positive",
             quality, str(analysis))
        kept += 1
        bar.update(1)
    if kept < recipe.positives:
        raise InputError(f"only {kept}/{recipe.positives} generated clips kept {name}'s identity "
                         f"(face distance < {threshold:.2f}); the reference faces may be too small or blurred")
    # negatives: the same backend on other people
    for kind, people in (("hard", hard), ("random", random_)):
        for j, (dist, person) in enumerate(people):
            clip_id = f"neg_{kind}_{j:04d}"
            if clip_id in done:
                bar.update(1)
                continue
            gen.prepare(person.identity(f"stranger_{kind}_{j}"), out / "backend")
            clip = gen.generate(request(recipe.seed * 7_919 + j + (0 if kind == "hard" else 10_000)))
            _, boxes = _face_scores(engine, clip, person.embedding)
            facts = _person_facts(None, clip, boxes[0] if boxes else None, _action(clip))
            emit(clip_id, clip, facts, "negative", {"subject_distance": round(dist, 4)}, person.source)
            bar.update(1)
    bar.close()
    records = [ClipRecord.from_dict(read_json(p)) for p in sorted((out / "records").glob("*.json"))]
    write_manifest(out / "manifest.jsonl", records)
    write_json(out / "summary.json", {
        **settings, "clips": len(records), "positives": sum(r.kind == "positive" for r in records),
        "negatives": sum(r.kind == "negative" for r in records), "qa_pairs": sum(len(r.qa) for r in records),
        "face_threshold": threshold, "hard_negative_distances": [round(d, 4) for d, _ in hard],
        "random_negative_distances": [round(d, 4) for d, _ in random_],
    })
    return out / "manifest.jsonl"


def dedupe_qa(records: list[QARecord]) -> list[QARecord]:
    """``records`` without repeated (type, question, answer) triples, first kept."""
    seen, out = set(), []
    for r in records:
        key = (r.type, r.question, r.answer)
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out
