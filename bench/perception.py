"""What the small preset's frozen eyes can tell: linear probes on its person tokens, per attribute.

    python bench/perception.py [--clips 240] [--seeds 0 1 2] [--out workspace/bench-perception]

Any reader (Q-former, projector, LLM) can at best say what its input holds. This measures that
ceiling for the ``small`` preset's person tower (model/person_tower.py) on people it has never
seen: world clips of one person each (people of the ``align`` face split, pose, light, colour
cast and occlusion varied as the world does), the tower's tokens (8 frames, as the model samples
them), the person's track averaged over the frames it is present in, then per token part and for
all parts together a logistic regression trained on some people and scored on the others
(person-disjoint splits, one per seed):

* clothing colour (the top garment's, 14 colours), clothing kind (t-shirt, sweater, shirt, jacket),
  action (9 actions);
* beside each, the majority class of the training people (what a reader that does not look gets).

Writes bench/results/perception.json and perception.png (mean ± std over the splits). Clips and
features stay in ``--out`` (a rerun reuses them).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import numpy as np

from bars import bar_panels, write_results  # bench/bars.py (the script's own folder)

RESULTS = Path(__file__).parent / "results"
ATTRIBUTES = ("colour", "kind", "action")


def parts():
    from pvchat.model.person_tower import BOX, CNN_DIM, COLOUR, EMB, SNIPPET, TOKEN_DIM, TRACK

    return {"body CNN": (0, CNN_DIM), "face embedding": (EMB, BOX), "face geometry": (BOX, COLOUR),
            "torso colour": (COLOUR, TRACK), "track motion": (TRACK, SNIPPET), "snippet": (SNIPPET, TOKEN_DIM), "all": (0, TOKEN_DIM)}


def make_data(out: Path, clips: int) -> list[dict]:
    """Render ``clips`` one-person clips, extract the tower's features; one row per clip with a face."""
    from tqdm.auto import tqdm

    from pvchat.model.person_tower import PRESENT
    from pvchat.model.presets import get_preset
    from pvchat.offline.world.api import World
    from pvchat.offline.world.faces import face_split
    from pvchat.offline.world.people import make_people
    from pvchat.train.pretrain import extract_features
    from pvchat.video import write_video

    faces = face_split("align")
    world = World(people=make_people(len(faces), 7, faces=faces), seed=5, num_frames=16, max_people_per_clip=1)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    truth = []
    for i in tqdm(range(clips), desc="clips"):
        path = out / "clips" / f"p{i:04d}.mp4"
        rendered = world.render_clip(i)
        if not path.is_file():
            write_video(path, rendered.frames, fps=world.fps)
        p = rendered.truth["people"][0]
        truth.append((path, p["id"], {"colour": p["outfit"]["top_colour"], "kind": p["outfit"]["top"],
                                      "action": p["action"]}))
    feats = extract_features(get_preset("small"), [t[0] for t in truth], out / "features")
    rows = []
    for path, person, labels in truth:
        f = feats[path][0]  # (T, N, C): scene tokens, then the person slots
        people = f[:, -3:]
        present = people[..., PRESENT] > 0.5  # (T, 3)
        if not present.any():
            continue
        k = int(present.sum(0).argmax())  # the track seen most (one person per clip)
        rows.append({"person": person, "x": people[present[:, k], k].mean(0).numpy(), **labels})
    return rows


def probe(rows: list[dict], seed: int) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    people = sorted({r["person"] for r in rows})
    random.Random(seed).shuffle(people)
    test = set(people[: max(1, len(people) // 4)])
    train = [r for r in rows if r["person"] not in test]
    held = [r for r in rows if r["person"] in test]
    out = {}
    for attr in ATTRIBUTES:
        y, y_test = [r[attr] for r in train], [r[attr] for r in held]
        majority = max(set(y), key=y.count)
        scores = {"majority": sum(v == majority for v in y_test) / len(y_test)}
        for name, (a, b) in parts().items():
            X = np.stack([r["x"][a:b] for r in train])
            clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=0.3)).fit(X, y)
            scores[name] = float(clf.score(np.stack([r["x"][a:b] for r in held]), y_test))
        out[attr] = scores
    return {"test_people": len(test), "train_rows": len(train), "test_rows": len(held), "scores": out}


def plot(summary: dict, path: Path) -> None:
    bar_panels(summary, path, "accuracy on unseen people", grey=lambda n: n == "majority")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=240)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=Path("workspace/bench-perception"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    rows = make_data(args.out, args.clips)
    runs = [probe(rows, s) for s in args.seeds]
    summary = {attr: {name: {"mean": statistics.fmean(r["scores"][attr][name] for r in runs),
                             "std": statistics.pstdev([r["scores"][attr][name] for r in runs])}
                      for name in runs[0]["scores"][attr]} for attr in ATTRIBUTES}
    report = {"command": f"python bench/perception.py --clips {args.clips} --seeds {' '.join(map(str, args.seeds))}",
              "rows": len(rows), "people": len({r['person'] for r in rows}), "seeds": args.seeds, "runs": runs,
              "summary": summary, "seconds": round(time.perf_counter() - t0, 1)}
    write_results(RESULTS, "perception", report, plot)

if __name__ == "__main__":
    main()
