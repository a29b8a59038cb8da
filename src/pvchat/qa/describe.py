"""Generic captions from :class:`~pvchat.qa.facts.ClipFacts`: what a video captioner would say.

The text calls the person "the woman", "he", "they" … (paper §3.2 and supp. S6: InternVideo2's
answers use generic words, which ChatGPT then replaces with ``<sks>``). Other people are named by
their subject token when they are subjects in play, otherwise by generic indefinite words ("a man
in a blue jacket"), which the rewrite leaves alone. Sentence patterns live in
``templates/captions.json``.
"""

from __future__ import annotations

import random
from typing import Mapping

from pvchat.errors import InputError
from pvchat.qa.facts import ClipFacts, PersonFacts, Relation
from pvchat.qa.templates import load_json


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:] if s and not s.startswith("<") else s


def _gkey(p: PersonFacts) -> str:
    return p.gender if p.gender in ("male", "female") else "unknown"


def referring_noun(p: PersonFacts, rng: random.Random) -> str:
    """Generic definite words for ``p``: "the woman", "the elderly man", "the person" …"""
    d = load_json("captions.json")
    noun = rng.choice(d["nouns"][_gkey(p)])
    if p.age and rng.random() < 0.5:
        noun = noun.replace("the ", f"the {d['age_words'][p.age]} ", 1)
    return noun


def other_words(clip: ClipFacts, j: int, tokens: Mapping[str, str]) -> str:
    """How another person is mentioned: their token if in play, else "a man in a blue jacket"
    (the clothing up to its first comma: the main garments, not every accessory)."""
    p = clip.people[j]
    if p.name is not None and p.name in tokens:
        return tokens[p.name]
    words = load_json("captions.json")["others"][_gkey(p)]
    return f"{words} in {p.clothing.split(',')[0].strip()}" if p.clothing else words


def relation_words(clip: ClipFacts, rels: list[Relation], tokens: Mapping[str, str]) -> str:
    """"in front of and to the left of <Ben>, and behind a woman in a red coat": relations grouped
    per other person, in order of first mention."""
    d = load_json("captions.json")["relation_words"]
    by_other: dict[int, list[str]] = {}
    for r in rels:
        by_other.setdefault(r.other, []).append(d[r.relation].replace(" {other}", ""))
    groups = [f"{join_words(words)} {other_words(clip, j, tokens)}" for j, words in by_other.items()]
    return groups[0] if len(groups) == 1 else ", ".join(groups[:-1]) + ", and " + groups[-1]


def _fmt(pattern: str, ref: str, pron: Mapping[str, str], **kw: str) -> str:
    values = {"ref": ref, "Ref": _cap(ref), "subj": pron["subj"], "Subj": _cap(pron["subj"]),
              "obj": pron["obj"], "poss": pron["poss"], "Poss": _cap(pron["poss"]),
              "be": pron["be"], "have": pron["have"], **kw}
    return pattern.format(**values)


class MissingFactError(InputError):
    """The facts lack what a question asks (no clothing, action or position known)."""


def _need(value: str | None, what: str, clip: ClipFacts, p: PersonFacts) -> str:
    if not value:
        who = p.name or "a stranger"
        raise MissingFactError(f"clip {clip.clip_id or '?'}: no {what} known for {who}; the facts captioner needs it")
    return value


def join_words(items: list[str]) -> str:
    """``["a", "b", "c"]`` → ``"a, b and c"``."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def describe(
    qa_type: str, clip: ClipFacts, i: int, tokens: Mapping[str, str], rng: random.Random, row: int | None = None
) -> str:
    """A generic caption answering a Table 6 question of ``qa_type`` about person ``i``.

    Args:
        qa_type: ``appearance``, ``action`` or ``location``.
        clip: the facts; person ``i`` must be present.
        tokens: subject name → token for the subjects in play (to name other people).
        rng: picks among equivalent phrasings.
        row: the Table 6 row asked (13: "relative to others" leads with relations; 15: "how does the
            position change" leads with the movement).
    """
    d = load_json("captions.json")
    p = clip.people[i]
    pron = d["pronouns"][_gkey(p)]
    ref = referring_noun(p, rng)
    if qa_type == "appearance":
        text = _fmt(rng.choice(d["appearance"]), ref, pron, clothing=_need(p.clothing, "clothing", clip, p))
        if p.appearance:
            text += " " + _fmt(rng.choice(d["appearance_extra"]), ref, pron, appearance=p.appearance)
        return text
    if qa_type == "action":
        action = _need(p.action, "action", clip, p)
        if clip.scene:
            action = f"{action} {clip.scene}"
        return _fmt(rng.choice(d["action"]), ref, pron, action=action)
    if qa_type == "location":
        where = []
        if p.position:
            where.append(rng.choice(d["where"][p.position]))
        if p.depth:
            where.append(d["depth"][p.depth])
        rels = clip.relations_of(i)
        if not where and not rels and not p.movement and len(clip.visible()) > 1:
            _need(None, "position", clip, p)
        parts = []
        if where:
            parts.append(_fmt(rng.choice(d["location"]), ref, pron, where=join_words(where)))
        if rels:
            parts.append(_fmt(rng.choice(d["relations"]), ref, pron, relations=relation_words(clip, rels, tokens)))
        elif len(clip.visible()) == 1:
            parts.append(_fmt(rng.choice(d["alone"]), ref, pron))
        if row == 15 or (p.movement and not parts):
            move = (_fmt(rng.choice(d["movement"]), ref, pron, movement=p.movement) if p.movement
                    else _fmt(rng.choice(d["static"]), ref, pron))
            parts.insert(0, move)
        elif row == 13 and len(parts) > 1:
            parts.reverse()
        if not parts:
            _need(None, "position", clip, p)
        return " ".join(parts)
    raise InputError(f"unknown descriptive question type {qa_type!r}; choose one of: appearance, action, location")
