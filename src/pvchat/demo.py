"""``pvchat demo``: learn one person from one video and question held-out clips, end to end.

    offline world ─► reference video of one person ─► analyze ─► synthesize (classic positives,
    hard negatives from a pool of other people) ─► train stage 1 + stage 2 (tiny preset)
    ─► ask "Is <Name> in this video?" about held-out clips ─► accuracy, transcript, plots

The people of the world are split: a pool (hard negatives for training) and held-out people who
only ever appear in query clips, so the evaluation's strangers and hard negatives are new faces.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PIL import Image

from pvchat.io import write_json

PRESET, RECIPE = "face", "face"  # model preset and training recipe the demo learns with


def _write_clip(path: Path, frames: np.ndarray, fps: float) -> None:
    from pvchat.video import write_video

    write_video(path, frames, fps=fps)


def run_demo(out: Path, quick: bool = False, seed: int = 0, progress: bool = True) -> dict:
    """The demo as a function: returns the report it also writes to ``out/report.json``."""
    from pvchat.eval.metrics import existence_accuracy
    from pvchat.faces import FaceEngine
    from pvchat.faces.analyze import analyze_video, write_analysis
    from pvchat.synth.pipeline import synthesize_dataset
    from pvchat.train.stages import base_model, learn_stages
    from pvchat.world.api import World, make_world

    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n_people, n_queries = (8, 12) if quick else (12, 24)
    world = make_world(people=n_people, seed=seed)
    subject, others = world.people[0], world.people[1:]
    pool_people, held_out = others[: len(others) // 2], others[len(others) // 2 :]
    name = subject.name
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
    analysis = analyze_video(reference)
    write_analysis(analysis, out / "analysis", overwrite=True)
    lap("analyze", t)
    # 3. synthesize: positives from the reference, negatives from the pool's people
    t = time.perf_counter()
    pool = out / "pool"
    pool.mkdir(exist_ok=True)
    for p in pool_people:
        Image.fromarray(world.portrait(p.id)).save(pool / f"{p.id}.png")
    manifest = synthesize_dataset(out / "analysis", name, out / "data", pool=pool,
                                  recipe="demo", progress=progress)
    lap("synthesize", t)
    # 4. train both stages on the face preset (model/presets.py)
    t = time.perf_counter()
    model = base_model(out / "run", PRESET, [name], seed=seed)
    r1, r2 = learn_stages(model, manifest, out / "run", recipe=RECIPE, subjects=[name], resume=True, progress=progress)
    lap("train", t)

    # 5. held-out queries: the subject, strangers, and the held-out people nearest to the subject
    t = time.perf_counter()
    engine = FaceEngine()
    subj_emb = engine.detect(world.portrait(subject.id))[0].embedding
    dist = {}
    for p in held_out:
        faces = engine.detect(world.portrait(p.id))
        if faces:
            dist[p.id] = float(np.linalg.norm(faces[0].embedding - subj_emb))
    hard = sorted(dist, key=dist.get)[: max(1, len(dist) // 3)]
    query_world = World(people=[subject, *held_out], seed=seed + 1, size=world.size, num_frames=16, fps=world.fps,
                        max_people_per_clip=2)
    qdir = out / "queries"
    qdir.mkdir(exist_ok=True)
    model.eval()
    rows = []
    for i in range(n_queries):
        group = ("subject", "stranger", "hard negative")[i % 3]
        must = subject.id if group == "subject" else hard[i % len(hard)] if group == "hard negative" else None
        spec = query_world.clip_spec(i, must_include=must)
        if group != "subject" and subject.id in {c.person for c in spec.cast}:
            spec = query_world.clip_spec(i + 1000, must_include=must or held_out[i % len(held_out)].id)
        rendered = query_world.render_clip(spec)
        ids = [c.person for c in spec.cast]
        if group != "subject" and subject.id in ids:
            continue  # could not draw a clip without the subject for this slot
        path = qdir / f"q{i:03d}.mp4"
        _write_clip(path, rendered.frames, world.fps)
        pixels = model.read_video(path)[1]
        question = f"Is <{name}> in this video?"
        answer = model.generate([question], pixel_values=pixels.unsqueeze(0), max_new_tokens=32)[0]
        rows.append({"clip": path.name, "group": group, "people": ids, "label": subject.id in ids,
                     "question": question, "answer": answer})
    lap("evaluate", t)

    report = {"subject": name, "world_people": n_people, "pool": [p.id for p in pool_people],
              "held_out": [p.id for p in held_out], "hard_negatives": hard, "timings_s": timings,
              "train": {"stage1_steps": r1.steps, "stage1_loss": r1.final_loss, "stage2_steps": r2.steps,
                        "stage2_loss": r2.final_loss},
              "existence": existence_accuracy([r["answer"] for r in rows], [r["label"] for r in rows]),
              "by_group": {g: existence_accuracy([r["answer"] for r in rows if r["group"] == g],
                                                 [r["label"] for r in rows if r["group"] == g])["accuracy"]
                           for g in ("subject", "stranger", "hard negative")},
              "transcript": rows}
    report["seconds"] = round(time.perf_counter() - t0, 1)
    write_json(out / "report.json", report)
    _plot(report, out / "eval.png")
    return report


def _plot(report: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(report["by_group"])
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.bar(groups, [report["by_group"][g] for g in groups], color=["tab:green", "tab:blue", "tab:red"])
    ax.axhline(report["existence"]["accuracy"], ls="--", c="k", label=f"all: {report['existence']['accuracy']:.2f}")
    ax.set_ylim(0, 1)
    ax.set_ylabel("existence accuracy")
    ax.set_title(f"Is <{report['subject']}> in this video? (held-out clips)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def demo(out: Path = Path("workspace/demo"), quick: bool = False, seed: int = 0) -> int:
    """Learn one person of the offline world from one reference video, then question held-out clips.

    Renders a small world of real faces, analyses the person's reference video, synthesizes a
    training set (positives from that video, hard negatives from other people), trains the tiny
    model in two stages and asks "Is <Name> in this video?" about clips with the person, with
    strangers and with look-alikes it has never seen. Prints the metrics and a transcript; writes
    report.json, eval.png and the training plots under OUT.

    Args:
        out: where everything is written (re-running resumes).
        quick: a smaller world and half the query clips.
        seed: world and training seed.
    """
    report = run_demo(Path(out), quick=quick, seed=seed)
    e = report["existence"]
    print(f"\nLearned <{report['subject']}> from one reference video in {report['seconds']} s "
          f"({', '.join(f'{k} {v} s' for k, v in report['timings_s'].items())}).")
    print(f"Existence accuracy on {e['n']} held-out clips: {e['accuracy']:.2f} "
          f"(with the person {report['by_group']['subject']:.2f}, strangers {report['by_group']['stranger']:.2f}, "
          f"look-alikes {report['by_group']['hard negative']:.2f}; unparsed answers {e['unparsed']:.2f})")
    print("\nTranscript:")
    for r in report["transcript"][:6]:
        truth = "present" if r["label"] else "absent"
        print(f"  [{r['clip']}, {r['group']}, {truth}] Q: {r['question']}  A: {r['answer']}")
    print(f"\nReport: {Path(out) / 'report.json'}; plots: {Path(out) / 'eval.png'}, "
          f"{Path(out) / 'run' / 'stage2' / 'training.png'}")
    return 0
