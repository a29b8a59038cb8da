"""The base describes the positives itself: descriptive answers for personalisation (paper §3.2).

PVChat's descriptive answers come from the base video LLM asked about "the person", rewritten
with the person's token (supp. S6). A base aligned on the offline world (the ``small`` preset)
is such a captioner: for each one-person positive clip it is asked what the person wears and
does, and its answer, with "The person" replaced by ``<Name>``, becomes the training answer of
that clip's appearance and action questions. The person is learned in the base's own words, so
personalisation teaches who, not a new way of describing. Location questions of one-person
clips (absolute positions, words the base was not aligned on) are left out; clips of several
learned people (``pvchat compose``) keep their existence and left/right questions only (their
descriptions come from colour measurements, not from the base).

::

    positive clip ─► base("What is the person wearing?") ─► "The person is wearing a navy sweater …"
                                                         └─► "<Ann> is wearing a navy sweater …"
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from tqdm.auto import tqdm

from pvchat.data import QARecord, read_manifest, write_manifest

PROMPTS = {"appearance": "What is the person wearing?", "action": "What is the person doing?"}
GENERIC = "The person"


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
    rewritten = []
    names = [names] if isinstance(names, str) else list(names)
    for r in tqdm(records, desc="self-caption", disable=not progress):
        if len(r.people) > 1:  # several learned people: who and where, not what they wear or do
            rewritten.append(dataclasses.replace(r, qa=[q for q in r.qa if q.type in ("existence", "location")]))
            continue
        if r.kind != "positive" or len(r.people) != 1 or r.people[0] not in names:
            rewritten.append(r)
            continue
        name = r.people[0]
        clip = manifest.parent / r.clip
        _, pixels = model.read_video(clip)
        feats = model.encode_video(pixels.unsqueeze(0))  # (1, T, N, C)
        features[clip] = feats
        types = [t for t in PROMPTS if any(q.type == t for q in r.qa)]
        said = dict(zip(types, model.generate([PROMPTS[t] for t in types], vision_features=feats.expand(len(types), -1, -1, -1),
                                              max_new_tokens=40)))
        qa = []
        for q in r.qa:
            if q.type == "location":
                continue
            if q.type in said:
                answer = as_subject(said[q.type], name)
                if answer is None:
                    continue  # the base did not describe the person: no made-up answer
                q = QARecord(q.type, q.question, answer, q.label)
            qa.append(q)
        rewritten.append(dataclasses.replace(r, qa=qa, provenance={**r.provenance, "captioner": "base"}))
    model.train(was_training)
    write_manifest(out, rewritten)
    return out, features
