"""Two people learned together on the small base: relative location, existence and clothing per person.

    python bench/small_pair.py [--seeds 0 1] [--queries 12] [--out workspace/bench-pair]

Per seed: a world of people from the held-out face split (never seen by the shipped base), one
reference video each of two of them, ``pvchat.api.learn([a, b], [A, B], preset="small", pool=...)``
(composed clips with strangers of a pool of align-split people, one model, one pack, exactly what
``pvchat learn a.mp4 b.mp4 --name A --name B --pool DIR`` runs),
then held-out clips of the two side by side (either order) asked, through the pack as users ask:

* "Where is <A> relative to <B>?" (and the reverse): left/right as the ground truth says (ours);
* "Is <A> in this video?" on those clips (yes) and on clips of strangers (no);
* "What is <A> wearing?" / "What is <A> doing?" on the pair clips.

Writes bench/results/small_pair.json and small_pair.png (mean ± std over seeds).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
KEYS = ("location", "existence (pair clips)", "existence (strangers)", "clothing", "action")


def run_seed(seed: int, queries: int, out: Path) -> dict:
    from pvchat.api import Chat, learn
    from pvchat.offline.pool import save_pool
    from pvchat.offline.world.api import make_world
    from pvchat.offline.world.faces import face_split
    from pvchat.offline.world.render import Cast
    from pvchat.qa.world_qa import action_correct, clothing_correct, location_correct
    from pvchat.video import write_video

    world = make_world(people=6, seed=seed, faces=face_split("held_out"), num_frames=16)
    a, b, strangers = world.people[0], world.people[1], world.people[2:]
    home = out / "home"
    refs = []
    for p in (a, b):
        path = out / f"ref-{p.name}.mp4"
        if not path.is_file():
            write_video(path, world.render_reference(p.id).frames, fps=world.fps)
        refs.append(path)
    t0 = time.perf_counter()
    # the pool (negatives, strangers in composed clips): people of the align split, so no face of
    # the query clips is among them (learn's default pool, the offline world's people, holds them all)
    pool = out / "pool"
    if not pool.is_dir():
        others = make_world(people=20, seed=seed + 100, faces=face_split("align"))
        save_pool(others, others.people, pool)
    learn(refs, [a.name, b.name], home=home, preset="small", recipe="small", pool=pool)
    learn_s = time.perf_counter() - t0

    rows = {k: [] for k in KEYS}
    transcript = []  # the location questions, as asked and answered
    chat = Chat([a.name, b.name], home=home)

    def ask(video: Path, question: str) -> str:
        return chat.ask(video, question).text
    for i in range(queries):
        left, right = (a, b) if i % 2 == 0 else (b, a)
        spec = world.clip_spec(1000 + i)
        cast = tuple(Cast(person=p.id, action=c.action, slot=slot, depth="front", outfit=c.outfit, scale=c.scale,
                          light=c.light) for p, slot, c in zip((left, right), ("left", "right"), spec.cast * 2))
        pair = dataclasses.replace(spec, cast=cast, clip_id=f"pair{i}")
        r = world.render_clip(pair)
        path = out / "queries" / f"pair{i}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_video(path, r.frames, fps=world.fps)
        truth = {p["id"]: p for p in r.truth["people"]}
        for who, other in ((a, b), (b, a)):
            t = truth[who.id]
            rel = next(x["horizontal"] for x in t["relations"] if x["other"] == other.id)
            question = f"Where is <{who.name}> relative to <{other.name}>?"
            said = ask(path, question)
            rows["location"].append(location_correct(said, rel))
            transcript.append({"clip": pair.clip_id, "question": question, "truth": rel, "answer": said,
                               "correct": rows["location"][-1]})
            rows["existence (pair clips)"].append(ask(path, f"Is <{who.name}> in this video?").lower().startswith("yes"))
            rows["clothing"].append(clothing_correct(ask(path, f"What is <{who.name}> wearing?"), t["outfit"]))
            rows["action"].append(action_correct(ask(path, f"What is <{who.name}> doing?"), t["action"]))
        s = strangers[i % len(strangers)]
        spec = world.clip_spec(2000 + i)
        alone = dataclasses.replace(spec, cast=(Cast(person=s.id, action=spec.cast[0].action, slot="centre"),),
                                    clip_id=f"stranger{i}")
        path = out / "queries" / f"stranger{i}.mp4"
        write_video(path, world.render_clip(alone).frames, fps=world.fps)
        who = (a, b)[i % 2]
        rows["existence (strangers)"].append(ask(path, f"Is <{who.name}> in this video?").lower().startswith("no"))
    scores = {k: round(sum(v) / len(v), 3) for k, v in rows.items() if v}
    return {"seed": seed, "people": [a.name, b.name], "learn_s": round(learn_s, 1), "scores": scores,
            "n": {k: len(v) for k, v in rows.items()}, "location_transcript": transcript}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--queries", type=int, default=12)
    ap.add_argument("--out", type=Path, default=Path("workspace/bench-pair"))
    args = ap.parse_args()
    per_seed = []
    for seed in args.seeds:
        per_seed.append(run_seed(seed, args.queries, args.out / f"seed{seed}"))
        print(json.dumps({k: v for k, v in per_seed[-1].items() if k != "location_transcript"}), flush=True)
    summary = {}
    for k in KEYS:
        vals = [r["scores"][k] for r in per_seed if k in r["scores"]]
        if vals:
            summary[k] = {"mean": round(statistics.fmean(vals), 3),
                          "std": round(statistics.stdev(vals), 3) if len(vals) > 1 else 0.0, "n_seeds": len(vals)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "small_pair.json").write_text(json.dumps({"seeds": args.seeds, "summary": summary,
                                                        "per_seed": per_seed}, indent=2))
    plot(summary, RESULTS / "small_pair.png")
    print(", ".join(f"{k} {v['mean']:.2f}±{v['std']:.2f}" for k, v in summary.items()))


def plot(summary: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in KEYS if k in summary]
    fig, ax = plt.subplots(figsize=(8, 3.4))
    ax.bar(keys, [summary[k]["mean"] for k in keys], yerr=[summary[k]["std"] for k in keys], capsize=3)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy (mean ± std over seeds)")
    ax.set_title("small base: two held-out people learned together")
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
