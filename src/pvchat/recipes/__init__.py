"""Recipes: YAML files over dataclasses, one loader for training, synthesis, QA and the benchmark.

The shipped recipes are package data here, one folder per kind, each file headed by a comment
with the command that runs it::

    recipes/train/NAME.yaml      pvchat.train.recipe.TrainRecipe   (pvchat train / learn / ablate / serve --recipe)
    recipes/synth/NAME.yaml      pvchat.synth.pipeline.SynthRecipe (pvchat synthesize --recipe)
    recipes/qa/NAME.yaml         pvchat.qa.generate.QARecipe       (pvchat compose --qa; a synthesis recipe's qa:)
    recipes/benchmark/NAME.yaml  pvchat.eval.recipe.BenchmarkRecipe (pvchat eval --recipe; default.yaml)

A recipe is given by name (a shipped file) or as a YAML path (a name ending in ``.yaml``/``.yml``,
or an existing file). Its keys are the fields of its dataclass: an unknown key is a one-line
:class:`ConfigError` that names it and the allowed ones; a field whose default is a dataclass
(``stage1:`` of a training recipe) is a nested section whose keys override that default; the
values are checked by the dataclass's ``__post_init__``. A field left out keeps its default.

Only the standard library is imported at module level (:mod:`pvchat.choices` lists the names
for ``--help``); PyYAML when a file is read.
"""

from __future__ import annotations

import dataclasses
import os
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

from pvchat.errors import ConfigError, InputError

T = TypeVar("T")

# kind (the folder) -> what messages call it
KINDS = {"train": "training", "synth": "synthesis", "qa": "QA", "benchmark": "benchmark"}
SUFFIXES = (".yaml", ".yml")


def _kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown recipe kind {kind!r}; one of: {', '.join(KINDS)}")
    return KINDS[kind]


def _folder(kind: str):
    _kind(kind)
    return resources.files(__name__) / kind


def names(kind: str) -> tuple[str, ...]:
    """The shipped recipes of ``kind`` (``train``, ``synth``, ``qa``, ``benchmark``), sorted."""
    return tuple(sorted(f.name.rsplit(".", 1)[0] for f in _folder(kind).iterdir()
                        if f.name.endswith(SUFFIXES)))


def is_path(recipe: str | os.PathLike) -> bool:
    """Whether ``recipe`` names a YAML file rather than a shipped recipe."""
    p = Path(recipe)
    return p.suffix in SUFFIXES or p.is_file()


def path(kind: str, recipe: str | os.PathLike) -> Path:
    """The file of a recipe: a shipped one by name, else the path as given (it may not exist:
    :func:`load` says so)."""
    if is_path(recipe):
        return Path(recipe)
    shipped = _folder(kind) / f"{recipe}.yaml"
    if not shipped.is_file():
        raise ConfigError(f"unknown {_kind(kind)} recipe {str(recipe)!r}; choose one of: "
                          f"{', '.join(names(kind))}, or a YAML path")
    return Path(str(shipped))


def read(kind: str, recipe: str | os.PathLike) -> tuple[dict[str, Any], str]:
    """A recipe file's mapping and where it came from (``pvchat/recipes/KIND/NAME.yaml`` or the path)."""
    file = path(kind, recipe)
    source = str(file) if is_path(recipe) else f"pvchat/recipes/{kind}/{file.name}"
    if not file.is_file():
        raise InputError(f"{file}: no such {_kind(kind)} recipe")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML ({str(e).splitlines()[0]})") from None
    return ({} if data is None else data), source


def build(cls: type[T], data: Mapping[str, Any], where: str) -> T:
    """``cls`` from a mapping of its fields (nested sections for fields whose default is a
    dataclass; a section left out is that default); any error is a one-line :class:`ConfigError`
    that starts with ``where``."""
    try:
        return _build(cls, data, "")
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def _build(cls: type[T], data: Any, section: str, base: Any = None) -> T:
    if not isinstance(data, Mapping):
        what = f"section {section[:-1]}" if section else "a recipe"
        raise ConfigError(f"{what} must be a mapping of field: value, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [str(k) for k in data if k not in fields]
    if unknown:
        listed = ", ".join(repr(f"{section}{k}") for k in unknown)
        raise ConfigError(f"unknown field{'s' if len(unknown) > 1 else ''} {listed}; allowed"
                          f"{f' in {section[:-1]}' if section else ''}: {', '.join(fields)}")
    values = {}
    for key, value in data.items():
        default = _default(fields[key]) if base is None else getattr(base, key)
        if dataclasses.is_dataclass(default) and not isinstance(default, type):
            value = _build(type(default), value, f"{section}{key}.", default)
        values[key] = value
    try:
        return cls(**values) if base is None else dataclasses.replace(base, **values)
    except TypeError as e:  # a check in __post_init__ that met a value of the wrong type
        raise ConfigError(f"{section[:-1] + ': ' if section else ''}{e}") from None


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def load(kind: str, recipe: str | os.PathLike | Mapping[str, Any] | T, cls: type[T]) -> T:
    """A recipe of ``kind`` as a ``cls``: a shipped one by name, a YAML file by path, a mapping of
    its fields, or a ``cls`` as given."""
    if isinstance(recipe, cls):
        return recipe
    if isinstance(recipe, Mapping):
        return build(cls, recipe, f"{_kind(kind)} recipe")
    data, source = read(kind, recipe)
    return build(cls, data, source)


def load_all(kind: str, cls: type[T]) -> dict[str, T]:
    """Every shipped recipe of ``kind``, by name."""
    return {name: load(kind, name, cls) for name in names(kind)}
