"""Metrics of paper §4.1 that need no judge: existence accuracy and BLEU.

Existence answers are free text ("Yes, <Anna> is in this video.", "I see no sign of <Anna>.");
:func:`parse_yes_no` reads them as the paper's accuracy needs, and says when it cannot.
"""

from __future__ import annotations

import re
from typing import Sequence

_NEG = re.compile(r"\b(no|not|never|nobody|none|absent|isn't|doesn't|don't|can't|cannot|without|missing)\b|n't\b|no sign", re.I)
_POS = re.compile(r"\b(yes|yeah|indeed|present|appears?|shown|visible|is in|there is|i see|can see|features?|includes?)\b", re.I)


def parse_yes_no(answer: str) -> bool | None:
    """True for an affirmative existence answer, False for a negative one, None if neither."""
    text = answer.strip()
    if not text:
        return None
    first = re.split(r"[\s,.!]+", text.lower(), maxsplit=1)[0]
    if first in ("yes", "yeah", "yep"):
        return True
    if first in ("no", "nope"):
        return False
    if _NEG.search(text):
        return False
    if _POS.search(text):
        return True
    return None


def existence_accuracy(answers: Sequence[str], labels: Sequence[bool]) -> dict[str, float]:
    """Accuracy (unparseable answers count as wrong), plus the rates on positives and negatives."""
    parsed = [parse_yes_no(a) for a in answers]
    right = [p == label for p, label in zip(parsed, labels)]
    pos = [r for r, label in zip(right, labels) if label]
    neg = [r for r, label in zip(right, labels) if not label]
    return {
        "accuracy": sum(right) / max(1, len(right)),
        "positive_accuracy": sum(pos) / max(1, len(pos)),
        "negative_accuracy": sum(neg) / max(1, len(neg)),
        "unparsed": sum(p is None for p in parsed) / max(1, len(parsed)),
        "n": len(right),
    }


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (sacrebleu), 0–1."""
    import sacrebleu  # optional (pvchat[eval])

    if not hypotheses:
        return 0.0
    return sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score / 100.0
