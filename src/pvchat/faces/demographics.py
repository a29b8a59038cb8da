"""Gender and age group of the subject, for the generation prompts (paper §3.2, supp. Fig. 6-7).

The paper asks InternVideo2 about the video with a fixed prompt and gets gender (male/female) and
an age group (young/middle-aged/elderly). Backends, by name (:data:`BACKENDS`):

- ``none``: no demographics; the pipeline continues without them.
- ``given``: the user says (``gender=``, ``age=``), validated.
- ``vlm`` / ``vlm:<dir>``: a vision-language model loaded from a LOCAL directory with
  transformers (``<dir>`` or the ``PVCHAT_VLM_DIR`` environment variable), asked the paper's
  prompt with 8 frames of the video (with several people: the subject's face crops, see
  ``analyze._vlm_frames``). Unlike the official script (which can loop forever and
  defaults to "male"), tries and time are bounded and an unreadable answer gives ``None``.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from pvchat.errors import ConfigError, InputError, unknown_choice

GENDERS = ("male", "female")
AGES = ("young", "middle-aged", "elderly")

# Supplementary Fig. 6, verbatim.
PROMPT = (
    'According to the video and just told me two words about gender from "male, female" and age from '
    '"young, middle-aged, elderly" about the protagonist of the video.'
)
# The official follow-up when the age is missing (get_age_gender.py).
AGE_PROMPT = (
    "Looking at the person in the video, which age group does this person belong to - young (under 35), "
    "middle-aged (35-60), or elderly (over 60)?"
)


@dataclass
class Demographics:
    """What is known about the subject; a field is None when unknown."""

    gender: str | None
    age: str | None
    source: str  # backend name

    def to_dict(self) -> dict:
        return {"gender": self.gender, "age": self.age, "source": self.source}


def parse_gender(text: str) -> str | None:
    """'female'/'woman' → female, 'male'/'man' → male (whole words); both or neither → None."""
    t = text.lower()
    female = re.search(r"\b(female|woman|women|girl|lady)\b", t) is not None
    male = re.search(r"\b(male|man|men|boy|gentleman)\b", t) is not None
    if female == male:
        return None
    return "female" if female else "male"


def parse_age(text: str) -> str | None:
    """The one age group named in ``text`` (middle-aged also as 'middle aged'/'middle_aged')."""
    t = text.lower()
    found = [a for a, pat in (("young", r"\byoung\b"), ("middle-aged", r"\bmiddle[-_ ]aged\b"), ("elderly", r"\b(elderly|old)\b"))
             if re.search(pat, t)]
    return found[0] if len(found) == 1 else None


def validate(gender: str | None, age: str | None) -> tuple[str | None, str | None]:
    """Normalise user-given values; anything outside the paper's categories is a ConfigError."""
    g = gender.strip().lower() if gender else None
    a = age.strip().lower().replace("_", "-").replace(" ", "-") if age else None
    if g is not None and g not in GENDERS:
        raise ConfigError(f"gender must be one of {', '.join(GENDERS)}, got {gender!r}")
    if a is not None and a not in AGES:
        raise ConfigError(f"age must be one of {', '.join(AGES)}, got {age!r}")
    return g, a


# A VLM "ask" function: (frames (T, H, W, 3) uint8, prompt) -> answer text.
AskFn = Callable[[np.ndarray, str], str]


def ask_demographics(
    ask: AskFn, frames: np.ndarray, max_tries: int = 3, time_budget_s: float = 300.0,
    clock: Callable[[], float] = time.monotonic,
) -> Demographics:
    """Ask the paper's prompt, then the official age follow-up, at most ``max_tries`` calls in all.

    Stops early when both fields are known or ``time_budget_s`` has passed; what stays unknown
    is None. Exceptions from ``ask`` count as a failed try.
    """
    gender = age = None
    start = clock()
    for k in range(max(1, max_tries)):
        if k and clock() - start > time_budget_s:
            break
        prompt = PROMPT if (k == 0 or gender is None) else AGE_PROMPT
        try:
            answer = ask(frames, prompt)
        except Exception:  # noqa: BLE001 - a model failure is a failed try, bounded by max_tries
            continue
        gender = gender or parse_gender(answer)
        age = age or parse_age(answer)
        if gender and age:
            break
    return Demographics(gender=gender, age=age, source="vlm")


class LocalVLM:
    """A transformers image-text-to-text model from a local directory, asked with video frames."""

    def __init__(self, model_dir: str | os.PathLike, max_new_tokens: int = 24, max_time_s: float = 60.0):
        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise InputError(f"{model_dir}: not a local transformers model directory (no config.json)")
        self.processor = AutoProcessor.from_pretrained(str(model_dir), local_files_only=True)
        self.model = AutoModelForImageTextToText.from_pretrained(str(model_dir), local_files_only=True).eval()
        self.max_new_tokens, self.max_time_s = max_new_tokens, max_time_s

    def __call__(self, frames: np.ndarray, prompt: str) -> str:
        images = [Image.fromarray(f) for f in frames]
        messages = [{"role": "user", "content": [*({"type": "image"} for _ in images), {"type": "text", "text": prompt}]}]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        inputs = self.processor(text=text, images=images, return_tensors="pt")
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                      max_time=self.max_time_s)
        new = out[0, inputs["input_ids"].shape[1]:]
        return self.processor.decode(new, skip_special_tokens=True)


def _vlm_dir(spec: str) -> str:
    _, _, path = spec.partition(":")
    path = path or os.environ.get("PVCHAT_VLM_DIR", "")
    if not path:
        raise ConfigError("demographics 'vlm' needs a local model: use 'vlm:<dir>' or set PVCHAT_VLM_DIR")
    return path


BACKENDS = ("none", "given", "vlm")


def estimate_demographics(
    backend: str,
    frames: np.ndarray | None = None,
    gender: str | None = None,
    age: str | None = None,
    ask: AskFn | None = None,
    max_tries: int = 3,
    time_budget_s: float = 300.0,
) -> Demographics | None:
    """Run the named backend; ``None`` for ``none``. ``ask`` overrides the model of ``vlm``.

    ``frames`` (T, H, W, 3) uint8 are what the VLM sees (the paper's 8 uniform frames).
    """
    name = backend.split(":", 1)[0]
    if name not in BACKENDS:
        raise unknown_choice("demographics backend", backend, BACKENDS)
    if name == "none":
        if gender or age:
            g, a = validate(gender, age)
            return Demographics(gender=g, age=a, source="given")
        return None
    if name == "given":
        if not gender and not age:
            raise ConfigError("demographics 'given' needs --gender and/or --age")
        g, a = validate(gender, age)
        return Demographics(gender=g, age=a, source="given")
    if frames is None or len(frames) == 0:
        raise ValueError("the vlm backend needs frames")
    ask = ask or LocalVLM(_vlm_dir(backend))
    found = ask_demographics(ask, np.asarray(frames), max_tries=max_tries, time_budget_s=time_budget_s)
    if gender or age:  # the user's word wins over the model's
        g, a = validate(gender, age)
        found = Demographics(gender=g or found.gender, age=a or found.age, source="given+vlm")
    return found
