"""``pvchat info``: a preset's parts and parameter counts."""

from __future__ import annotations

from typing import Annotated

from pvchat.choices import PRESETS
from pvchat.commands import OneOf


def info(preset: Annotated[str, OneOf(PRESETS)] = "tiny", subjects: int = 1) -> int:
    """Print a preset's parts and parameter counts (the paper preset is built on the meta device).

    Args:
        preset: model preset name.
        subjects: number of subjects (persons) to add.
    """
    # lazy, so that `pvchat --help` stays fast: torch, transformers (the model)
    import torch

    from pvchat.model.presets import get_preset
    from pvchat.model.pvchat import PVChat, count_parameters

    cfg = get_preset(preset)
    cfg.subjects = [f"person{i}" for i in range(subjects)]
    device = "meta" if preset == "paper" else "cpu"
    with torch.device(device):
        model = PVChat.from_config(cfg)
    counts = count_parameters(model)
    print(f"preset {preset!r} ({device}), {subjects} subject(s), routing {cfg.qformer.routing}")
    print(f"{'part':<12} {'parameters':>16} {'trainable':>14}")
    for part in ("vision", "qformer", "projector", "llm", "frame_position"):
        if part in counts:
            print(f"{part:<12} {counts[part]:>16,} {counts[part + '.trainable']:>14,}")
    print(f"{'total':<12} {counts['total']:>16,} {counts['trainable']:>14,}")
    return 0
