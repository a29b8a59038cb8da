"""``pvchat pretrain``: align a base on the offline world."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path
from typing import Annotated

from pvchat.choices import PRESETS
from pvchat.commands import OneOf


def pretrain(out: Path = Path("workspace/pretrain"), preset: Annotated[str, OneOf(PRESETS)] = "small",
             clips: int = 480, warm_steps: int = 1200, steps: int = 200, seed: int = 0, workers: int = 2,
             install: bool = False) -> int:
    """Align a base on the offline world: all four question types, people never asked about later.

    Trains the tower's body reader (when the preset has one) on what the world's people of the
    align face split wear, renders clips of them (1-3 per clip, a new outfit each time) with QA
    from their ground truth (existence, clothing, action, left/right; "the person" for one-person
    clips), computes the frozen tower's features in WORKERS processes, starts each world person's
    identity key from their face, warms the Q-former and word projector up on the answers' words
    (no LLM), then trains the Q-former, projector, LoRA and one token + query block per world
    person (stage 2, cosine), and writes OUT/alignment.safetensors and OUT/alignment.json (command,
    recipe, data hash, warm-up recall, steps, loss, time; curves in OUT/train/training.png).
    Clips, features and the training checkpoint are reused when run again.

    Args:
        out: the work directory.
        preset: the model preset to align (small).
        clips: world clips to render.
        warm_steps: Q-former warm-up steps (batches of 16, no LLM).
        steps: whole-model steps (batches of 8).
        seed: world, data and training seed.
        workers: processes for the feature extraction.
        install: copy the result into the package (pvchat/assets/PRESET_alignment.safetensors), so
            new bases of PRESET start from it.
    """
    # lazy, so that `pvchat --help` stays fast: torch, transformers (the model and its training)
    from pvchat.model.presets import get_preset
    from pvchat.train.pretrain import align_base

    get_preset(preset)
    dest = align_base(Path(out), preset=preset, clips=clips, warm_steps=warm_steps, steps=steps, seed=seed,
                      workers=workers)
    print(f"aligned {preset}: {dest} ({Path(out) / 'alignment.json'})")
    if install:
        target = Path(str(resources.files("pvchat"))) / "assets" / f"{preset}_alignment.safetensors"
        target.parent.mkdir(exist_ok=True)
        shutil.copyfile(dest, target)
        shutil.copyfile(Path(out) / "alignment.json", target.with_suffix(".json"))
        print(f"installed: {target}")
    return 0
