"""The benchmark recipe: how big the offline-world query set is (``pvchat/recipes/benchmark/default.yaml``
is the default; read by the one recipe loader, :mod:`pvchat.recipes`)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping

from pvchat import recipes
from pvchat.errors import ConfigError

GROUPS = ("positive", "stranger", "hard_negative")
QUESTION_TYPES = ("existence", "appearance", "action", "location")
UNITS = {1: "single", 2: "pair", 3: "triple"}  # how many people a subject of the benchmark is


@dataclass(frozen=True)
class BenchmarkRecipe:
    """Sizes and seed of a benchmark (see ``pvchat/recipes/benchmark/default.yaml`` for what each field
    means). ``questions`` per type; a type it does not name gets none."""

    seed: int = 0
    world_people: int = 40
    pool_people: int = 12
    subjects: int = 6  # one-person subjects
    pairs: int = 0  # two people learned together (both in the positive clips)
    triples: int = 0  # three people learned together
    variation: float = 0.0  # how much a face differs between query clips and its reference (0..1)
    lookalikes: int = 0  # made look-alikes per subject person (its face blended with its nearest query person's)
    faces: str | None = None  # a photo folder DIR/<person>/*.jpg to take the people from (None: offline faces)
    clips_per_group: int = 6
    hard_negatives: int = 3
    max_people_per_clip: int = 3
    num_frames: int = 16
    fps: float = 8.0
    size: tuple[int, int] = (480, 360)
    questions: Mapping[str, int] = field(default_factory=lambda: {t: 1 for t in QUESTION_TYPES})

    def __post_init__(self) -> None:
        if self.questions is None:  # "questions:" left empty in a YAML file: the default
            object.__setattr__(self, "questions", {t: 1 for t in QUESTION_TYPES})
        if not isinstance(self.questions, Mapping):
            raise ConfigError("benchmark recipe: questions must be a mapping of question type to count")
        object.__setattr__(self, "size", tuple(int(v) for v in self.size))
        object.__setattr__(self, "questions", {t: 0 for t in QUESTION_TYPES} | dict(self.questions))
        for k in ("world_people", "subjects", "clips_per_group", "hard_negatives", "num_frames"):
            if not isinstance(getattr(self, k), int) or getattr(self, k) < 1:
                raise ConfigError(f"benchmark recipe: {k} must be an integer >= 1, got {getattr(self, k)!r}")
        for k in ("pool_people", "pairs", "triples", "lookalikes"):
            if not isinstance(getattr(self, k), int) or getattr(self, k) < 0:
                raise ConfigError(f"benchmark recipe: {k} must be an integer >= 0, got {getattr(self, k)!r}")
        if not isinstance(self.variation, (int, float)) or not 0.0 <= self.variation <= 1.0:
            raise ConfigError(f"benchmark recipe: variation must be between 0 and 1, got {self.variation!r}")
        if self.faces is not None and not isinstance(self.faces, str):
            raise ConfigError(f"benchmark recipe: faces must be a folder path or null, got {self.faces!r}")
        if not 1 <= self.max_people_per_clip <= 3:
            raise ConfigError(f"benchmark recipe: max_people_per_clip must be 1, 2 or 3, got {self.max_people_per_clip}")
        need = 3 if self.triples else 2 if self.pairs else 1
        if self.max_people_per_clip < need:
            raise ConfigError(f"benchmark recipe: max_people_per_clip must be >= {need} for "
                              f"{'triples' if self.triples else 'pairs'}, got {self.max_people_per_clip}")
        if not isinstance(self.fps, (int, float)) or self.fps <= 0 or len(self.size) != 2 or min(self.size) < 64:
            raise ConfigError(f"benchmark recipe: fps must be > 0 and size two sides >= 64 px, got {self.fps}, {self.size}")
        others = self.world_people - self.pool_people - self.subject_people
        if others < self.hard_negatives + 1:
            raise ConfigError(f"benchmark recipe: world_people ({self.world_people}) must leave at least hard_negatives + 1 "
                              f"= {self.hard_negatives + 1} query people besides {self.subject_people} subject people "
                              f"and {self.pool_people} pool people (strangers are the query people that are not hard "
                              f"negatives)")
        unknown = set(self.questions) - set(QUESTION_TYPES)
        if unknown:
            raise ConfigError(f"benchmark recipe: unknown question type(s) {sorted(unknown)}; use {', '.join(QUESTION_TYPES)}")
        for k, v in self.questions.items():
            if not isinstance(v, int) or v < 0:
                raise ConfigError(f"benchmark recipe: questions.{k} must be an integer >= 0, got {v!r}")
        if self.questions.get("existence", 0) < 1:
            raise ConfigError("benchmark recipe: questions.existence must be >= 1 (every clip gets an existence label)")

    @property
    def units(self) -> list[int]:
        """People per benchmark subject, in build order: the singles, then the pairs, then the triples."""
        return [1] * self.subjects + [2] * self.pairs + [3] * self.triples

    @property
    def subject_people(self) -> int:
        return sum(self.units)

    @property
    def num_clips(self) -> int:
        return len(self.units) * len(GROUPS) * self.clips_per_group

    def shrink(self, subjects: int) -> "BenchmarkRecipe":
        """The same benchmark with ``subjects`` one-person subjects and the pairs and triples scaled
        alike (rounded down, at least one of each the full size has once ``subjects`` >= 6)."""
        if not isinstance(subjects, int) or not 1 <= subjects <= self.subjects:
            raise ConfigError(f"--subjects must be between 1 and {self.subjects}, got {subjects!r}")

        def scaled(n: int) -> int:
            k = n * subjects // self.subjects
            return max(k, 1) if n and subjects >= 6 else k

        return replace(self, subjects=subjects, pairs=scaled(self.pairs), triples=scaled(self.triples))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["size"] = list(self.size)
        d["questions"] = dict(self.questions)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "BenchmarkRecipe":
        return recipes.build(cls, d, "benchmark recipe")


DEFAULT = "default"  # pvchat/recipes/benchmark/default.yaml


def load_recipe(recipe: str | os.PathLike | BenchmarkRecipe | Mapping[str, Any] | None = None) -> BenchmarkRecipe:
    """A recipe as given, from a mapping, by name (``pvchat/recipes/benchmark/NAME.yaml``), from a
    YAML file, or the shipped default (``default``)."""
    return recipes.load("benchmark", DEFAULT if recipe is None else recipe, BenchmarkRecipe)
