"""``pvchat demo``: learn one person from one video and question held-out clips, end to end.

    offline world ─► reference video of one person ─► analyze ─► synthesize (classic positives,
    hard negatives from a pool of other people) ─► train stage 1 + stage 2 ─► pack  (pvchat.learn, as learn)
    ─► ask about held-out clips: "Is <Name> in this video?", and where the person is in the clip
       "What is <Name> wearing?" / "What is <Name> doing?" (and, beside someone else, "Where is <Name>
       relative to the other person?") ─► scores per question type, transcript, plots

With the ``small`` preset the world's people come from the held-out face split (never seen by its
shipped alignment).

The people of the world are split: a pool (hard negatives for training) and held-out people who
only ever appear in query clips, so the evaluation's strangers and hard negatives are new faces.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

import pvchat.learn as pipeline
from pvchat.choices import PRESET, default_recipe
from pvchat.eval.face_baseline import FaceBaseline
from pvchat.eval.metrics import existence_accuracy
from pvchat.faces import FaceEngine
from pvchat.io import write_json
from pvchat.offline.pool import save_pool
from pvchat.offline.world.api import World, make_world
from pvchat.offline.world.faces import face_split
from pvchat.pack import CARD
from pvchat.qa.world_qa import OTHER, action_correct, clothing_correct, location_correct
from pvchat.video import write_video
from pvchat.workspace import PersonPaths, base_dir

DESCRIBES = ("small",)  # presets whose answers describe the clip (appearance and action are asked)


def _write_clip(path: Path, frames: np.ndarray, fps: float) -> None:
    write_video(path, frames, fps=fps)


def run_demo(out: Path, quick: bool = False, seed: int = 0, progress: bool = True, preset: str = PRESET) -> dict:
    """The demo as a function: returns the report it also writes to ``out/report.json``."""
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n_people, n_queries = (8, 12) if quick else (12, 24)
    recipe = default_recipe(preset, quick)
    # a preset aligned on the offline world (small) is asked about people of the held-out face split only
    world = make_world(people=n_people, seed=seed, faces=face_split("held_out") if preset in DESCRIBES else None)
    subject, others = world.people[0], world.people[1:]
    pool_people, held_out = others[: len(others) // 2], others[len(others) // 2 :]
    name = subject.name
    paths = PersonPaths(out)  # out/analysis, out/data, out/run, out/pack: learn's layout; the base in out/base/<preset>
    timings: dict[str, float] = {}

    def lap(key: str, start: float) -> None:
        timings[key] = round(time.perf_counter() - start, 1)
        if progress:
            print(f"[demo] {key}: {timings[key]} s", flush=True)

    # 1. one reference video of the subject
    t = time.perf_counter()
    ref = world.render_reference(subject.id)
    reference = out / "reference.mp4"
    _write_clip(reference, ref.frames, world.fps)
    # 2. analyze it
    summary = pipeline.analyze([reference], [paths.analysis], verbose=progress)
    lap("analyze", t)
    # 3. synthesize: positives from the reference, negatives from the pool's people
    t = time.perf_counter()
    pool = save_pool(world, pool_people, out / "pool")
    synth = pipeline.synth_recipe(recipe)
    data = pipeline.synthesize(paths.analysis, name, paths.data, synth, pool=pool, verbose=progress,
                               pairs=pipeline.pair_clips(recipe))
    lap("synthesize", t)
    # 4. held-out queries: the subject, strangers, and the held-out people nearest to the subject
    t = time.perf_counter()
    engine = FaceEngine()
    subj_emb = engine.detect(world.portrait(subject.id))[0].embedding
    dist = {}
    for p in held_out:
        faces = engine.detect(world.portrait(p.id))
        if faces:
            dist[p.id] = float(np.linalg.norm(faces[0].embedding - subj_emb))
    hard = sorted(dist, key=dist.get)[: max(1, len(dist) // 3)]
    queries = _query_clips(World(people=[subject, *held_out], seed=seed + 1, size=world.size, num_frames=16,
                                 fps=world.fps, max_people_per_clip=2), subject.id, held_out, hard, n_queries,
                           out / "queries")
    lap("queries", t)

    # 5. train both stages (the base first answers about "the person": what personalisation adds), then the pack
    t = time.perf_counter()
    base = base_dir(preset, out)
    model = pipeline.start_model(base, preset, [name], [paths.analysis], seed=seed)
    describes = preset in DESCRIBES
    encoded: dict = {}  # query clip → features: the tower is frozen, so the base's and the learned model's are one
    base_rows = _ask(model, queries, name, generic=True, encoded=encoded) if describes else []
    r1, r2, metrics = pipeline.train(model, paths.data / "manifest.jsonl", paths.run, recipe, [name], resume=True,
                                     verbose=progress)
    lap("train", t)
    t = time.perf_counter()
    if not (paths.pack / CARD).is_file():  # what 'pvchat ask --pack OUT/pack' loads
        pipeline.pack(model, [name], paths.pack, base, recipe, data, metrics, reference=str(reference.resolve()),
                      extra={"person": summary["subject"], "recipe": recipe, "synthesize": synth})
    lap("pack", t)

    # 6. ask the learned model; the training-free face baseline answers existence
    t = time.perf_counter()
    rows = _ask(model, queries, name, describe=describes, encoded=encoded)
    faces = FaceBaseline(pool=pool)
    faces.add_subject(name, reference)
    face_rows = [{**q, "type": "existence", "answer": "Yes" if faces.present(q["path"], name) else "No"}
                 for q in queries]
    lap("evaluate", t)

    report = {"subject": name, "preset": preset, "recipe": recipe, "world_people": n_people, "pool": [p.id for p in pool_people],
              "held_out": [p.id for p in held_out], "hard_negatives": hard, "timings_s": timings,
              "train": {"stage1_steps": r1.steps, "stage1_loss": r1.final_loss, "stage1_s": round(r1.seconds, 1),
                        "stage2_steps": r2.steps, "stage2_loss": r2.final_loss, "stage2_s": round(r2.seconds, 1)},
              **_scores(rows),
              "baselines": {"base, asked about the person": _scores(base_rows), "face": _scores(face_rows)},
              "transcript": [{k: v for k, v in r.items() if k != "path"} for r in rows]}
    report["seconds"] = round(time.perf_counter() - t0, 1)
    write_json(out / "report.json", report)
    _plot(report, out / "eval.png")
    return report


def _query_clips(world, subject: str, held_out, hard: list[str], n: int, qdir: Path) -> list[dict]:
    """``n`` query clips, a third each with the subject, with strangers, with look-alikes (``hard``)."""
    qdir.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        group = ("subject", "stranger", "hard negative")[i % 3]
        must = subject if group == "subject" else hard[i % len(hard)] if group == "hard negative" else None
        spec = world.clip_spec(i, must_include=must)
        if group != "subject" and subject in {c.person for c in spec.cast}:
            spec = world.clip_spec(i + 1000, must_include=must or held_out[i % len(held_out)].id)
        ids = [c.person for c in spec.cast]
        if group != "subject" and subject in ids:
            continue  # could not draw a clip without the subject for this slot
        rendered = world.render_clip(spec)
        path = qdir / f"q{i:03d}.mp4"
        if not path.is_file():
            _write_clip(path, rendered.frames, world.fps)
        truth = next((p for p in rendered.truth["people"] if p["id"] == subject), None)
        out.append({"clip": path.name, "path": path, "group": group, "people": ids, "label": truth is not None,
                    "truth": truth})
    return out


def _ask(model, queries: list[dict], name: str, describe: bool = True, generic: bool = False,
         encoded: dict | None = None) -> list[dict]:
    """The model's answers: existence about every clip and, where the person is in it, what they wear
    and do, and in a clip of two, on which side of the other person they are. ``generic`` asks about
    "the person" instead (a base that knows nobody): no existence, and no location (which person?).
    ``encoded`` caches each clip's features across calls."""
    model.eval()
    who = "the person" if generic else f"<{name}>"
    encoded = {} if encoded is None else encoded
    rows, features, checks = [], [], []  # one question each; answered together (PVChat.generate batches them)

    def ask(row: dict, feats: torch.Tensor, check=None) -> None:
        rows.append(row)
        features.append(feats)
        checks.append(check)

    for q in queries:
        if q["path"] not in encoded:
            with torch.no_grad():
                encoded[q["path"]] = model.encode_video(model.read_video(q["path"])[1].unsqueeze(0))
        feats = encoded[q["path"]]
        if not generic:
            ask({**{k: v for k, v in q.items() if k != "truth"}, "type": "existence",
                 "question": f"Is {who} in this video?"}, feats)
        if describe and q["truth"] is not None:
            truth = q["truth"]
            ask({**q, "type": "appearance", "question": f"What is {who} wearing?", "truth": truth["wearing"]}, feats,
                lambda said, outfit=truth["outfit"]: clothing_correct(said, outfit))
            ask({**q, "type": "action", "question": f"What is {who} doing?", "truth": truth["action_phrase"]}, feats,
                lambda said, action=truth["action"]: action_correct(said, action))
            side = [r["horizontal"] for r in truth.get("relations", []) if r.get("horizontal")]
            if not generic and len(q["people"]) == 2 and side:
                ask({**q, "type": "location", "question": f"Where is {who} relative to {OTHER}?",
                     "truth": f"{side[0]} {OTHER}"}, feats, lambda said, side=side[0]: location_correct(said, side))
    said = model.generate([r["question"] for r in rows], vision_features=torch.cat(features), max_new_tokens=40) if rows else []
    for row, check, answer in zip(rows, checks, said):
        row["answer"] = answer
        if check is not None:
            row["correct"] = check(answer)
    for r in rows:
        r.pop("path", None)
    return rows


def _scores(rows: list[dict]) -> dict:
    """Existence (overall and per group), clothing and action accuracy of a list of answers."""
    exist = [r for r in rows if r["type"] == "existence"]
    out: dict = {}
    if exist:
        out["existence"] = existence_accuracy([r["answer"] for r in exist], [r["label"] for r in exist])
        out["by_group"] = {g: existence_accuracy([r["answer"] for r in exist if r["group"] == g],
                                                 [r["label"] for r in exist if r["group"] == g])["accuracy"]
                           for g in ("subject", "stranger", "hard negative")}
    for kind, key in (("appearance", "clothing"), ("action", "action"), ("location", "location")):
        these = [r for r in rows if r["type"] == kind]
        out[key] = {"accuracy": sum(r["correct"] for r in these) / len(these), "n": len(these),
                    "differs": _differs(these)} if these else None
    return out


def _differs(rows: list[dict]) -> float | None:
    """Of the pairs of clips whose truth differs, the share whose answers differ too (None: no such pair)."""
    pairs = [(a, b) for i, a in enumerate(rows) for b in rows[i + 1:] if a["truth"] != b["truth"]]
    return round(sum(a["answer"] != b["answer"] for a, b in pairs) / len(pairs), 3) if pairs else None


def _plot(report: dict, png: Path) -> None:
    """Existence per group; beside it, with a preset that describes, the other question types
    (personalised, and the base asked about "the person")."""
    kinds = [k for k in ("clothing", "action", "location") if report.get(k)]
    fig = Figure(figsize=(9 if kinds else 5, 3.2))
    axes = fig.subplots(1, 2 if kinds else 1, squeeze=False)[0]
    ax = axes[0]
    groups = list(report["by_group"])
    ax.bar(groups, [report["by_group"][g] for g in groups], color=["tab:green", "tab:blue", "tab:red"])
    ax.axhline(report["existence"]["accuracy"], ls="--", c="k", label=f"all: {report['existence']['accuracy']:.2f}")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"Is <{report['subject']}> in this video? (held-out clips)", fontsize=9)
    ax.legend()
    if kinds:
        base = report["baselines"].get("base, asked about the person", {})
        x = np.arange(len(kinds))
        axes[1].bar(x - 0.2, [report[k]["accuracy"] for k in kinds], 0.4, label=f"<{report['subject']}>")
        axes[1].bar(x + 0.2, [(base.get(k) or {}).get("accuracy", 0) for k in kinds], 0.4,
                    label='base, "the person"')
        axes[1].set_xticks(x, [f"{k}\n(n={report[k]['n']})" for k in kinds])
        axes[1].set_ylim(0, 1)
        axes[1].set_title("what the answers say (clips with the person)", fontsize=9)
        axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
