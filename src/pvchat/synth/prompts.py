"""The prompt library for generating positive clips (PVChat Fig. 6, supp. S6 and Fig. 7).

Fig. 6's hierarchy: gender (male / female) → age (young / middle-aged / elderly) → scenario (gym,
restaurant, school, office, park, …) → descriptions. The descriptions (ours; ``prompt_library.json``)
each name an action, a setting and a camera move, and hold a ``{subject}`` slot that
:meth:`PromptLibrary.render` fills with words such as "a young woman", chosen from the subject's
demographics (paper §3.2: InternVideo2 labels gender and age; they anchor identity). Supp. Fig. 7's
PhotoMaker image prompts are kept verbatim as :meth:`PromptLibrary.image_prompts`.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from pvchat.errors import InputError, unknown_choice
from pvchat.qa.generate import as_rng

GENDERS = ("male", "female")
AGES = ("young", "middle-aged", "elderly")
_GENDER_ALIASES = {"man": "male", "woman": "female", "m": "male", "f": "female"}
_AGE_ALIASES = {"middle_aged": "middle-aged", "middle aged": "middle-aged", "middle": "middle-aged", "old": "elderly"}
_NOUNS = {"male": "man", "female": "woman"}


@dataclass(frozen=True)
class PromptEntry:
    """One description with its place in the hierarchy."""

    gender: str
    age: str
    scenario: str
    text: str


def _norm(value: str | None, aliases: dict[str, str], choices: tuple[str, ...], kind: str) -> str | None:
    if value is None or str(value).strip() == "":  # the official JSON writes "" for unknown
        return None
    v = aliases.get(str(value).strip().lower(), str(value).strip().lower())
    if v not in choices:
        raise unknown_choice(kind, str(value), choices)
    return v


def subject_words(gender: str | None = None, age: str | None = None) -> str:
    """Words for the ``{subject}`` slot: ``"a young woman"``, ``"an elderly man"``, ``"a person"``."""
    g = _norm(gender, _GENDER_ALIASES, GENDERS, "gender")
    a = _norm(age, _AGE_ALIASES, AGES, "age group")
    words = " ".join(w for w in (a, _NOUNS.get(g or "", "person")) if w)
    return ("an " if words[0] in "aeiou" else "a ") + words


class PromptLibrary:
    """gender → age → scenario → descriptions, loaded from JSON.

    Args:
        data: the parsed JSON (see ``prompt_library.json``); use :meth:`load` normally.
    """

    def __init__(self, data: dict[str, Any]):
        try:
            library = data["library"]
            self.placeholder: str = data.get("subject_placeholder", "{subject}")
            self._scenarios: dict[str, str] = dict(data["scenarios"])
        except (KeyError, TypeError):
            raise InputError("prompt library JSON lacks 'library' or 'scenarios'") from None
        self._suffix: dict[str, str] = dict(data.get("identity_suffix", {}))
        self._image_prompts: tuple[str, ...] = tuple(data.get("image_prompts", ()))
        entries = []
        for gender, ages in library.items():
            g = _norm(gender, _GENDER_ALIASES, GENDERS, "gender")
            for age, scenarios in ages.items():
                a = _norm(age, _AGE_ALIASES, AGES, "age group")
                for scenario, texts in scenarios.items():
                    if scenario not in self._scenarios:
                        raise InputError(f"prompt library: scenario {scenario!r} is not declared in 'scenarios'")
                    for t in texts:
                        if self.placeholder not in t:
                            raise InputError(f"prompt library: description without {self.placeholder}: {t[:60]!r}")
                        entries.append(PromptEntry(g, a, scenario, t))
        if not entries:
            raise InputError("prompt library is empty")
        self.entries: tuple[PromptEntry, ...] = tuple(entries)

    @classmethod
    def load(cls, path: str | Path | None = None) -> "PromptLibrary":
        """The bundled library, or one from ``path`` (same JSON layout)."""
        if path is None:
            return _bundled()
        try:
            return cls(json.loads(Path(path).read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise InputError(f"prompt library {path} does not exist") from None
        except json.JSONDecodeError as e:
            raise InputError(f"prompt library {path} is not valid JSON: {e.msg} at line {e.lineno}") from None

    def __len__(self) -> int:
        return len(self.entries)

    def scenarios(self) -> list[str]:
        """Scenario names, in the library's order."""
        return list(self._scenarios)

    def describe_scenario(self, scenario: str) -> str:
        if scenario not in self._scenarios:
            raise unknown_choice("scenario", scenario, self._scenarios)
        return self._scenarios[scenario]

    def select(self, gender: str | None = None, age: str | None = None, scenario: str | None = None) -> list[PromptEntry]:
        """Entries matching the given levels (None → any)."""
        g = _norm(gender, _GENDER_ALIASES, GENDERS, "gender")
        a = _norm(age, _AGE_ALIASES, AGES, "age group")
        if scenario is not None and scenario not in self._scenarios:
            raise unknown_choice("scenario", scenario, self._scenarios)
        out = [e for e in self.entries
               if (g is None or e.gender == g) and (a is None or e.age == a) and (scenario is None or e.scenario == scenario)]
        if not out:
            raise InputError(f"no prompt for gender={g}, age={a}, scenario={scenario}")
        return out

    def sample(self, gender: str | None = None, age: str | None = None, scenario: str | None = None,
               rng: random.Random | int | None = None) -> PromptEntry:
        """One entry at random among those matching (missing demographics → any)."""
        return as_rng(rng).choice(self.select(gender, age, scenario))

    def sample_many(self, n: int, gender: str | None = None, age: str | None = None, scenario: str | None = None,
                    rng: random.Random | int | None = None) -> list[PromptEntry]:
        """``n`` distinct entries (the official pipeline draws 10 per subject without replacement);
        when fewer match, all of them are used once before any repeats."""
        pool = self.select(gender, age, scenario)
        gen, out = as_rng(rng), []
        while len(out) < n:
            out += gen.sample(pool, min(len(pool), n - len(out)))
        return out

    def render(self, description: str | PromptEntry, subject_words: str, identity_suffix: bool = False) -> str:
        """Fill ``{subject}`` with ``subject_words`` ("a young woman", "Anna"), capitalised at the start.

        With ``identity_suffix`` (and a gendered entry) the official ConsisID sentence is appended:
        "She has the same facial structure and skin color as the reference image."
        """
        entry = description if isinstance(description, PromptEntry) else None
        text = entry.text if entry else str(description)
        if self.placeholder not in text:
            raise InputError(f"description has no {self.placeholder} slot: {text[:60]!r}")
        words = str(subject_words).strip()
        if not words:
            raise InputError("subject words are empty")
        head, _, _ = text.partition(self.placeholder)
        at_start = head.strip() == "" or head.rstrip().endswith((".", "!", "?"))
        first = words[:1].upper() + words[1:] if at_start else words
        out = text.replace(self.placeholder, first, 1).replace(self.placeholder, words)
        if identity_suffix and entry is not None and entry.gender in self._suffix:
            out += " " + self._suffix[entry.gender]
        return out

    def image_prompts(self, gender: str, age: str) -> list[str]:
        """Supp. Fig. 7's PhotoMaker prompts with ``{age}`` and ``{gender}`` filled ("young female img …")."""
        g = _norm(gender, _GENDER_ALIASES, GENDERS, "gender")
        a = _norm(age, _AGE_ALIASES, AGES, "age group")
        return [p.format(age=a, gender=g) for p in self._image_prompts]


@lru_cache(maxsize=1)
def _bundled() -> PromptLibrary:
    text = resources.files("pvchat.synth").joinpath("prompt_library.json").read_text(encoding="utf-8")
    return PromptLibrary(json.loads(text))
