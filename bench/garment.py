"""What caps clothing: the frozen body features, or outfits tied to people? A 2×2 on unseen people.

    python bench/garment.py [--clips 1500] [--seeds 0 1 2] [--steps 600] [--out workspace/bench-garment]

The ``small`` tower reads clothing from EfficientNet-Lite0 over a person's body crop
(model/person_tower.py). A linear probe on those frozen features names the top garment's kind
(t-shirt, sweater, shirt, jacket) at ~0.59 on people it has not seen (bench/perception.py), far
from the 0.80 that clothing answers need. Two things could cap it, and this bench separates them:

* **outfits** — in the world's clips a person wears their default outfit 65% of the time
  (``outfit_change`` 0.35), so a learner on few people can tie the garment to the person rather
  than to the pixels; alignment clips can instead draw a new outfit for every clip (1.0);
* **features** — ImageNet features, mean-pooled, frozen; or EfficientNet's last blocks (after
  block ``--cut``) and its head trained on the garment's kind and colour.

For each outfit setting it renders ``--clips`` one-person clips of the ``align`` people (pose,
light, colour cast, occlusion varied as the world does) and cuts each person's body as the tower
does, on 8 frames, from the world's face boxes (``train.pretrain.garment_data``; the tower takes
the boxes from dlib, which finds 98.6% of rendered faces). Then, per seed, a person-disjoint split
(a quarter of the people held out) and for each cell of the 2×2: train on the training people's
clips, score clip-level kind, colour and both on the held-out people's clips drawn as the world
draws them (``outfit_change`` 0.35). The frozen cell is a logistic regression on the mean-pooled
features (as the probes); the trained cell is ``pvchat pretrain``'s body reader
(``train.body_reader.train_body_reader``: EfficientNet's blocks after ``--cut`` and its head,
trained with a linear head per attribute), logits averaged over a clip's frames.

Writes bench/results/garment.{json,png}.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from bars import bar_panels, write_results  # bench/bars.py (the script's own folder)
from pvchat.model.body_reader import BodyReader
from pvchat.model.person_tower import PersonTower
from pvchat.offline.world.faces import face_split
from pvchat.offline.world.people import TOP_KINDS, make_people
from pvchat.train.body_reader import clip_accuracy, train_body_reader
from pvchat.train.pretrain import garment_data, garment_targets
from pvchat.weights import efficientnet_lite0

RESULTS = Path(__file__).parent / "results"
OUTFITS = {"as the world draws them (0.35)": 0.35, "new in every clip (1.0)": 1.0}
FEATURES = ("frozen", "last blocks trained")


def crops(tower: PersonTower, people, clips: int, outfit_change: float, seed: int, cache: Path) -> dict:
    """Block maps of body crops, the clip of each, per-clip labels (cached in ``cache``)."""
    if cache.with_suffix(".json").is_file():
        return {**load_file(str(cache)), "labels": json.loads(cache.with_suffix(".json").read_text())}
    maps, clip_of, labels = garment_data(tower, people, clips, seed=seed, outfit_change=outfit_change)
    cache.parent.mkdir(parents=True, exist_ok=True)
    save_file({"maps": maps, "clip": clip_of}, str(cache))
    cache.with_suffix(".json").write_text(json.dumps(labels))
    return {"maps": maps, "clip": clip_of, "labels": labels}


def run_cell(tower: PersonTower, train: dict, test: dict, held: set[str], classes: dict, features: str, seed: int,
             steps: int) -> dict:
    """Train on ``train``'s clips of people not in ``held``, score on ``test``'s clips of ``held``."""
    tr = torch.tensor([train["labels"][int(c)]["person"] not in held for c in train["clip"]])
    te = torch.tensor([test["labels"][int(c)]["person"] in held for c in test["clip"]])
    y = garment_targets(train["clip"][tr], train["labels"], classes)
    y_test = garment_targets(test["clip"][te], test["labels"], classes)
    t0 = time.perf_counter()
    reader = BodyReader(tower.cnn, tower.reader.cut)  # ImageNet's last blocks, as the frozen tower's
    if features == "frozen":
        with torch.no_grad():
            X = torch.cat([reader(m.float()) for m in train["maps"][tr].split(256)]).numpy()
        heads = nn.ModuleDict()
        for attr, names in classes.items():
            clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=0.3)).fit(X, y[attr].numpy())
            w = torch.zeros(len(names), X.shape[1])
            b = torch.full((len(names),), -1e4)  # classes the training people never wore: never chosen
            scaler, lr = clf[0], clf[1]
            coef = lr.coef_ if len(lr.classes_) > 2 else np.vstack([-lr.coef_, lr.coef_])
            icpt = lr.intercept_ if len(lr.classes_) > 2 else np.array([-lr.intercept_[0], lr.intercept_[0]])
            # the standardisation folded into one linear layer on the reader's features
            w[lr.classes_] = torch.from_numpy(coef / scaler.scale_).float()
            b[lr.classes_] = torch.from_numpy(icpt - (coef * scaler.mean_ / scaler.scale_).sum(1)).float()
            heads[attr] = nn.Linear(X.shape[1], len(names))
            heads[attr].weight.data, heads[attr].bias.data = w, b
    else:
        heads, _ = train_body_reader(reader, train["maps"][tr], y, {a: len(n) for a, n in classes.items()},
                                     steps=steps, seed=seed)
    acc = clip_accuracy(reader, heads, test["maps"][te], test["clip"][te], y_test)
    return {"kind": acc["kind"], "colour": acc["colour"], "both": acc["all"], "clips": len(set(test["clip"][te].tolist())),
            "train_crops": int(tr.sum()), "seconds": round(time.perf_counter() - t0, 1)}


def plot(summary: dict, path: Path) -> None:
    panels = {attr: {cell: summary[cell][attr] for cell in summary} for attr in ("kind", "colour", "both")}
    def tick(cell: str) -> str:  # "frozen\noutfits 0.35"
        features, outfits = cell.split(", outfits ")
        return f"{'frozen' if features == 'frozen' else 'trained'}\noutfits {outfits.split('(')[-1].rstrip(')')}"

    bar_panels(panels, path, "clip accuracy, unseen people", grey=lambda c: c.startswith("frozen"), target=0.8,
               tick=tick, rotation=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=1500, help="one-person clips rendered per outfit setting")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=600, help="training steps (batches of 64 crops) per trained cell")
    ap.add_argument("--out", type=Path, default=Path("workspace/bench-garment"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    tower = PersonTower(efficientnet_lite0(), image_size=288, max_people=1, body_reader=True)
    faces = face_split("align")
    people = make_people(len(faces), 7, faces=faces)
    sets = {name: crops(tower, people, args.clips, change, seed=1 + k,
                        cache=args.out / f"maps_{args.clips}_{change}.safetensors")
            for k, (name, change) in enumerate(OUTFITS.items())}
    test = sets["as the world draws them (0.35)"]
    classes = {"kind": list(TOP_KINDS), "colour": sorted({lab["colour"] for s in sets.values() for lab in s["labels"]})}
    runs = []
    for seed in args.seeds:
        ids = sorted(p.id for p in people)
        random.Random(seed).shuffle(ids)
        held = set(ids[: len(ids) // 4])
        for outfits, train in sets.items():
            for features in FEATURES:
                r = run_cell(tower, train, test, held, classes, features, seed, args.steps)
                runs.append({"seed": seed, "outfits": outfits, "features": features, **r})
                print(f"seed {seed} | outfits {outfits:32s} | {features:19s} | kind {r['kind']:.3f} "
                      f"colour {r['colour']:.3f} both {r['both']:.3f} ({r['clips']} clips)", flush=True)
    summary = {}
    for outfits in OUTFITS:
        for features in FEATURES:
            cell = [r for r in runs if r["outfits"] == outfits and r["features"] == features]
            summary[f"{features}, outfits {outfits}"] = {
                a: {"mean": statistics.fmean(r[a] for r in cell), "std": statistics.pstdev([r[a] for r in cell])}
                for a in ("kind", "colour", "both")}
    report = {"command": f"python bench/garment.py --clips {args.clips} --seeds {' '.join(map(str, args.seeds))} "
                         f"--steps {args.steps}",
              "people": len(people), "held_out_per_seed": len(people) // 4, "test": "held-out people, outfits 0.35",
              "runs": runs, "summary": summary, "seconds": round(time.perf_counter() - t0, 1)}
    write_results(RESULTS, "garment", report, plot)

if __name__ == "__main__":
    main()
