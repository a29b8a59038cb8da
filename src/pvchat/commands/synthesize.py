"""``pvchat synthesize``: a training set from one analysed reference video."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from pvchat.choices import GENERATORS, SYNTH_RECIPES
from pvchat.commands import OneOf


def synthesize(analysis: Path, name: str, out: Path, pool: Path | None = None,
               recipe: Annotated[str, OneOf(SYNTH_RECIPES)] = "paper",
               backend: Annotated[str, OneOf(GENERATORS)] = "classic") -> int:
    """Turn an analysed reference video into a training set: positives, hard negatives, QA, manifest.

    Writes OUT/clips/*.mp4, OUT/records/*.json (one per clip, so a re-run resumes), OUT/manifest.jsonl
    and OUT/summary.json.

    Args:
        analysis: the directory written by 'pvchat analyze'.
        name: the person's name; questions will call them <NAME>.
        out: the data directory.
        pool: images/videos of other people for hard negatives (default: the offline world's people).
        recipe: how much data.
        backend: positive-clip generator (classic runs on CPU; the others need a GPU and local weights).
    """
    # lazy, so that `pvchat --help` stays fast: cv2, dlib, torch; a backend's diffusers
    from pvchat.offline.pool import world_pool  # the offline world's people: the pool when --pool is not given
    from pvchat.synth.pipeline import synthesize_dataset

    manifest = synthesize_dataset(analysis, name, out, pool=world_pool() if pool is None else pool, recipe=recipe,
                                  backend=backend)
    summary = json.loads((Path(out) / "summary.json").read_text())
    print(f"{summary['clips']} clips ({summary['positives']} positive, {summary['negatives']} negative), "
          f"{summary['qa_pairs']} QA pairs -> {manifest}")
    return 0
