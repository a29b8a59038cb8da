"""What the shipped small base's attribute readout names about people it has never seen.

    python bench/readout.py [--clips 50] [--seeds 0 1 2] [--out workspace/bench-readout]

The readout (model/readout.py) names what a person wears and does; the LLM copies its words, so
its accuracy is close to what the base can say at all. This scores it where the demo asks: world
clips of one person each, of people of the ``held_out`` face split (never seen in alignment), read
as the model reads any video (8 steps of 16 frames, each with its next frame: the shipped base's
tower), the readout taking the one person present (``AttributeReadout.anyone``, what the base says
about "the person"). Per world seed (other people, clothes and actions) and attribute: accuracy
beside the majority label's share; per action, how often it is named right, and the action
confusion matrix summed over the seeds.

Writes bench/results/readout.json and readout.png. Clips stay in ``--out`` (a rerun reuses them).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

RESULTS = Path(__file__).parent / "results"


def read_seed(model, out: Path, seed: int, clips: int) -> list[dict]:
    """``clips`` one-person clips of held-out people (world ``seed``): truth and the readout's labels."""
    import torch
    from tqdm.auto import tqdm

    from pvchat.offline.world.api import World
    from pvchat.offline.world.faces import face_split
    from pvchat.offline.world.people import make_people
    from pvchat.train.pretrain import readout_truth
    from pvchat.video import write_video

    faces = face_split("held_out")
    world = World(people=make_people(len(faces), seed + 3, faces=faces), seed=seed, num_frames=16,
                  max_people_per_clip=1)
    readout = model.readout
    (out / f"seed{seed}").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in tqdm(range(clips), desc=f"seed {seed}"):
        path = out / f"seed{seed}" / f"c{i:03d}.mp4"
        rendered = world.render_clip(i)
        if not path.is_file():
            write_video(path, rendered.frames, fps=world.fps)
        truth = rendered.truth["people"][0]
        with torch.no_grad():
            raw = model.encode_video(model.read_video(path)[1].unsqueeze(0))  # (1, T, N, C)
            logits = readout.classify(readout.pool(raw, readout.anyone(raw)))
        said = {a: readout.attributes[a][int(v[0, 0].argmax())] for a, v in logits.items()}
        rows.append({"clip": path.name, "truth": readout_truth(truth), "said": said})
    return rows


def scores(rows: list[dict], attributes: list[str]) -> dict[str, float]:
    out = {}
    for a in attributes:
        truth = [r["truth"][a] for r in rows]
        out[a] = sum(r["said"][a] == r["truth"][a] for r in rows) / len(rows)
        out[f"{a} majority"] = Counter(truth).most_common(1)[0][1] / len(rows)
    return out


def plot(report: dict, path: Path) -> None:
    summary, actions = report["summary"], report["actions"]
    fig = Figure(figsize=(11, 4.2))
    ax, cm_ax = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.1]})
    names = [a for a in summary if not a.endswith("majority")]
    x = np.arange(len(names))
    ax.bar(x - 0.2, [summary[n]["mean"] for n in names], 0.4, yerr=[summary[n]["std"] for n in names], capsize=3,
           color="#4a7", label="readout")
    ax.bar(x + 0.2, [summary[f"{n} majority"]["mean"] for n in names], 0.4, color="#bbb", label="majority label")
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy on held-out people")
    ax.legend(fontsize=7)
    labels = report["action_labels"]
    cm = np.array(actions["confusion"], float)
    cm_ax.imshow(cm / cm.sum(1, keepdims=True).clip(min=1), cmap="Greens", vmin=0, vmax=1)
    for (i, j), n in np.ndenumerate(cm):
        if n:
            cm_ax.text(j, i, int(n), ha="center", va="center", fontsize=7)
    cm_ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=7)
    cm_ax.set_yticks(range(len(labels)), labels, fontsize=7)
    cm_ax.set_xlabel("named")
    cm_ax.set_ylabel("true action")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    import json

    import torch

    from pvchat.train.stages import base_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=50, help="clips per seed")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=Path("workspace/bench-readout"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    torch.set_num_threads(2)
    model = base_model("small", 0).eval()
    attributes = list(model.readout.attributes)
    runs = {seed: read_seed(model, args.out, seed, args.clips) for seed in args.seeds}
    per_seed = {seed: scores(rows, attributes) for seed, rows in runs.items()}
    summary = {k: {"mean": statistics.fmean(s[k] for s in per_seed.values()),
                   "std": statistics.pstdev([s[k] for s in per_seed.values()])} for k in per_seed[args.seeds[0]]}
    labels = model.readout.attributes["action"]
    confusion = np.zeros((len(labels), len(labels)), int)
    for rows in runs.values():
        for r in rows:
            confusion[labels.index(r["truth"]["action"]), labels.index(r["said"]["action"])] += 1
    report = {"command": f"python bench/readout.py --clips {args.clips} --seeds {' '.join(map(str, args.seeds))}",
              "clips_per_seed": args.clips, "seeds": args.seeds, "per_seed": per_seed, "summary": summary,
              "action_labels": labels,
              "actions": {"per_action": {a: {"right": int(confusion[i, i]), "clips": int(confusion[i].sum())}
                                         for i, a in enumerate(labels)}, "confusion": confusion.tolist()},
              "seconds": round(time.perf_counter() - t0, 1)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "readout.json").write_text(json.dumps(report, indent=1))
    plot(report, RESULTS / "readout.png")
    for k, v in summary.items():
        print(f"{k:25s} {v['mean']:.3f}±{v['std']:.3f}")
    print("per action:", {a: f"{v['right']}/{v['clips']}" for a, v in report["actions"]["per_action"].items()})


if __name__ == "__main__":
    main()
