"""The base describes the positives itself: descriptive answers for personalisation (paper §3.2).

PVChat's descriptive answers come from the base video LLM asked about "the person", rewritten
with the person's token (supp. S6). A base aligned on the offline world (the ``small`` preset)
is such a captioner: for each one-person positive clip it is asked what the person wears and
does, and its answer, with "The person" replaced by ``<Name>``, becomes the training answer of
that clip's appearance and action questions. The person is learned in the base's own words, so
personalisation teaches who, not a new way of describing. Location questions of one-person
clips (absolute positions, words the base was not aligned on) are left out.

Clips of people learned together (``pvchat compose``) are described the same way, each person by
name: the base is asked its own question about them ("What is <Ann> wearing?"), its identity anchor
finding Ann by the key her reference started (model/identity.py), and whatever it calls her
before " is " (her token is not trained yet) becomes ``<Ann>``. Their measured descriptions (a
torso colour, the reference's motion) were not in the base's words: learned that way, two people
were described right in 0.50 (clothing) and 0.38 (action) of questions.

::

    positive clip ─► base("What is the person wearing?") ─► "The person is wearing a navy sweater …"
                                                         └─► "<Ann> is wearing a navy sweater …"
    composed clip ─► base("What is <Ann> wearing?")      ─► "Anna is wearing a navy sweater …"
                                                         └─► "<Ann> is wearing a navy sweater …"
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

from pvchat.data import QARecord, read_manifest, write_manifest

PROMPTS = {"appearance": "What is the person wearing?", "action": "What is the person doing?"}
GENERIC = "The person"


def as_named(answer: str, name: str) -> str | None:
    """"Anna is …" (whatever the base calls the person) → "<name> is …"; None without " is "."""
    answer = answer.strip()
    at = answer.find(" is ")
    return None if at <= 0 else f"<{name}>" + answer[at:]


def as_subject(answer: str, name: str) -> str | None:
    """"The person is …" → "<name> is …"; None when the answer does not start with the referent."""
    answer = answer.strip()
    if not answer.startswith(GENERIC):
        return None
    return f"<{name}>" + answer[len(GENERIC):]


@torch.no_grad()
def self_caption(model, manifest: Path, names: list[str], out: Path | None = None,
                 progress: bool = True) -> tuple[Path, dict[Path, torch.Tensor]]:
    """Rewrite the descriptive answers of one-person positive clips of ``names`` with the base's own.

    Writes ``out`` (default ``manifest_self.jsonl`` beside ``manifest``); resumable (an existing
    file is kept). Returns its path and the clip features computed on the way (clip → (1, T, N, C)),
    which stage 2 can reuse.
    """
    manifest = Path(manifest)
    out = Path(out) if out is not None else manifest.with_name("manifest_self.jsonl")
    if out.is_file():
        return out, {}
    records = read_manifest(manifest)
    features: dict[Path, torch.Tensor] = {}
    was_training = model.training
    model.eval()
    rewritten: list = []
    # (where its record goes, the prompts, the clip's features, answers → record): asked together below
    asks: list[tuple[int, list[str], torch.Tensor, Callable]] = []
    names = [names] if isinstance(names, str) else list(names)
    for r in tqdm(records, desc="self-caption", disable=not progress):
        if r.kind == "composed":  # people learned together: each described by the base, by name
            prompts, finish = _named(r, names)
            asks.append((len(rewritten), prompts, _encode(model, manifest.parent / r.clip, features), finish))
            rewritten.append(None)
            continue
        if len(r.people) > 1:  # several learned people: who and where, not what they wear or do
            rewritten.append(dataclasses.replace(r, qa=[q for q in r.qa if q.type in ("existence", "location")]))
            continue
        if r.kind != "positive" or len(r.people) != 1 or r.people[0] not in names:
            rewritten.append(r)
            continue
        types = [t for t in PROMPTS if any(q.type == t for q in r.qa)]
        asks.append((len(rewritten), [PROMPTS[t] for t in types], _encode(model, manifest.parent / r.clip, features),
                     functools.partial(_described, r, types)))
        rewritten.append(None)
    questions = [prompt for _, prompts, _, _ in asks for prompt in prompts]
    rows = [feats.expand(len(prompts), -1, -1, -1) for _, prompts, feats, _ in asks]  # each clip, once per prompt
    said = model.generate(questions, vision_features=torch.cat(rows), max_new_tokens=40) if questions else []
    k = 0
    for at, prompts, _, finish in asks:
        rewritten[at] = finish(said[k : k + len(prompts)])
        k += len(prompts)
    model.train(was_training)
    write_manifest(out, rewritten)
    return out, features


def _described(record, types: list[str], said: list[str]):
    """A one-person positive with its appearance and action answers in the base's words (``said``,
    one per type of ``types``, about "the person"); a question the base did not answer about the
    person is left out, and so are location questions."""
    name = record.people[0]
    answers = dict(zip(types, said))
    qa = []
    for q in record.qa:
        if q.type == "location":
            continue
        if q.type in answers:
            answer = as_subject(answers[q.type], name)
            if answer is None:
                continue  # the base did not describe the person: no made-up answer
            q = QARecord(q.type, q.question, answer, q.label)
        qa.append(q)
    return dataclasses.replace(record, qa=qa, provenance={**record.provenance, "captioner": "base"})


def _encode(model, clip: Path, features: dict[Path, torch.Tensor]) -> torch.Tensor:
    """The clip's features (1, T, N, C), kept in ``features`` for stage 2."""
    _, pixels = model.read_video(clip)
    features[clip] = model.encode_video(pixels.unsqueeze(0))
    return features[clip]


def _named(record, names: list[str]) -> tuple[list[str], Callable]:
    """A composed clip's appearance and action questions in the base's words: per person the question
    names, the base is asked once per type in its own wording (``PROMPTS`` with the person's token),
    and that answer serves every wording of the clip; one it does not answer "… is …" is left out.
    Returns the prompts and what turns their answers into the record."""
    def who(q: QARecord) -> str | None:
        named = [n for n in names if f"<{n}>" in q.question and n in record.people]
        return named[0] if q.type in PROMPTS and len(named) == 1 else None

    about = [who(q) for q in record.qa]  # the one learned person each descriptive question asks about
    asked = sorted({(q.type, n) for q, n in zip(record.qa, about) if n is not None})  # (type, name), each once
    prompts = [PROMPTS[t].replace(GENERIC.lower(), f"<{n}>") for t, n in asked]  # "What is <Ann> wearing?"

    def finish(said: list[str]):
        answers = {key: as_named(a, key[1]) for key, a in zip(asked, said)}
        qa = []
        for q, n in zip(record.qa, about):
            if q.type in PROMPTS:
                answer = answers.get((q.type, n))
                if answer is None:
                    continue  # not about one learned person present, or no description: no made-up answer
                q = QARecord(q.type, q.question, answer, q.label)
            qa.append(q)
        return dataclasses.replace(record, qa=qa, provenance={**record.provenance, "captioner": "base"})

    return prompts, finish
