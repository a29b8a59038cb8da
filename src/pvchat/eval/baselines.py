"""Answerers that keep a report honest: always yes, always no, and a base model with nobody learned.

Every report puts the evaluated answerer beside them: an existence accuracy near always-yes's or
always-no's is guessing; the training-free face baseline (:mod:`pvchat.eval.face_baseline`) is
what face matching alone gets; the base model asked about "the person" is what the base sees
without personalisation.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pvchat.model.prompt import MENTION
from pvchat.model.pvchat import PVChat
from pvchat.train.stages import build_base
from pvchat.workspace import BASE_SEED, DEFAULT_HOME, base_dir


def _tokens(question: str) -> str:
    return " and ".join(m.group(0) for m in MENTION.finditer(question)) or "the person"


def always_yes(video: str, question: str, subject: str) -> str:
    """Says every asked person is there, and nothing else."""
    return f"Yes, {_tokens(question)} is in this video."


def always_no(video: str, question: str, subject: str) -> str:
    """Says no asked person is there."""
    return f"No, {_tokens(question)} is not in this video."


always_yes.name = "always-yes"  # type: ignore[attr-defined]
always_no.name = "always-no"  # type: ignore[attr-defined]


def the_person(question: str) -> str:
    """The question about "the person" instead of a learned name (``<Anna>`` → ``the person``)."""
    return MENTION.sub("the person", question)


def base_answerer(preset: str | None, home: Path | None = None, max_new_tokens: int = 48,
                  directory: Path | None = None):
    """``answer_fn`` over a subject-free base asked every question about "the person": the base of
    ``preset`` (built once under ``HOME/base/<preset>``, as ``pvchat learn`` builds it), or the
    preset base in ``directory`` (the one a pack was learned on)."""
    if directory is None:
        directory = build_base(base_dir(preset, Path(home) if home is not None else DEFAULT_HOME), preset, BASE_SEED)
    model = PVChat.from_pretrained(directory).eval()
    preset = preset or model.config.preset or Path(directory).name
    cache: dict[str, object] = {}

    def answer(video: str, question: str, subject: str) -> str:
        if video not in cache:
            pixels = model.read_video(video)[1].unsqueeze(0)
            with torch.no_grad():
                cache.clear()
                cache[video] = model.encode_video(pixels)
        return model.generate([the_person(question)], vision_features=cache[video], max_new_tokens=max_new_tokens)[0]

    answer.name = f"base-{preset}"  # type: ignore[attr-defined]
    answer.describe = lambda: {"base": str(directory), "preset": preset,  # type: ignore[attr-defined]
                               "asked_about": "the person"}
    return answer
