"""``pvchat demo``: learn one person from one video and question held-out clips, end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pvchat.choices import PRESET, PRESETS
from pvchat.commands import OneOf


def demo(out: Path = Path("workspace/demo"), quick: bool = False, seed: int = 0,
         preset: Annotated[str, OneOf(PRESETS)] = PRESET) -> int:
    """Learn one person of the offline world from one reference video, then question held-out clips.

    Renders a small world of real faces, analyses the person's reference video, synthesizes a
    training set (positives from that video, hard negatives from other people), trains the model
    in two stages and asks "Is <Name> in this video?" about clips with the person, with strangers
    and with look-alikes it has never seen; with ``small`` also what the person wears and does, and
    beside someone else, on which side of them. Prints the metrics and a transcript; writes
    report.json, eval.png, the training plots and the person's concept pack (OUT/pack) under OUT,
    learned by the stages 'pvchat learn' runs (pvchat.learn).

    Args:
        out: where everything is written (re-running resumes).
        quick: a smaller world and half the query clips (with small, also less training: recipe small-quick).
        seed: world and training seed.
        preset: the model (small: real pretrained parts, all question types; face: identity only).
    """
    # lazy, so that `pvchat --help` stays fast: torch, transformers, dlib (the whole pipeline)
    from pvchat.offline.demo import run_demo

    report = run_demo(Path(out), quick=quick, seed=seed, preset=preset)
    e = report["existence"]
    print(f"\nLearned <{report['subject']}> from one reference video in {report['seconds']} s "
          f"({', '.join(f'{k} {v} s' for k, v in report['timings_s'].items())}).")
    print(f"Existence accuracy on {e['n']} held-out clips: {e['accuracy']:.2f} "
          f"(with the person {report['by_group']['subject']:.2f}, strangers {report['by_group']['stranger']:.2f}, "
          f"look-alikes {report['by_group']['hard negative']:.2f}; unparsed answers {e['unparsed']:.2f})")
    for kind, words in (("clothing", "names the top's colour and kind"), ("action", "names the action"),
                        ("location", "left/right of the other person")):
        if report.get(kind):
            print(f"{kind.capitalize()} ({words}) on the {report[kind]['n']} clips with the person: "
                  f"{report[kind]['accuracy']:.2f}")
    for label, b in report["baselines"].items():
        parts = [f"existence {b['existence']['accuracy']:.2f}" if b.get("existence") else None,
                 *(f"{k} {b[k]['accuracy']:.2f}" if b.get(k) else None for k in ("clothing", "action", "location"))]
        if any(parts):
            print(f"  baseline, {label}: " + ", ".join(p for p in parts if p))
    print("\nTranscript:")
    shown = [r for r in report["transcript"] if r["type"] == "existence"][:4]
    shown += [next(r for r in report["transcript"] if r["type"] == kind)
              for kind in ("appearance", "action", "location") if any(r["type"] == kind for r in report["transcript"])]
    for r in shown:
        truth = ("present" if r["label"] else "absent") if r["type"] == "existence" else f"truth: {r['truth']}"
        print(f"  [{r['clip']}, {r['group']}, {truth}] Q: {r['question']}  A: {r['answer']}")
    print(f"\nReport: {Path(out) / 'report.json'}; plots: {Path(out) / 'eval.png'}, "
          f"{Path(out) / 'run' / 'stage2' / 'training.png'}")
    return 0
