"""``pvchat compose``: training clips of 2 or 3 people together."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pvchat.choices import QA_RECIPES
from pvchat.commands import OneOf
from pvchat.errors import InputError


def compose(analysis: list[Path], *, out: Path, name: list[str] | None = None, clips: int = 16, seed: int = 0,
            pool: Path | None = None, frames: int = 16, width: int = 384, height: int = 256,
            qa: Annotated[str, OneOf(QA_RECIPES)] = "paper") -> int:
    """Compose training clips of 2 or 3 people, each cut out of their own reference video.

    Every clip shows the subjects (or some of them) side by side over one background, each with
    their own motion and augmentation, with existence, descriptive and relative-location
    questions ("Where is <A> relative to <B>?"). Writes OUT/clips/*.mp4, OUT/records/*.json (one
    per clip, so a re-run resumes), OUT/manifest.jsonl and OUT/summary.json.

    Args:
        analysis: the directories written by 'pvchat analyze', one per person (2 or 3).
        out: the data directory.
        name: the people's names, in the order of the analysis directories (--name A B).
        clips: how many clips.
        seed: random seed (the same seed gives the same clips).
        pool: images/videos of other people who stand in for absent subjects (optional).
        frames: frames per clip.
        width: frame width in pixels (three faces of at least 48 px need 320).
        height: frame height in pixels.
        qa: QA recipe: paper (15 joint existence pairs, 5 per type and person), demo or tiny (fewer,
            plus per-person existence pairs).
    """
    if not name:
        raise InputError("give each analysis directory a name: --name NAME [NAME ...]")
    if len(name) != len(analysis):
        raise InputError(f"{len(analysis)} analysis directories but {len(name)} names; give one --name per directory")
    # lazy, so that `pvchat --help` stays fast: cv2, dlib, torch
    from pvchat.io import read_json
    from pvchat.synth.compose import compose_dataset

    manifest = compose_dataset(list(zip(name, analysis)), out, clips=clips, seed=seed, progress=True, pool=pool,
                               num_frames=frames, width=width, height=height, qa=qa)
    summary = read_json(Path(out) / "summary.json")
    print(f"{summary['clips']} clips ({summary['with_all']} with everyone; present: "
          + ", ".join(f"{n} {k}" for n, k in summary["present"].items())
          + f"), {summary['qa_pairs']} QA pairs -> {manifest}")
    return 0
