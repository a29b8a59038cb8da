"""Base pretraining on the offline world: the shared parts learn to read identity.

PVChat personalises a *pretrained* video LLM (InternVideo2-Chat, paper §4.1): the new person's
token and queries are learned on top of a model that already reads faces and speaks. No such
weights ship offline; with the paper's recipe a random-init model trained on one person's clips
learned the answer prior instead (the ``face`` preset and recipe now learn from those clips
alone, README "Status"). This builds such a base on the offline world, with the paper's
own mechanism at population scale::

    world people P (never the people the base will be asked about)
        └─ clips of 1–3 of them ─► "Is <w07> in this video?" yes / no, balanced per clip
    PVChat(preset, subjects = P): one token row + one query block per person, trained jointly
        ─► the Q-former learns to match a subject block against the faces in a clip, the LLM to
           answer from that match; a new person then only needs their own row and block.

The people of the world are split: ``exclude`` names the faces the base must never see (the
demo's subject, its pool and its held-out strangers), so what a personalised model knows about
them comes from their own clips only.

Status (measured on the demo's data, bench/identity_transfer.py): a Q-former pretrained this
way with a yes/no head, then given only a new block for the demo's subject, answers the demo's
held-out queries at 0.75–0.92; but a random-init Q-former trained on the demo's own clips reaches
1.00, so the Q-former does not need this. The whole model (LLM included) pretrained by
:func:`pretrain_base` for 2.9k steps (240 clips, 51 people, 12 epochs, lr 1e-3, ~6.6 min on 2
cores) with the earlier settings (SPR/HAE through the Q-former, patch tokens, the tables' answer
rows) answers "no" to everything, its own people included; the demo does not use it.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import torch

from pvchat.data import ClipRecord, QADataset, QARecord, write_manifest
from pvchat.errors import ConfigError
from pvchat.io import write_json
from pvchat.model.pvchat import CONFIG_NAME, PVChat
from pvchat.qa.generate import existence_pairs
from pvchat.train.recipe import stage2

PRETRAIN_FRAMES = 4


def pretrain_people(exclude: set[str], seed: int = 0):
    """Every offline face not in ``exclude`` as a world person named ``w00``, ``w01``, ..."""
    from pvchat.world.faces import available_faces
    from pvchat.world.people import make_people

    people = [p for p in make_people(len(available_faces()), seed=seed + 7) if p.face not in exclude]
    if len(people) < 8:
        raise ConfigError(f"only {len(people)} offline faces are left after excluding {len(exclude)}; need ≥ 8")
    return [dataclasses.replace(p, name=f"w{k:02d}") for k, p in enumerate(people)]


def pretrain_world(people, seed: int = 0):
    """The world the pretraining clips are drawn from: ``people``, 1–3 per clip, PRETRAIN_FRAMES frames."""
    from pvchat.world.api import World

    return World(people=list(people), seed=seed + 11, num_frames=PRETRAIN_FRAMES, max_people_per_clip=3)


def write_pretrain_data(out: Path, people, clips: int, seed: int = 0, questions: int = 2,
                        progress: bool = True) -> Path:
    """Render ``clips`` world clips of ``people`` into ``out/clips`` and write ``out/manifest.jsonl``:
    per clip, ``questions`` existence pairs for each person in it and as many for people not in it.
    Resumable: clips already on disk are not rendered again."""
    from tqdm.auto import tqdm

    from pvchat.video import write_video

    out = Path(out)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    world = pretrain_world(people, seed)
    names = {p.id: p.name for p in people}
    rng = random.Random(seed)
    records = []
    for i in tqdm(range(clips), desc="pretraining clips", disable=not progress):
        spec = world.clip_spec(i)
        rel = f"clips/c{i:04d}.mp4"
        if not (out / rel).is_file():
            write_video(out / rel, world.render_clip(spec).frames, fps=world.fps)
        present = sorted({names[c.person] for c in spec.cast})
        absent = rng.sample(sorted(set(names.values()) - set(present)), len(present))
        qa = [QARecord("existence", q.question, q.answer, q.label)
              for who, here in [*((n, True) for n in present), *((n, False) for n in absent)]
              for q in existence_pairs([who], [here], questions, rng)]
        records.append(ClipRecord(rel, present, qa, kind="pretrain", stage=[2]))
    write_manifest(out / "manifest.jsonl", records)
    return out / "manifest.jsonl"


def pretrain_base(base: Path, work: Path, preset: str = "face", exclude: set[str] = frozenset(),
                  clips: int = 240, epochs: int = 12, lr: float = 1e-3, batch_size: int = 8, seed: int = 0,
                  progress: bool = True) -> Path:
    """Pretrain a base of ``preset`` on world people not in ``exclude``; saved in ``base``.

    ``work`` holds the clips, manifest, training log and checkpoint. Resumable at every level
    (clips on disk, the training checkpoint, a finished base). The base keeps its pretraining
    people (tokens ``<w00>`` …), so the people learned later add theirs. Returns ``base``, which
    :func:`pvchat.train.stages.with_subjects` loads.
    """
    from pvchat.model.presets import get_preset
    from pvchat.train.loop import train

    base, work = Path(base), Path(work)
    if (base / CONFIG_NAME).is_file():
        return base
    people = pretrain_people(set(exclude), seed)
    manifest = write_pretrain_data(work / "data", people, clips, seed=seed, progress=progress)
    torch.manual_seed(seed)
    cfg = get_preset(preset)
    cfg.subjects = [p.name for p in people]
    model = PVChat.from_config(cfg)
    recipe = stage2(epochs=epochs, batch_size=batch_size, num_frames=PRETRAIN_FRAMES, lr_subject=lr,
                    lr_qformer=lr, lr_lora=lr, seed=seed, checkpoint_every=200)
    ds = QADataset(manifest, stage=2, num_frames=PRETRAIN_FRAMES, image_size=model.vision.image_size)
    result = train(model, ds, recipe, work / "train", resume=True, progress=progress)
    model.save_pretrained(base)
    write_json(work / "pretrain.json", {"preset": preset, "people": len(people), "clips": clips,
                                       "excluded_faces": sorted(exclude), "steps": result.steps,
                                       "final_loss": result.final_loss, "seconds": round(result.seconds, 1)})
    return base
