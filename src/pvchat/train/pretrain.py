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

import concurrent.futures as cf
import dataclasses
import math
import multiprocessing as mp
import random
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from pvchat.data import ClipRecord, QADataset, QARecord, read_manifest, write_manifest
from pvchat.errors import ConfigError, InputError
from pvchat.io import atomic_path, file_sha256, load_tensors, read_json, write_json
from pvchat.model.body_reader import CUT, frozen_maps
from pvchat.model.config import PVChatConfig
from pvchat.model.identity import EMBED_DIM
from pvchat.model.person_tower import EMB, PRESENT, PersonTower, body_crop
from pvchat.model.presets import get_preset
from pvchat.model.projector import WordProjector, answer_words, answer_words_loss, word_mixture
from pvchat.model.prompt import IGNORE_INDEX
from pvchat.model.pvchat import CONFIG_NAME, PVChat

# a client of the offline world (pretraining and alignment render its clips); the library's own
# modules never import it, and train/stages.py loads alignment weights from train/alignment.py
from pvchat.offline.world.api import World
from pvchat.offline.world.faces import available_faces, face_split
from pvchat.offline.world.people import TOP_KINDS, make_people
from pvchat.offline.world.render import plan_clip, render_clip
from pvchat.qa.generate import existence_pairs
from pvchat.qa.world_qa import world_clip_qa
from pvchat.train.alignment import alignment_state
from pvchat.train.body_reader import clip_accuracy, train_body_reader
from pvchat.train.loop import train
from pvchat.train.recipe import stage2
from pvchat.video import read_frames_uniform, to_model_input, uniform_indices, write_video
from pvchat.weights import resolve_cnn

PRETRAIN_FRAMES = 4


def pretrain_people(exclude: set[str], seed: int = 0):
    """Every offline face not in ``exclude`` as a world person named ``w00``, ``w01``, ..."""
    people = [p for p in make_people(len(available_faces()), seed=seed + 7) if p.face not in exclude]
    if len(people) < 8:
        raise ConfigError(f"only {len(people)} offline faces are left after excluding {len(exclude)}; need ≥ 8")
    return [dataclasses.replace(p, name=f"w{k:02d}") for k, p in enumerate(people)]


def pretrain_world(people, seed: int = 0):
    """The world the pretraining clips are drawn from: ``people``, 1–3 per clip, PRETRAIN_FRAMES frames."""
    return World(people=list(people), seed=seed + 11, num_frames=PRETRAIN_FRAMES, max_people_per_clip=3)


def write_pretrain_data(out: Path, people, clips: int, seed: int = 0, questions: int = 2,
                        progress: bool = True) -> Path:
    """Render ``clips`` world clips of ``people`` into ``out/clips`` and write ``out/manifest.jsonl``:
    per clip, ``questions`` existence pairs for each person in it and as many for people not in it.
    Resumable: clips already on disk are not rendered again."""
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
    ds = QADataset(manifest, stage=2, num_frames=PRETRAIN_FRAMES, image_size=model.vision.image_size,
                   snippet=model.frames_per_step)
    result = train(model, ds, recipe, work / "train", resume=True, progress=progress)
    model.save_pretrained(base)
    write_json(work / "pretrain.json", {"preset": preset, "people": len(people), "clips": clips,
                                       "excluded_faces": sorted(exclude), "steps": result.steps,
                                       "final_loss": result.final_loss, "seconds": round(result.seconds, 1)})
    return base


# ============================================================== aligning a pretrained base (small)
ALIGN_FRAMES = 16  # frames rendered per alignment clip; the model samples num_frames of them
# every alignment clip dresses its people anew: with the world's default (0.35) a person mostly wears
# one outfit, and on 41 people a reader ties the garment to the person, not to the pixels
# (bench/garment.py, unseen people: the trained body reader names kind and colour together in 0.55 of
# clips when trained on the world's outfits, 0.79 when trained on outfits drawn anew)
ALIGN_OUTFIT_CHANGE = 1.0
OUTFIT_ATTRIBUTES = ("top_colour", "pattern", "top", "bottom_colour", "bottom")


def readout_truth(person: dict) -> dict[str, str]:
    """What the attribute readout (model/readout.py) learns to name of a person of a world clip's
    truth: each of their outfit's attributes, and their action as answers say it."""
    return {**{a: person["outfit"][a] for a in OUTFIT_ATTRIBUTES}, "action": person["action_phrase"]}


def write_align_data(out: Path, people, clips: int, seed: int = 0, max_qa: int = 6, progress: bool = True) -> Path:
    """World clips of ``people`` (1–3 each) with QA of all four types from their ground truth.

    Per clip: for each person in it, existence (yes), appearance and action, left/right against
    every other person; one person not in it (existence, no); and for one-person clips the
    appearance and action of "the person" (so the base answers before anyone is learned); at most
    ``max_qa`` of them, drawn at random. Resumable: clips on disk are not rendered again.
    """
    out = Path(out)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    world = World(people=list(people), seed=seed + 11, num_frames=ALIGN_FRAMES, max_people_per_clip=3,
                  outfit_change=ALIGN_OUTFIT_CHANGE)
    names = {p.id: p.name for p in people}
    rng = random.Random(seed)
    records = []
    for i in tqdm(range(clips), desc="alignment clips", disable=not progress):
        spec = world.clip_spec(i)
        rel = f"clips/c{i:04d}.mp4"
        rendered = world.render_clip(spec)
        if not (out / rel).is_file():
            write_video(out / rel, rendered.frames, fps=world.fps)
        present = sorted({names[c.person] for c in spec.cast})
        absent = rng.sample(sorted(set(names.values()) - set(present)), 1)
        qa = world_clip_qa(rendered.truth, names, rng, absent=absent, generic=True)
        qa = rng.sample(qa, min(max_qa, len(qa)))
        attributes = {names[p["id"]]: readout_truth(p) for p in rendered.truth["people"]}
        records.append(ClipRecord(rel, present, qa, kind="align", stage=[2],
                                  provenance={"world_seed": seed + 11, "clip": spec.clip_id, "attributes": attributes}))
    write_manifest(out / "manifest.jsonl", records)
    return out / "manifest.jsonl"


# ------------------------------------------------------------------ the body reader (what people wear)
GARMENT_CLIPS = 1500  # one-person clips whose body crops train the reader
GARMENT_FRAMES = 8  # crops per clip (of ALIGN_FRAMES rendered)


def garment_data(tower: PersonTower, people, clips: int, seed: int = 0, outfit_change: float = ALIGN_OUTFIT_CHANGE,
                 progress: bool = True) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
    """One-person world clips of ``people`` → the frozen maps under the body reader, as the tower cuts them.

    Each clip (pose, light, colour cast, occlusion and faces varied as the world does; a new outfit
    with chance ``outfit_change``) is resized to the tower's frame size as the model's input is, and
    the person's body cropped (:func:`~pvchat.model.person_tower.body_crop`) on GARMENT_FRAMES frames
    from the world's face boxes (the tower finds them with dlib). Returns the maps (n, C, h, w) in
    fp16, the clip of each crop (n,), and per clip its person and top garment (kind, colour).
    """
    by_id = {p.id: p for p in people}
    S = tower.image_size
    maps, owner, labels = [], [], []
    for i in tqdm(range(clips), desc="garment crops", disable=not progress):
        spec = plan_clip(list(people), clip_id=f"g{i:04d}", seed=seed * 100_003 + i, max_people=1,
                         num_frames=ALIGN_FRAMES, outfit_change=outfit_change, variation=0.5)
        rendered = render_clip(spec, by_id)
        if not rendered.truth["people"]:
            continue
        person = rendered.truth["people"][0]
        H, W = rendered.frames.shape[1:3]
        scale = np.array([S / W, S / H, S / W, S / H])
        crops = []
        for t in uniform_indices(ALIGN_FRAMES, GARMENT_FRAMES):
            frame = person["frames"][t]
            if not frame["face_box"] or frame["face_visible"] < 0.3:
                continue
            x01 = to_model_input(rendered.frames[t:t + 1], size=S, mean=(0, 0, 0), std=(1, 1, 1)).clamp(0, 1)
            crops.append(body_crop(x01, np.asarray(frame["face_box"]) * scale, tower.crop_size))
        if not crops:
            continue
        with torch.no_grad():
            x = (torch.cat(crops) - tower.lite_mean) / tower.lite_std
            maps.append(frozen_maps(tower.cnn, x, tower.reader.cut if tower.reader is not None else CUT).half())
        owner += [len(labels)] * len(crops)
        labels.append({"person": person["id"], "kind": person["outfit"]["top"], "colour": person["outfit"]["top_colour"]})
    return torch.cat(maps).contiguous(), torch.tensor(owner), labels


def garment_targets(clip_of: torch.Tensor, labels: list[dict], classes: dict[str, list[str]]) -> dict[str, torch.Tensor]:
    """Per attribute, each crop's class index (``classes``: attribute → class names)."""
    return {a: torch.tensor([names.index(labels[int(c)][a]) for c in clip_of]) for a, names in classes.items()}


def load_reader(tower: PersonTower, path: Path) -> None:
    """Load a body reader saved by :func:`train_reader` (``vision.reader.*`` keys) into ``tower``."""
    state = {k.removeprefix("vision.reader."): v for k, v in load_tensors(path).items()}
    try:
        tower.reader.load_state_dict(state)
    except RuntimeError as e:
        raise InputError(f"{path}: not a body reader for this tower ({str(e).splitlines()[0]}); delete it to train "
                         f"it again") from None


def train_reader(tower: PersonTower, people, out: Path, clips: int = GARMENT_CLIPS, steps: int = 600, seed: int = 0,
                 progress: bool = True) -> dict:
    """Train the tower's body reader on garment crops of ``people`` (7/8 of them; the rest score it)
    and save it to ``out`` (``vision.reader.*`` keys); a reader already there is loaded instead.
    Returns the card entry: clips, crops, held-out clip accuracy per attribute."""
    card_path = out.with_suffix(".json")
    if out.is_file() and card_path.is_file():
        load_reader(tower, out)
        return read_json(card_path)
    maps, clip_of, labels = garment_data(tower, people, clips, seed=seed, progress=progress)
    classes = {"kind": list(TOP_KINDS), "colour": sorted({lab["colour"] for lab in labels})}
    ids = sorted({lab["person"] for lab in labels})
    random.Random(seed).shuffle(ids)
    held = set(ids[: max(1, len(ids) // 8)])
    test = torch.tensor([labels[int(c)]["person"] in held for c in clip_of])
    targets = garment_targets(clip_of, labels, classes)
    heads, losses = train_body_reader(tower.reader, maps[~test], {a: t[~test] for a, t in targets.items()},
                                      {a: len(n) for a, n in classes.items()}, steps=steps, seed=seed, progress=progress)
    acc = clip_accuracy(tower.reader, heads, maps[test], clip_of[test], {a: t[test] for a, t in targets.items()})
    card = {"clips": len(labels), "crops": len(clip_of), "steps": steps, "held_out_people": len(held),
            "held_out_clip_accuracy": {a: round(v, 3) for a, v in acc.items()},
            "loss_first_last": [round(losses[0], 3), round(losses[-1], 3)], "classes": classes}
    state = {f"vision.reader.{k}": v.contiguous() for k, v in tower.reader.state_dict().items()}
    with atomic_path(out) as tmp:
        save_file(state, str(tmp))
    write_json(card_path, card)
    return card


def _features_worker(args) -> int:
    """One process of :func:`extract_features`: its share of the clips, one thread."""
    config, clips, num_frames, out, reader = args
    torch.set_num_threads(1)
    v = PVChatConfig.from_dict(config).vision
    tower = PersonTower(resolve_cnn(v.weights), **v.config)
    if reader is not None:  # the trained body reader (train_reader)
        load_reader(tower, Path(reader))
    for clip in clips:
        dest = Path(out) / (Path(clip).stem + ".safetensors")
        if dest.is_file():
            continue
        pixels = to_model_input(read_frames_uniform(clip, num_frames, tower.frames_per_step), size=tower.image_size)
        feats = tower(pixels.unsqueeze(0))[0].to(torch.float16).contiguous()  # (T, N, C)
        with atomic_path(dest) as tmp:
            save_file({"features": feats}, str(tmp))
    return len(clips)


def extract_features(config: PVChatConfig, clips: list[Path], out: Path, workers: int = 2,
                     progress: bool = True, reader: Path | None = None) -> dict[Path, torch.Tensor]:
    """Frozen person-tower features of ``clips`` (fp16 safetensors in ``out``, one per clip) for a
    model of ``config`` (with the body reader saved in ``reader``, when given), computed by
    ``workers`` processes; returns clip → (1, T, N, C) float32. Resumable."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    todo = [c for c in clips if not (out / (Path(c).stem + ".safetensors")).is_file()]
    chunks = [todo[i:i + 8] for i in range(0, len(todo), 8)]
    frames, config = config.num_frames, config.to_dict()
    with tqdm(total=len(todo), desc="features", disable=not progress) as bar:
        if chunks:
            with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
                for n in pool.map(_features_worker, [(config, [str(c) for c in ch], frames, str(out),
                                                      None if reader is None else str(reader)) for ch in chunks]):
                    bar.update(n)
    return {Path(c): load_tensors(out / (Path(c).stem + ".safetensors"))["features"].float().unsqueeze(0)
            for c in clips}


# ------------------------------------------------------------------ Q-former warm-up (no LLM)
@torch.no_grad()
def identity_keys_from_features(model: PVChat, records: list[ClipRecord], root: Path,
                                 features: dict[Path, torch.Tensor]) -> dict[str, int]:
    """Start each subject's identity key at the mean face embedding of the person tokens of the clips
    where that subject is alone (so the key is the face the data shows, as a reference video's mean
    embedding is for a learned person). Returns clips used per subject; subjects never alone keep theirs."""

    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    for r in records:
        clip = Path(root) / r.clip
        if len(r.people) != 1 or r.people[0] not in model.subject_ids or clip not in features:
            continue
        f = features[clip][0].float()  # (T, N, C)
        faces = f[f[..., PRESENT] > 0.5][:, EMB:EMB + EMBED_DIM]
        if len(faces):
            who = r.people[0]
            sums[who] = sums.get(who, torch.zeros(EMBED_DIM)) + faces.mean(0)
            counts[who] = counts.get(who, 0) + 1
    for who, total in sums.items():
        model.set_identity(who, total / counts[who])
    return counts


def warm_readout(model: PVChat, records: list[ClipRecord], root: Path, features: dict[Path, torch.Tensor],
                 steps: int = 1500, batch_size: int = 64, lr: float = 1e-3, held_out: float = 0.1, seed: int = 0,
                 progress: bool = True) -> dict:
    """Teach the attribute readout (model/readout.py) to name what each person in a clip wears and
    does, from the clips' ground truth (``provenance["attributes"]``, :func:`write_align_data`).

    The readout reads the tower's frozen tokens through the identity anchor's match, both fixed here,
    so each (clip, person) is pooled once (R1) and only the classifier (R2) trains: cross-entropy
    summed over attributes, AdamW, cosine. A ``held_out`` share of the clips scores it: accuracy per
    attribute beside the most frequent label's share (what a readout that does not look gets).
    Returns ``{"loss": [...], "accuracy": {...}, "majority": {...}, "samples": n, "held_out_samples": m}``."""
    readout = model.readout
    if readout is None:
        raise ConfigError("warm_readout needs a model with an attribute readout (config.readout)")
    index = {n: i for i, n in enumerate(model.subjects)}
    pooled, targets, test = [], [], []
    rng = random.Random(seed)
    with torch.no_grad():
        for r in records:
            truth = r.provenance.get("attributes", {}) if r.provenance else {}
            clip = Path(root) / r.clip
            if clip not in features:
                continue
            held = rng.random() < held_out
            for name, attrs in truth.items():
                if name not in index:
                    continue
                try:
                    y = [readout.attributes[a].index(attrs[a]) for a in readout.attributes]
                except (KeyError, ValueError) as e:
                    raise InputError(f"{r.clip}: attribute {e} is not among the readout's labels") from None
                raw = features[clip].float()  # (1, T, N, C)
                pooled.append(readout.pool(raw, model.qformer.anchor.match(raw, [index[name]]))[0, 0])
                targets.append(y)
                test.append(held)
    if not pooled:
        raise ConfigError("warm_readout found no clip with attribute labels of the model's people")
    c, y, test = torch.stack(pooled), torch.tensor(targets), torch.tensor(test)
    train_c, train_y = c[~test], y[~test]
    readout.fit_motion_scale(train_c)  # (R2b)'s standardisation, from the samples it learns on
    params = list(readout.parameters())
    readout.requires_grad_(True).train()
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in tqdm(range(steps), desc="attribute readout", disable=not progress):
        b = torch.randint(len(train_c), (batch_size,), generator=gen)
        logits = readout.classify(train_c[b])
        loss = sum(nn.functional.cross_entropy(v, train_y[b, k]) for k, v in enumerate(logits.values()))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    readout.requires_grad_(False).eval()
    accuracy, majority = {}, {}
    with torch.no_grad():
        logits = readout.classify(c[test])
        for k, (a, v) in enumerate(logits.items()):
            accuracy[a] = round(float((v.argmax(-1) == y[test, k]).float().mean()), 3) if test.any() else None
            majority[a] = round(float((y[test, k] == train_y[:, k].mode().values).float().mean()), 3) if test.any() else None
    return {"loss": losses, "accuracy": accuracy, "majority": majority, "samples": int((~test).sum()),
            "held_out_samples": int(test.sum())}


def warm_words(model: PVChat, dataset: QADataset, features: dict[Path, torch.Tensor], steps: int = 2000,
               batch_size: int = 32, lr: float = 1e-3, negatives: int = 2048, held_out: float = 0.1, seed: int = 0,
               progress: bool = True) -> dict:
    """Teach the Q-former and the word projector to carry what the answers say before the LLM reads
    them (as BLIP-2's first stage trains its Q-former without the LLM): only the answer-words term
    (W4, model/projector.py), so a step costs no LLM pass, and (W2) over a sampled softmax: the
    answers' own content words plus ``negatives`` other words drawn each step. Identity keys, the
    anchor, the queries, the projector, frame positions and the vision norm train.

    A ``held_out`` share of the clips is kept out to measure what was learned: recall@10 of the
    answers' content words in the visual tokens' full-vocabulary word mixture, beside the same
    recall for the ten most frequent answer words (the prior a model that does not look reaches).
    Returns ``{"loss": [...], "recall@10": r, "prior recall@10": r0, "held_out_samples": n}``."""
    if not isinstance(model.projector, WordProjector):
        raise ConfigError("warm_words needs the word projector (config.projector 'words')")
    rng = random.Random(seed)
    clips = sorted(dataset.clips)
    test_clips = set(rng.sample(clips, int(len(clips) * held_out)))
    items, tests = [], []
    for s in dataset.samples:
        enc = model.prepare(s.question, s.answer)
        words = answer_words(torch.tensor([enc.labels]), model.answer_words, IGNORE_INDEX)[0]
        if words:
            (tests if s.clip in test_clips else items).append((s.clip, words, enc.subjects))
    vocab = sorted({w for _, words, _ in items for w in words})  # the answers' content words
    trained = [*model.qformer.parameters(), *model.projector.parameters(), *model.vision_norm.parameters(),
               model.frame_position]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in trained:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(trained, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: min(1.0, (k + 1) / 50) * 0.5 * (1 + math.cos(math.pi * k / steps)))
    index = {n: i for i, n in enumerate(model.subjects)}
    gen = torch.Generator().manual_seed(seed)
    V = model.projector.vocab_size

    def run(batch, candidates=None):
        feats = torch.cat([features[clip] for clip, _, _ in batch])
        mask = torch.zeros(len(batch), len(model.subjects), dtype=torch.bool)
        for b, (_, _, who) in enumerate(batch):
            for n in who:
                mask[b, index[n]] = True
        return model.visual_tokens(feats, mask, candidates)

    losses = []
    model.train()
    for _ in tqdm(range(steps), desc="Q-former warm-up (answer words)", disable=not progress):
        batch = [items[int(i)] for i in torch.randint(len(items), (batch_size,), generator=gen)]
        others = torch.randint(V, (negatives,), generator=gen)
        candidates = torch.unique(torch.cat([torch.tensor(vocab), others]))  # sorted
        v = run(batch, candidates)
        where = {int(w): k for k, w in enumerate(candidates)}
        loss = answer_words_loss(v.words, v.word_keep, [[where[w] for w in words] for _, words, _ in batch])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    model.eval()
    counts: dict[int, int] = {}
    for _, words, _ in items:
        for w in words:
            counts[w] = counts.get(w, 0) + 1
    prior = set(sorted(counts, key=counts.get, reverse=True)[:10])
    hit = hit0 = total = 0
    with torch.no_grad():
        for i in range(0, len(tests), batch_size):
            batch = tests[i:i + batch_size]
            v = run(batch)
            top = word_mixture(v.words, v.word_keep).topk(10, dim=-1).indices
            for b, (_, words, _) in enumerate(batch):
                got = set(top[b].tolist())
                hit += sum(w in got for w in words)
                hit0 += sum(w in prior for w in words)
                total += len(words)
    return {"loss": losses, "recall@10": round(hit / max(total, 1), 3), "prior recall@10": round(hit0 / max(total, 1), 3),
            "held_out_samples": len(tests)}


def align_base(out: Path, preset: str = "small", clips: int = 480, warm_steps: int = 1200, steps: int = 200,
               lr: float = 1e-4, lr_lora: float = 5e-4, seed: int = 0, workers: int = 2,
               progress: bool = True) -> Path:
    """Align a base of ``preset`` on world people of the ``align`` face split: all four question types.

    1. data: world clips (1–3 people, QA from ground truth) and the frozen tower's features;
    2. each world person's identity key from the clips where they are alone, and the attribute
       readout (when the preset has one) trained on what they wear and do (:func:`warm_readout`);
    3. the Q-former warm-up on the answer words, without the LLM (:func:`warm_words`, ``warm_steps``
       of 16; it reports held-out recall of the answer words beside the prior's);
    4. ``steps`` of 8 of the whole model (LM + answer words; the Q-former at ``lr``, LoRA at ``lr_lora``,
       the people's rows, blocks and keys at 1e-3, cosine).

    ``out`` holds the data, features, training log/checkpoint (step 4 resumable) and, at the end,
    ``alignment.safetensors`` (:func:`alignment_state`) with ``alignment.json`` (its card). Returns
    the safetensors path.
    """
    out = Path(out)
    t0 = time.perf_counter()
    faces = face_split("align")
    people = [dataclasses.replace(p, name=f"w{k:02d}") for k, p in enumerate(make_people(len(faces), seed + 7, faces=faces))]
    manifest = write_align_data(out / "data", people, clips, seed=seed, progress=progress)
    torch.manual_seed(seed)
    cfg = get_preset(preset)
    cfg.subjects = [p.name for p in people]
    model = PVChat.from_config(cfg)
    reader, reader_card = None, None
    if getattr(model.vision, "reader", None) is not None:  # 0. the body reader learns what people wear
        reader = out / "body_reader.safetensors"
        reader_card = train_reader(model.vision, people, reader, seed=seed, progress=progress)
    ds = QADataset(manifest, stage=2, num_frames=cfg.num_frames, image_size=model.vision.image_size,
                   snippet=model.frames_per_step)
    feats = extract_features(model.config, ds.clips, out / ("features" if reader is None else "features-reader"),
                             workers=workers, progress=progress, reader=reader)
    records = read_manifest(manifest)
    keys = identity_keys_from_features(model, records, manifest.parent, feats)
    readout = {}
    if model.readout is not None:  # 2b. the attribute readout names what each person wears and does
        readout = warm_readout(model, records, manifest.parent, feats, seed=seed, progress=progress)
        readout.pop("loss")
    warm = {}
    if warm_steps:
        warm = warm_words(model, ds, feats, steps=warm_steps, batch_size=16, seed=seed, progress=progress)
    recipe = stage2(epochs=100, batch_size=8, num_frames=cfg.num_frames, lr_subject=1e-3, lr_qformer=lr,
                    lr_lora=lr_lora, seed=seed, checkpoint_every=50, schedule="cosine", max_steps=steps)
    result = train(model, ds, recipe, out / "train", resume=True, progress=progress, features=feats)

    dest = out / "alignment.safetensors"
    with atomic_path(dest) as tmp:
        # half precision halves the shipped file (42 → 21 MB); apply_alignment casts back to the model's dtype
        save_file({k: v.half() if v.is_floating_point() else v for k, v in alignment_state(model).items()}, str(tmp),
                  metadata={"preset": preset})
    losses = warm.pop("loss", [])
    write_json(out / "alignment.json", {
        "command": f"pvchat pretrain --out {out} --preset {preset} --clips {clips} --warm-steps {warm_steps} "
                   f"--steps {steps} --seed {seed}",
        "preset": preset, "people": len(people), "faces": "align split (pvchat.offline.world.faces.face_split)",
        "clips": clips, "samples": len(ds), "identity_keys": len(keys), "body_reader": reader_card,
        "readout": readout,
        "warm_up": {**warm, "steps": warm_steps, "first_loss": losses[0] if losses else None,
                    "last_loss": losses[-1] if losses else None},
        "recipe": recipe.to_dict(), "steps": result.steps,
        "final_loss": result.final_loss, "seconds": round(time.perf_counter() - t0, 1),
        "data_sha256": file_sha256(manifest), "sha256": file_sha256(dest)})
    return dest
