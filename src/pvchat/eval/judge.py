"""Entity Specificity (ES) and Descriptive Completeness (DC): 0–5 scores from an LLM judge (paper §4.1, supp. S2).

0–5 as the official evaluator (``evaluate_pvchat_metrics.py``) scores them: 0 is a wrong entity,
a contradiction of the ground truth or an invalid answer.

The rubrics are data (``rubrics.json`` next to this file). The judge is any OpenAI-compatible
``/chat/completions`` endpoint (a local vLLM / llama.cpp / Ollama server, or a hosted one), set by
arguments or the environment:

    PVCHAT_JUDGE_URL      base URL, e.g. http://127.0.0.1:8000/v1
    PVCHAT_JUDGE_MODEL    the model name the server expects
    PVCHAT_JUDGE_API_KEY  optional bearer token

Without a judge, ES and DC are not measured (reported as null), never guessed. A reply whose score
cannot be read is counted as unparsed and left out of the mean.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from pvchat.errors import ConfigError
from pvchat.qa.endpoint import ChatEndpoint

METRICS = ("es", "dc")
ENV_URL, ENV_MODEL, ENV_KEY = "PVCHAT_JUDGE_URL", "PVCHAT_JUDGE_MODEL", "PVCHAT_JUDGE_API_KEY"
NOT_MEASURED = "not measured (no judge)"

_NUM = r"([0-5](?:\.\d+)?)(?![\d.]*\d)"
_SCORE_LINE = re.compile(r"\bscore\b[^0-9\n]{0,12}?" + _NUM, re.I)
_OUT_OF = re.compile(_NUM + r"\s*(?:/|out of)\s*5\b", re.I)
_JSON = re.compile(r"\{[^{}]*\}")


@lru_cache(maxsize=1)
def load_rubrics() -> dict[str, Any]:
    """The rubrics file (cached; treat as read-only)."""
    text = resources.files("pvchat.eval").joinpath("rubrics.json").read_text(encoding="utf-8")
    data = json.loads(text)
    missing = [m for m in METRICS if m not in data.get("metrics", {})]
    if missing:
        raise ConfigError(f"pvchat/eval/rubrics.json lacks the rubric(s) {missing}")
    return data


def parse_score(reply: str) -> float | None:
    """The 0–5 score in a judge's reply, or None when there is none.

    Tried in order: a JSON object with a ``score`` key; the last ``Score: N`` (also ``score of N``,
    ``**Score:** N``); the last ``N/5`` or ``N out of 5``; a reply that is just the number.
    Numbers outside 0–5 are not scores.
    """
    if not isinstance(reply, str) or not reply.strip():
        return None
    for m in reversed(_JSON.findall(reply)):
        try:
            obj = json.loads(m)
        except ValueError:
            continue
        if isinstance(obj, dict):
            value = next((v for k, v in obj.items() if str(k).lower() == "score"), None)
            if isinstance(value, (int, float, str)) and not isinstance(value, bool):
                try:
                    num = float(value)
                except ValueError:
                    continue
                if 0 <= num <= 5:
                    return num
    for pattern in (_SCORE_LINE, _OUT_OF):
        found = pattern.findall(reply)
        if found:
            return float(found[-1])
    bare = reply.strip().strip("*.` ")
    if re.fullmatch(r"[0-5](?:\.\d+)?", bare):
        return float(bare)
    return None


@dataclass(frozen=True)
class JudgeScore:
    """One judged answer: the score (None when unreadable) and the judge's reply."""

    metric: str
    score: float | None
    reply: str


@dataclass
class Judge:
    """An LLM judge for ES and DC over an OpenAI-compatible endpoint."""

    endpoint: ChatEndpoint
    rubrics: dict[str, Any] = field(default_factory=load_rubrics)

    def messages(self, metric: str, question: str, reference: str, answer: str, subject: str) -> list[dict]:
        """The chat messages that ask for one score."""
        if metric not in METRICS:
            raise ConfigError(f"unknown judge metric {metric!r}; choose one of: {', '.join(METRICS)}")
        rub = self.rubrics["metrics"][metric]
        levels = "\n".join(f"{k}: {v}" for k, v in sorted(rub["levels"].items()))
        user = self.rubrics["prompt"].format(title=rub["title"], short=rub["short"], definition=rub["definition"],
                                             levels=levels, subject=subject, question=question,
                                             reference=reference, answer=answer or "(empty)")
        return [{"role": "system", "content": self.rubrics["system"]}, {"role": "user", "content": user}]

    def score(self, metric: str, question: str, reference: str, answer: str, subject: str) -> JudgeScore:
        """Ask the judge for one metric of one answer."""
        reply = self.endpoint.chat(self.messages(metric, question, reference, answer, subject))
        return JudgeScore(metric, parse_score(reply), reply)

    def describe(self) -> dict[str, str]:
        """What to record in a report (no key)."""
        return {"base_url": self.endpoint.base_url, "model": self.endpoint.model}


def make_judge(base_url: str | None = None, model: str | None = None, api_key: str | None = None,
               timeout: float = 120.0) -> Judge | None:
    """A judge from the arguments, else from PVCHAT_JUDGE_URL / _MODEL / _API_KEY; None when neither sets one."""
    base_url = base_url or os.environ.get(ENV_URL) or None
    model = model or os.environ.get(ENV_MODEL) or None
    if base_url is None and model is None:
        return None
    if base_url is None or model is None:
        raise ConfigError(f"a judge needs both a base URL and a model name (--judge-url/{ENV_URL} and "
                          f"--judge-model/{ENV_MODEL})")
    endpoint = ChatEndpoint(base_url=base_url, model=model, api_key=api_key, api_key_env=ENV_KEY, timeout=timeout,
                            max_tokens=200, temperature=0.0)
    return Judge(endpoint)
