"""Captioner backends: the generic answer to a Table 6 question about one person in a clip.

The paper asks InternVideo2 each question with ``<sks>`` replaced by "the person" and keeps its
generic answer ("She is wearing …") for the rewrite step (§3.2, supp. S6, pvchat-official.md §5.2
step 10). Backends (registry :data:`CAPTIONERS`, built by :func:`make_captioner`):

- ``facts``: ground-truth facts (e.g. the offline world) phrased by :mod:`pvchat.qa.describe`.
- ``rules``: a rule-based scene describer over measurements (:mod:`pvchat.qa.measure`).
- ``vlm``: a vision-language model loaded from a local directory with transformers.
- ``openai``: an OpenAI-compatible HTTP endpoint (a local server), frames sent as JPEG data URLs.
"""

from __future__ import annotations

import base64
import random
import re
from dataclasses import dataclass, field
from typing import Callable, Mapping, Protocol

import cv2
import numpy as np

from pvchat.errors import InputError, unknown_choice
from pvchat.faces.demographics import LocalVLM
from pvchat.qa.describe import describe
from pvchat.qa.endpoint import ChatEndpoint
from pvchat.qa.facts import ClipFacts
from pvchat.qa.measure import facts_from_measurements
from pvchat.video import read_frames_uniform

FrameSource = Callable[[ClipFacts, int], np.ndarray]


@dataclass(frozen=True)
class CaptionRequest:
    """One descriptive question about person ``person`` of ``clip``.

    Attributes:
        qa_type: ``appearance``, ``action`` or ``location``.
        question: the Table 6 question with ``<sks>`` replaced by ``referent``.
        row: the Table 6 row number.
        clip: the clip's facts.
        person: index of the person asked about (present).
        referent: the generic words the question uses for that person ("the person on the left").
        tokens: subject name → token for the subjects in play (other people may be named with them).
        first_frame: stage 1 (paper §3.4): describe the first frame only.
    """

    qa_type: str
    question: str
    row: int
    clip: ClipFacts
    person: int
    referent: str = "the person"
    tokens: Mapping[str, str] = field(default_factory=dict)
    first_frame: bool = False


class Captioner(Protocol):
    """Anything with ``caption(request, rng) -> str`` (generic words, no subject token needed)."""

    def caption(self, request: CaptionRequest, rng: random.Random) -> str: ...


class FactsCaptioner:
    """Phrase the ground-truth facts of the clip (``facts`` backend)."""

    def caption(self, request: CaptionRequest, rng: random.Random) -> str:
        return describe(request.qa_type, request.clip, request.person, request.tokens, rng, request.row)


class RulesCaptioner:
    """Derive the words from ``clip.measurements`` with :func:`facts_from_measurements`, then phrase them."""

    def caption(self, request: CaptionRequest, rng: random.Random) -> str:
        clip = request.clip
        if not clip.measurements:
            raise InputError(f"clip {clip.clip_id or '?'}: the rules captioner needs measurements (face box, torso colour, track)")
        derived = facts_from_measurements(clip.measurements, clip.people, scene=clip.scene, clip_id=clip.clip_id)
        return describe(request.qa_type, derived, request.person, request.tokens, rng, request.row)


# ------------------------------------------------------------------ model captioners: prompt + parse

_ROLE = re.compile(r"^\s*(?:assistant|answer|response|a|gpt|model)\s*[:：]\s*", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def build_prompt(request: CaptionRequest) -> str:
    """The instruction sent to a VLM with the frames (ours, after supp. S6's generic question)."""
    n = len(request.clip.visible())
    scene = (f"There are {n} people in this video; the question is about {request.referent}. "
             if n > 1 else "")
    still = "Look at this image. " if request.first_frame else "Watch this video. "
    return (f"{still}{scene}Answer the question in one to three complete sentences and refer to "
            f"the person asked about as \"{request.referent}\" or with a pronoun.\nQuestion: {request.question}")


def parse_answer(raw: str, prompt: str = "", max_sentences: int = 3) -> str:
    """Clean a model's reply: drop an echoed prompt and role labels, quotes, extra sentences.

    Raises InputError when nothing is left.
    """
    text = str(raw).strip()
    if prompt and text.startswith(prompt):
        text = text[len(prompt):]
    text = text.split("\nQuestion:")[0]
    while True:
        stripped = _ROLE.sub("", text, count=1)
        if stripped == text:
            break
        text = stripped
    text = " ".join(text.split()).strip().strip('"“”').strip()
    if not text:
        raise InputError("the captioner returned an empty answer")
    sentences = [s for s in _SENTENCE_END.split(text) if s]
    text = " ".join(sentences[:max_sentences])
    if text[-1] not in ".!?":
        text += "."
    return text[:1].upper() + text[1:]


def read_clip_frames(clip: ClipFacts, num_frames: int) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of ``clip.video`` spread uniformly (paper §4.1)."""
    if not clip.video:
        raise InputError(f"clip {clip.clip_id or '?'} has no video path; the model captioners need frames")
    return read_frames_uniform(clip.video, num_frames)


class VLMCaptioner:
    """A vision-language model behind ``generate(frames, prompt) -> str`` (``vlm`` backend).

    Use :meth:`from_pretrained` for a local transformers checkpoint; tests pass a plain callable.
    """

    def __init__(self, generate: Callable[[np.ndarray, str], str], num_frames: int = 8,
                 max_sentences: int = 3, frames: FrameSource = read_clip_frames):
        self.generate, self.num_frames, self.max_sentences, self.frames = generate, num_frames, max_sentences, frames

    def caption(self, request: CaptionRequest, rng: random.Random) -> str:
        frames = self.frames(request.clip, 1 if request.first_frame else self.num_frames)
        prompt = build_prompt(request)
        return parse_answer(self.generate(frames, prompt), prompt, self.max_sentences)

    @classmethod
    def from_pretrained(cls, path: str, num_frames: int = 8, max_new_tokens: int = 96, max_time_s: float = 60.0,
                        **kwargs) -> "VLMCaptioner":
        """An image-text-to-text model (LLaVA, Qwen2-VL, Idefics …) from a local directory.

        Uses the project's loader :class:`pvchat.faces.demographics.LocalVLM` (frames as a list of
        images in the chat template, greedy decoding, ``local_files_only``; nothing is downloaded).
        """
        return cls(LocalVLM(path, max_new_tokens=max_new_tokens, max_time_s=max_time_s), num_frames=num_frames,
                   **kwargs)


def jpeg_data_url(frame: np.ndarray, max_side: int = 448) -> str:
    """An RGB frame as a ``data:image/jpeg;base64,…`` URL, downscaled so max(H, W) <= max_side."""
    img = np.asarray(frame, dtype=np.uint8)
    scale = max_side / max(img.shape[:2])
    if scale < 1:
        img = cv2.resize(img, (max(1, round(img.shape[1] * scale)), max(1, round(img.shape[0] * scale))),
                         interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:  # pragma: no cover (cv2 encodes any uint8 image)
        raise InputError("could not encode a frame as JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


class OpenAICaptioner:
    """Frames + question to an OpenAI-compatible endpoint (``openai`` backend)."""

    def __init__(self, endpoint: ChatEndpoint | None = None, num_frames: int = 4, max_side: int = 448,
                 max_sentences: int = 3, frames: FrameSource = read_clip_frames, **endpoint_kwargs):
        self.endpoint = endpoint if endpoint is not None else ChatEndpoint(**endpoint_kwargs)
        self.num_frames, self.max_side, self.max_sentences, self.frames = num_frames, max_side, max_sentences, frames

    def messages(self, request: CaptionRequest) -> list[dict]:
        frames = self.frames(request.clip, 1 if request.first_frame else self.num_frames)
        prompt = build_prompt(request)
        parts = [{"type": "text", "text": prompt}]
        parts += [{"type": "image_url", "image_url": {"url": jpeg_data_url(f, self.max_side)}} for f in frames]
        return [{"role": "system", "content": "You are a helpful assistant that describes videos."},
                {"role": "user", "content": parts}]

    def caption(self, request: CaptionRequest, rng: random.Random) -> str:
        return parse_answer(self.endpoint.chat(self.messages(request)), build_prompt(request), self.max_sentences)


CAPTIONERS: dict[str, Callable[..., Captioner]] = {
    "facts": FactsCaptioner,
    "rules": RulesCaptioner,
    "vlm": VLMCaptioner.from_pretrained,
    "openai": OpenAICaptioner,
}


def make_captioner(name: str, **kwargs) -> Captioner:
    """Build a captioner by registry name (``facts``, ``rules``, ``vlm``, ``openai``).

    ``vlm`` needs ``path=`` (a local model directory); ``openai`` needs ``base_url=`` and ``model=``
    (or ``endpoint=``).
    """
    if name not in CAPTIONERS:
        raise unknown_choice("captioner", name, CAPTIONERS)
    return CAPTIONERS[name](**kwargs)
