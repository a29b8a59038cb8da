"""The benchmark query set, built from the offline world (paper §4.1 on rendered real faces).

A benchmark directory holds::

    benchmark.json        recipe, subjects (one person, a pair or a triple: members and their references,
                          hard negatives with dlib distances, made look-alikes, strangers), pool, counts
    references/pNN.mp4    one reference video per subject (alone, 32 frames)
    pool/pNN.png          portraits of the pool people (never in a query clip)
    clips/sS_GROUP_KK.mp4 query clips: per subject, clips with it (positive), with strangers only
                          (stranger) and with one of its hard negatives (hard_negative)
    clips.jsonl           the world's ground truth of every clip (who, where, doing what, wearing what)
    questions.jsonl       one line per question: id, subject, clip, group, type, question,
                          reference answer, existence label, and its ground truth (who is there and
                          whose face is hardly visible; or the outfit, action, position and relations
                          of the person asked about) for :mod:`pvchat.eval.truth`

Questions and reference answers come from the paper's templates filled from the ground truth
(:func:`pvchat.qa.generate.make_qa` with the ``facts`` captioner). Everything is deterministic in
the recipe's seed; the directory is written atomically.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from pvchat.errors import InputError
from pvchat.eval.recipe import GROUPS, UNITS, BenchmarkRecipe, load_recipe
from pvchat.io import atomic_dir, read_json, read_jsonl, write_json, write_text
from pvchat.offline.pool import save_pool

# a client of the offline world: the benchmark is rendered from it (reading one needs none of it, but
# lives here beside its writer)
from pvchat.offline.world.api import make_world
from pvchat.offline.world.faces import morph_key
from pvchat.offline.world.negatives import person_embeddings
from pvchat.offline.world.people import NAMES, random_outfit
from pvchat.offline.world.render import plan_clip, render_clip
from pvchat.qa.generate import QARecipe, make_qa
from pvchat.qa.worldfacts import facts_from_world_record
from pvchat.video import write_video

FORMAT_VERSION = 2  # 2: subjects may be pairs and triples; questions carry their ground truth
MAX_TRIES = 8  # re-plans of a clip whose ground truth does not fit its group
LOOKALIKE_WEIGHT = (0.4, 0.5)  # share of the subject's face in a made look-alike (at most half: someone else)


def _seed(*parts: int) -> int:
    return int(np.random.default_rng(list(parts)).integers(0, 2**31 - 1))


@dataclass
class Benchmark:
    """A benchmark directory read back: its metadata and questions."""

    root: Path
    meta: dict[str, Any]
    questions: list[dict[str, Any]]

    @property
    def subjects(self) -> list[dict[str, Any]]:
        return self.meta["subjects"]

    @property
    def recipe(self) -> BenchmarkRecipe:
        return BenchmarkRecipe.from_dict(self.meta["recipe"])

    def subject(self, key: str) -> dict[str, Any]:
        """A subject by name ("Anna", "Anna+Ben" for a pair) or world id ("p03", "p03+p07");
        InputError listing the subjects otherwise."""
        for s in self.subjects:
            if key in (s["name"], s["id"]):
                return s
        raise InputError(f"no subject {key!r} in benchmark {self.root}; subjects: "
                         + ", ".join(f"{s['name']} ({s['id']})" for s in self.subjects))

    def reference(self, name: str) -> Path:
        """The reference video of a subject."""
        return self.root / self.subject(name)["reference"]

    @property
    def pool_dir(self) -> Path | None:
        """Portraits of the pool people, or None when the recipe has no pool."""
        d = self.root / "pool"
        return d if d.is_dir() and any(d.iterdir()) else None


def load_benchmark(path: str | os.PathLike) -> Benchmark:
    """A directory written by :func:`build_benchmark`."""
    root = Path(path)
    meta = read_json(root / "benchmark.json")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        raise InputError(f"{root}/benchmark.json: not a pvchat benchmark (format {FORMAT_VERSION} expected)")
    questions = read_jsonl(root / "questions.jsonl")
    needed = {"id", "subject", "clip", "group", "type", "question", "reference", "label"}
    for n, q in enumerate(questions, 1):
        if not isinstance(q, dict) or not needed <= set(q):
            raise InputError(f"{root}/questions.jsonl:{n}: a question needs the fields {sorted(needed)}")
    return Benchmark(root=root, meta=meta, questions=questions)


def _split(recipe: BenchmarkRecipe, people: list) -> tuple[list, list, list]:
    """(subject people, query others, pool): a seeded permutation of the world's people."""
    order = np.random.default_rng([recipe.seed, 101]).permutation(len(people))
    shuffled = [people[i] for i in order]
    n = recipe.subject_people
    subjects = shuffled[:n]
    pool = shuffled[n: n + recipe.pool_people]
    others = shuffled[n + recipe.pool_people:]
    return subjects, others, pool


def _units(recipe: BenchmarkRecipe, subject_people: list) -> list[list]:
    """The benchmark subjects: lists of 1, 2 or 3 people, in the recipe's order."""
    units, k = [], 0
    for size in recipe.units:
        units.append(subject_people[k: k + size])
        k += size
    return units


def _lookalikes(recipe: BenchmarkRecipe, world, subject_people: list, others: list, emb: dict) -> list:
    """Made look-alikes: per subject person, ``recipe.lookalikes`` people whose face blends 40–50% of
    the subject's face with its nearest query person's (:func:`pvchat.offline.world.faces.morph_key`), a
    stand-in for the sibling-like look-alikes the offline faces lack. They join the query people
    (added to ``world.people``); each is its subject's nearest hard negative, and absent is the label."""
    if not recipe.lookalikes:
        return []
    rng = np.random.default_rng([recipe.seed, 103])
    free = [n for n in NAMES if n not in {p.name for p in world.people}]
    made = []
    for p in subject_people:
        ranked = sorted(others, key=lambda o: (float(np.linalg.norm(emb[o.id] - emb[p.id])), o.id))
        for j in range(recipe.lookalikes):
            partner = ranked[j % len(ranked)]
            w = float(rng.uniform(*LOOKALIKE_WEIGHT))
            k = len(made)
            hair = (p.hair_style, p.hair_colour) if rng.random() < 0.5 else (partner.hair_style, partner.hair_colour)
            made.append(replace(partner, id=f"m{k:02d}", name=free[k] if k < len(free) else f"Kin{k}",
                                face=morph_key(p.face, partner.face, w), hair_style=hair[0], hair_colour=hair[1],
                                outfit=random_outfit(rng), photos=(), gender=None, age=None,
                                attributes={"face_source": f"look-alike of {p.id}: {w:.2f} of its face, "
                                                           f"{1 - w:.2f} of {partner.id}'s", "lookalike_of": p.id}))
    world.people.extend(made)
    return made


def _qa_recipe(recipe: BenchmarkRecipe):
    q = recipe.questions
    return QARecipe(existence=q.get("existence", 1), appearance=q.get("appearance", 0), action=q.get("action", 0),
                    location=q.get("location", 0))


def _truth_of(entry: dict) -> dict[str, Any]:
    """What the ground-truth scores need about one person of a clip."""
    return {"outfit": entry["outfit"], "action": entry["action"], "position": entry["position"],
            "moves": entry["moves"], "relations": [{"other_name": r["other_name"], "horizontal": r["horizontal"]}
                                                   for r in entry["relations"]],
            "face_hardly_visible": entry["face"]["hardly_visible"] if "face" in entry else False}


def build_benchmark(out: str | os.PathLike, recipe: str | os.PathLike | BenchmarkRecipe | None = None,
                    overwrite: bool = False, progress: bool = False) -> Path:
    """Render the benchmark of ``recipe`` (default: ``pvchat/recipes/benchmark/default.yaml``) into ``out``.

    Returns ``out``. Raises InputError when ``out`` exists (unless ``overwrite``) and ConfigError
    for an invalid recipe.
    """
    start = time.perf_counter()
    rcp = load_recipe(recipe)
    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError(f"{out} already exists (pass overwrite to replace it)")
    world = make_world(people=rcp.world_people, seed=rcp.seed, max_people_per_clip=rcp.max_people_per_clip,
                       num_frames=rcp.num_frames, fps=rcp.fps, size=rcp.size, variation=rcp.variation,
                       faces_dir=rcp.faces)
    subject_people, others, pool = _split(rcp, world.people)
    units = _units(rcp, subject_people)
    by_id = world.by_id
    qa_recipe = _qa_recipe(rcp)
    total = len(subject_people) * 2 + len(others) + rcp.num_clips
    with atomic_dir(out, overwrite=overwrite) as tmp, tqdm(total=total, desc="benchmark", unit="item",
                                                         disable=not progress) as bar:
        for d in ("references", "clips"):
            (tmp / d).mkdir()
        save_pool(world, pool, tmp / "pool")
        # hard negatives: the query people nearest to each subject person by dlib portrait embedding
        emb = {}
        for p in subject_people + others:
            emb[p.id] = person_embeddings([p])[0]
            bar.update(1)
        made = _lookalikes(rcp, world, subject_people, others, emb)
        for p in made:
            emb[p.id] = person_embeddings([p])[0]
        others = others + made
        by_id = world.by_id
        for p in subject_people:
            write_video(tmp / "references" / f"{p.id}.mp4", world.render_reference(p.id).frames, fps=rcp.fps)
            bar.update(1)
        subject_rows, clip_rows, question_rows = [], [], []
        for si, unit in enumerate(units):
            names = [p.name for p in unit]
            unit_name = "+".join(names)
            kind = UNITS[len(unit)]
            nearest: dict[str, float] = {}
            for p in unit:
                ranked = sorted(((float(np.linalg.norm(emb[o.id] - emb[p.id])), o.id) for o in others))
                for d, oid in ranked[: rcp.hard_negatives]:
                    nearest[oid] = min(d, nearest.get(oid, d))
            hard = sorted(nearest, key=lambda oid: (nearest[oid], oid))
            strangers = [o for o in others if o.id not in nearest]
            hard_people = [by_id[h] for h in hard]
            subject_rows.append({
                "id": "+".join(p.id for p in unit), "name": unit_name, "unit": kind,
                "face": unit[0].face, "reference": f"references/{unit[0].id}.mp4",
                "members": [{"id": p.id, "name": p.name, "face": p.face, "photos": list(p.photos),
                             "reference": f"references/{p.id}.mp4"} for p in unit],
                "made_lookalikes": [o.id for o in others if o.attributes.get("lookalike_of") in {p.id for p in unit}],
                "hard_negatives": [{"id": h, "name": by_id[h].name, "distance": round(nearest[h], 4)} for h in hard],
                "strangers": [o.id for o in strangers],
            })
            for gi, group in enumerate(GROUPS):
                for k in range(rcp.clips_per_group):
                    clip_id = f"s{si}_{group}_{k:02d}"
                    if group == "positive":
                        cast_pool, must = [*unit, *others], [p.id for p in unit]
                    elif group == "stranger":
                        cast_pool, must = strangers, []
                    else:
                        must = [hard[k % len(hard)]]
                        cast_pool = [*hard_people, *strangers]
                    for attempt in range(MAX_TRIES):
                        spec = plan_clip(cast_pool, clip_id=clip_id, seed=_seed(rcp.seed, 7, si, gi, k, attempt),
                                         max_people=rcp.max_people_per_clip, num_frames=rcp.num_frames, fps=rcp.fps,
                                         size=rcp.size, must_include=must or None, variation=rcp.variation)
                        rendered = render_clip(spec, by_id)
                        present = set(rendered.truth["person_ids"])
                        if set(must) <= present:
                            break
                    rel = f"clips/{clip_id}.mp4"
                    write_video(tmp / rel, rendered.frames, fps=rcp.fps)
                    truth = {"path": rel, "group": group, "subject": unit_name, **rendered.truth}
                    clip_rows.append(truth)
                    entries = {e["name"]: e for e in rendered.truth["people"]}
                    facts = facts_from_world_record(truth, names={p.id: p.name for p in unit})
                    pairs = make_qa(facts, names, stage=2, rng=random.Random(f"{rcp.seed}:{clip_id}"),
                                    recipe=qa_recipe, captioner="facts", rewriter="rules", on_missing="skip")
                    present_names = [p.name for p in unit if p.id in present]
                    hidden = [n for n in present_names if entries[n]["face"]["hardly_visible"]]
                    for j, qa in enumerate(pairs):
                        if qa.type == "existence":
                            truth_q = {"present": present_names, "face_hardly_visible": hidden}
                        else:
                            about = qa.subjects[0] if qa.subjects else names[0]
                            truth_q = {"about": about, **_truth_of(entries[about])} if about in entries else {}
                        question_rows.append({
                            "id": f"{clip_id}:{j}", "subject": unit_name, "subject_id": subject_rows[-1]["id"],
                            "subjects": names, "unit": kind, "clip": rel, "group": group, "type": qa.type,
                            "question": qa.question, "reference": qa.answer,
                            "label": bool(qa.label) if qa.type == "existence" else None,
                            "people": sorted(present), "num_people": len(present), "source": qa.source,
                            "truth": truth_q,
                        })
                    bar.update(1)
        counts = {"subjects": len(units), "subject_people": len(subject_people), "clips": len(clip_rows),
                  "questions": len(question_rows),
                  "by_unit": {u: sum(r["unit"] == u for r in subject_rows) for u in UNITS.values()},
                  "by_type": {t: sum(q["type"] == t for q in question_rows) for t in rcp.questions},
                  "by_group": {g: sum(c["group"] == g for c in clip_rows) for g in GROUPS}}
        meta = {"format": FORMAT_VERSION, "recipe": rcp.to_dict(), "subjects": subject_rows,
                "query_people": [o.id for o in others], "pool": [p.id for p in pool],
                "people": {p.id: {"name": p.name, "face": p.face} for p in world.people}, "counts": counts,
                "seconds": round(time.perf_counter() - start, 1)}
        write_json(tmp / "benchmark.json", meta)
        write_text(tmp / "clips.jsonl", "".join(json.dumps(r) + "\n" for r in clip_rows))
        write_text(tmp / "questions.jsonl", "".join(json.dumps(r) + "\n" for r in question_rows))
    return out


def ensure_benchmark(benchmark: str | os.PathLike, recipe: str | os.PathLike | None = None,
                     progress: bool = False, announce: Callable[[str], None] | None = None,
                     subjects: int | None = None) -> Path:
    """``benchmark`` as is when it holds a benchmark, else built there from ``recipe`` (default recipe).

    ``subjects`` shrinks the recipe (:meth:`BenchmarkRecipe.shrink`). ``announce(message)`` hears
    that a benchmark is about to be built (it takes a while).
    """
    benchmark = Path(benchmark)
    if benchmark.exists() and not benchmark.is_dir():
        raise InputError(f"{benchmark}: a file, not a benchmark directory (give a benchmark directory, or a new "
                         f"path to build one there)")
    rcp = load_recipe(recipe)
    if subjects is not None:
        rcp = rcp.shrink(subjects)
    if (benchmark / "benchmark.json").is_file():
        if (recipe is not None or subjects is not None) and load_benchmark(benchmark).recipe != rcp:
            raise InputError(f"{benchmark} was built from another recipe (or --subjects); choose another directory")
        return benchmark
    if benchmark.exists() and any(benchmark.iterdir()):
        raise InputError(f"{benchmark} exists but holds no benchmark.json; choose an empty or new directory")
    if benchmark.exists():
        benchmark.rmdir()
    if announce is not None:
        announce(f"building the benchmark ({len(rcp.units)} subjects, {rcp.num_clips} clips) in {benchmark} ...")
    return build_benchmark(benchmark, rcp, progress=progress)
