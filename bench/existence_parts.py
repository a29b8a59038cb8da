"""Which learned part makes a pack answer "yes" for strangers: its people alone, or with what it shares.

    python bench/existence_parts.py DEMO_OUT [DEMO_OUT ...] [--name LABEL ...]

Each DEMO_OUT is a finished ``pvchat demo --preset small --out DEMO_OUT`` (its base, pack, query
clips and report.json). Every existence question of the report is asked again of two models:

* ``people only``: the base with the pack's people (token rows, query block, identity key);
* ``whole pack``: that, and the shared tensors personalisation trained (Q-former, projector, LoRA),
  which is what ``pvchat ask`` loads.

An answer is right when it starts with "Yes" for a clip with the person and with "No" for one
without (an answer such as "<Name> is in this video." is wrong on both). Accuracy by group and,
for the clips without the person, by how many people they show. Writes
bench/results/existence_parts.json.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def measure(out: Path) -> dict:
    from pvchat.model.pvchat import PVChat
    from pvchat.pack import add_pack_subjects, apply_shared, load_pack

    report = json.loads((out / "report.json").read_text())
    rows = [r for r in report["transcript"] if r["type"] == "existence"]
    pack = load_pack(out / "pack")
    result = {"subject": report["subject"], "recipe": report.get("recipe")}
    features = {}
    for label, shared in (("people only", False), ("whole pack", True)):
        model = PVChat.from_pretrained(out / "base" / "small")
        add_pack_subjects(model, pack)
        if shared:
            apply_shared(model, pack)
        model.eval()
        by = defaultdict(list)
        wrong = []
        for r in rows:
            if r["clip"] not in features:
                features[r["clip"]] = model.encode_video(model.read_video(out / "queries" / r["clip"])[1].unsqueeze(0))
            said = model.generate([r["question"]], vision_features=features[r["clip"]], max_new_tokens=16)[0]
            ok = said.startswith("Yes") if r["label"] else said.startswith("No")
            by[r["group"]].append(ok)
            if not r["label"]:
                by[f"absent, {len(r['people'])} people"].append(ok)
            if not ok:
                wrong.append({"clip": r["clip"], "people": r["people"], "answer": said})
        result[label] = {k: f"{sum(v)}/{len(v)}" for k, v in sorted(by.items())}
        result[label + ": wrong"] = wrong
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outs", type=Path, nargs="+")
    ap.add_argument("--name", action="append", default=None, help="a label per DEMO_OUT")
    ap.add_argument("--note", default="", help="what the runs were (base, recipe), kept in the results")
    args = ap.parse_args()
    names = args.name or [str(o) for o in args.outs]
    results = {"note": args.note, "runs": {}}
    for name, out in zip(names, args.outs):
        results["runs"][name] = measure(out)
        print(name, {k: v for k, v in results["runs"][name].items() if not k.endswith("wrong")}, flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "existence_parts.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
