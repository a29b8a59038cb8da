"""Concept packs: what learning one to three people changed in a base model, and nothing else.

::

    pack/
      pack.safetensors   subject/<name>/input    (D_llm,)   the <name> token's input-embedding row
                         subject/<name>/output   (D_llm,)   its lm_head row (absent when the head is tied)
                         subject/<name>/queries  (N, D_q)   its Q-former query block
                         shared/<parameter>      ...        every other parameter training unfroze: the
                                                            Q-former (routers included), projector,
                                                            vision_norm, frame_position, LoRA (the whole
                                                            LLM when the config has lora_r 0) and the
                                                            trained vision blocks
                         buffer/sparsity.beta    (M,)       SPR coefficients (Eq. 9)
      card.json          names, created, base (preset, path, content sha256), model config, training
                         data, metrics, files (bytes + sha256)

What goes in is decided by the parameter groups that training unfroze
(:func:`pvchat.train.loop.parameter_groups`), not by comparing weights. Subject tensors are keyed
by name, never by token id, so the people of several packs coexist in one model; the shared
tensors belong to the pack and are swapped in before a question (:class:`pvchat.api.Chat`).
Only JSON and safetensors are read; a truncated or altered pack, a pack for another base or
another config is one :class:`~pvchat.errors.InputError`.

A base model is identified by its content, not its file: :func:`tensors_sha256` hashes every
tensor's name, dtype, shape and bytes in name order, so a base rebuilt with the same weights (whose
safetensors header may list its metadata in another order) is the same base. The hash is computed
from the file each time a base is used, never taken from a cache: a base whose bytes changed is
refused even when its size and modification time were kept.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pvchat.errors import InputError
from pvchat.io import atomic_dir, file_sha256, load_tensors, read_json, save_tensors, write_json
from pvchat.model import subject_tokens
from pvchat.model.presets import get_preset
from pvchat.model.prompt import validate_name
from pvchat.model.pvchat import CONFIG_NAME, WEIGHTS_NAME, PVChat
from pvchat.train.loop import parameter_groups
from pvchat.train.recipe import StageRecipe

FORMAT = "pvchat-concept-pack"
VERSION = 1
TENSORS = "pack.safetensors"
CARD = "card.json"
IDENTITY = "tensors-sha256"  # card["base"]["identity"]: what card["base"]["sha256"] hashes (absent: the file)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


# ------------------------------------------------------------------------- base models
def tensors_sha256(path: Path, chunk: int = 1 << 22) -> str:
    """sha256 over a safetensors file's tensors: name, dtype, shape and bytes of each, in name order.

    The header's metadata (and the order it is written in) does not count, so two saves of the
    same weights hash the same. A file that is not a readable safetensors file is an InputError.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        try:
            (n,) = struct.unpack("<Q", f.read(8))
            if not 2 <= n <= size - 8:
                raise ValueError(f"header length {n}")
            header = json.loads(f.read(n))
            if not isinstance(header, dict):
                raise ValueError("header is not an object")
            start = 8 + n
            entries = []
            for name, t in header.items():
                if name == "__metadata__":
                    continue
                a, b = t["data_offsets"]
                if not (isinstance(t["dtype"], str) and all(isinstance(d, int) for d in t["shape"])
                        and isinstance(a, int) and isinstance(b, int) and 0 <= a <= b <= size - start):
                    raise ValueError(f"bad entry for {name}")
                entries.append((name, t["dtype"], list(t["shape"]), a, b))
        except (struct.error, ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise InputError(f"{path}: not a readable safetensors file ({e})") from None
        h = hashlib.sha256()
        for name, dtype, shape, a, b in sorted(entries):
            h.update(json.dumps([name, dtype, shape, b - a]).encode() + b"\n")
            f.seek(start + a)
            left = b - a
            while left:
                block = f.read(min(chunk, left))
                if not block:
                    raise InputError(f"{path}: truncated safetensors file ({name} ends past the end)")
                h.update(block)
                left -= len(block)
    return h.hexdigest()


def base_info(base: Path) -> dict[str, Any]:
    """Preset, path, size, subjects and content hash (:func:`tensors_sha256`) of a saved base model.

    The hash is computed from the weights on every call (one read of the file, which then sits in
    the page cache for the load that follows), so what is checked is what is loaded.
    """
    base = Path(base)
    weights = base / WEIGHTS_NAME
    if not weights.is_file() or not (base / CONFIG_NAME).is_file():
        raise InputError(f"{base}: not a saved PVChat base model (needs {CONFIG_NAME} and {WEIGHTS_NAME})")
    meta = read_json(base / CONFIG_NAME)
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise InputError(f"{base / CONFIG_NAME}: not a PVChat model config")
    return {"preset": meta["config"].get("preset"), "path": str(base.resolve()), "sha256": tensors_sha256(weights),
            "identity": IDENTITY, "size_bytes": weights.stat().st_size,
            "subjects": list(meta["config"].get("subjects", []))}


def base_config(config: dict[str, Any]) -> dict[str, Any]:
    """A model config as plain JSON without its subjects: what a pack and its base must share."""
    return {**json.loads(json.dumps(config)), "subjects": []}


# ------------------------------------------------------------------------------ packs
@dataclass(eq=False)
class ConceptPack:
    """A pack in memory: per-person tensors, the pack's shared tensors and buffers, its card (compared by identity)."""

    card: dict[str, Any]
    subjects: dict[str, dict[str, torch.Tensor]]  # name → {"input": (D,), "output": (D,), "queries": (N, D_q)}
    shared: dict[str, torch.Tensor]  # parameter name → tensor
    buffers: dict[str, torch.Tensor] = field(default_factory=dict)  # buffer name → tensor
    path: Path | None = None

    @property
    def names(self) -> list[str]:
        return list(self.subjects)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Flat safetensors layout (module docstring)."""
        out = {f"subject/{n}/{k}": t for n, parts in self.subjects.items() for k, t in parts.items()}
        out.update({f"shared/{k}": t for k, t in self.shared.items()})
        out.update({f"buffer/{k}": t for k, t in self.buffers.items()})
        return out

    def num_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors().values())


def trained_parameters(model: PVChat, names: list[str], train_last_k: int = 0) -> dict[str, torch.nn.Parameter]:
    """name → parameter for everything training unfroze for ``names`` (both stages), subjects excluded.

    Runs :func:`~pvchat.train.loop.parameter_groups` for stage 2 (a superset of stage 1) and puts every
    ``requires_grad`` flag and the vision tower's trainable blocks back afterwards.
    """
    flags = {id(p): p.requires_grad for p in model.parameters()}
    blocks = model.vision.trainable_blocks
    try:
        groups = parameter_groups(model, StageRecipe(stage=2, train_last_k=train_last_k), names)
    finally:
        model.vision.set_trainable(blocks)
        for p in model.parameters():
            p.requires_grad_(flags[id(p)])
    chosen = {id(p) for g in groups if g["name"] != "subject" for p in g["params"]}
    return {n: p for n, p in model.named_parameters() if id(p) in chosen}


def _subject_tensors(model: PVChat, name: str) -> dict[str, torch.Tensor]:
    rows = subject_tokens.subject_token_state(model.llm, {name: model.subject_ids[name]})  # input.<name>, output.<name>
    out = {key.split(".", 1)[0]: t for key, t in rows.items()}
    index = model.subjects.index(name)
    out["queries"] = model.qformer.subject_queries[index].detach().cpu().clone()
    if model.qformer.anchor is not None:
        out["identity"] = model.qformer.anchor.keys[index].detach().cpu().clone()
    return out


def extract_pack(model: PVChat, names: list[str], train_last_k: int = 0) -> ConceptPack:
    """The tensors a pack of ``names`` holds, copied out of a trained ``model`` (card left empty)."""
    missing = [n for n in names if n not in model.subject_ids]
    if missing or not names:
        raise InputError(f"the model has no subject {missing or names}; it knows {model.subjects}")
    if len(names) > 3:
        raise InputError(f"a concept pack holds 1-3 people learned together, got {len(names)}")
    subjects = {n: _subject_tensors(model, n) for n in names}
    shared = {n: p.detach().cpu().clone() for n, p in trained_parameters(model, names, train_last_k).items()}
    buffers = {f"sparsity.{n}": b.detach().cpu().clone() for n, b in model.sparsity.named_buffers()
               if n in model.sparsity.state_dict()}
    return ConceptPack({}, subjects, shared, buffers)


def write_pack(
    model: PVChat,
    names: list[str],
    out: Path,
    base: Path,
    train_last_k: int = 0,
    data: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    reference: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the pack of ``names`` learned in ``model`` from ``base`` to ``out`` (atomically); returns its card.

    Args:
        model: the trained model.
        names: the people learned together (1-3).
        out: the pack directory.
        base: the saved base model training started from (its hash goes in the card).
        train_last_k: vision blocks stage 2 trained.
        data: the training data summary (the synthesize directory's summary.json).
        metrics: training or evaluation metrics.
        reference: the reference video.
        extra: further card fields.
    """
    info = base_info(base)
    pack = extract_pack(model, names, train_last_k)
    config = base_config(model.config.to_dict())
    if config != base_config(read_json(Path(base) / CONFIG_NAME)["config"]):
        raise InputError(f"{base}: the model's config differs from this base's; the pack would not fit it")
    card = {
        "format": FORMAT, "version": VERSION, "name": names[0], "names": list(names),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "base": {k: info[k] for k in ("preset", "path", "sha256", "identity", "size_bytes")},
        "config": config, "train_last_k": train_last_k, "reference": reference,
        "data": data or {}, "metrics": metrics or {},
        "tensors": {"subject": sum(t.numel() for p in pack.subjects.values() for t in p.values()),
                    "shared": sum(t.numel() for t in pack.shared.values()),
                    "buffer": sum(t.numel() for t in pack.buffers.values())},
        **(extra or {}),
    }
    return save_pack(pack, card, out)


def save_pack(pack: ConceptPack, card: dict[str, Any], out: Path) -> dict[str, Any]:
    """Write ``pack``'s tensors and ``card`` (completed with the file's size and sha256) to the
    directory ``out``, atomically (a pack is replaced whole or not at all); returns the card."""
    with atomic_dir(out, overwrite=True) as tmp:
        save_tensors(tmp / TENSORS, pack.tensors(), metadata={"format": FORMAT, "names": json.dumps(card["names"])})
        size = (tmp / TENSORS).stat().st_size
        card["files"] = {TENSORS: {"bytes": size, "sha256": file_sha256(tmp / TENSORS)}}
        card["size_bytes"] = size
        write_json(tmp / CARD, card)
    return card


def _check_card(card: Any, where: Path) -> dict[str, Any]:
    """Every card field pvchat reads, checked once: a damaged card is one InputError, never a KeyError later."""
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        raise InputError(f"{where}: not a {FORMAT} card")

    def need(ok: bool, field_: str, what: str) -> None:
        if not ok:
            raise InputError(f"{where}: damaged card: {field_} {what}; learn the person again")

    def integer(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    def text(v: Any) -> bool:
        return isinstance(v, str) and v != ""

    version = card.get("version")
    need(integer(version), "'version'", "must be a whole number")
    if version > VERSION:
        raise InputError(f"{where}: pack format version {version} is newer than this pvchat reads ({VERSION})")
    names = card.get("names")
    need(isinstance(names, list) and 1 <= len(names) <= 3 and len(set(map(str, names))) == len(names)
         and all(isinstance(n, str) for n in names), "'names'", "must list 1-3 different names")
    for n in names:
        try:
            validate_name(n)
        except InputError as e:
            raise InputError(f"{where}: damaged card: {e}") from None
    need(card.get("name") in names, "'name'", "must be one of its names")
    base = card.get("base")
    need(isinstance(base, dict), "'base'", "is missing")
    need(text(base.get("path")), "'base.path'", "is missing")
    need(isinstance(base.get("sha256"), str) and bool(_HEX64.match(base["sha256"])), "'base.sha256'",
         "must be 64 hex digits")
    need(base.get("preset") is None or text(base.get("preset")), "'base.preset'", "must be a preset name")
    need(integer(base.get("size_bytes")), "'base.size_bytes'", "must be a byte count")
    need(base.get("identity") in (None, IDENTITY), "'base.identity'", f"must be {IDENTITY!r}")
    config = card.get("config")
    need(isinstance(config, dict), "'config'", "is missing")
    need(config.get("preset") is None or text(config.get("preset")), "'config.preset'", "must be a preset name")
    files = card.get("files")
    entry = files.get(TENSORS) if isinstance(files, dict) else None
    need(isinstance(entry, dict) and integer(entry.get("bytes")) and isinstance(entry.get("sha256"), str)
         and bool(_HEX64.match(entry["sha256"])), f"'files.{TENSORS}'", "must give its bytes and sha256")
    need(integer(card.get("size_bytes")), "'size_bytes'", "must be a byte count")
    for key, ok in (("reference", lambda v: isinstance(v, str)), ("recipe", lambda v: isinstance(v, str)),
                    ("person", integer), ("train_last_k", integer), ("metrics", lambda v: isinstance(v, dict)),
                    ("data", lambda v: isinstance(v, dict)), ("created", lambda v: isinstance(v, (str, int, float))),
                    ("learn_seconds", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool))):
        need(card.get(key) is None or ok(card[key]), f"'{key}'", "has the wrong type")
    return card


def read_card(path: Path) -> dict[str, Any]:
    """card.json of a pack directory, with every field pvchat reads checked (one InputError if damaged)."""
    path = Path(path)
    if not (path / CARD).is_file() or not (path / TENSORS).is_file():
        raise InputError(f"{path}: not a concept pack (needs {CARD} and {TENSORS})")
    return _check_card(read_json(path / CARD), path / CARD)


def load_pack(path: Path) -> ConceptPack:
    """Read a pack directory (JSON + safetensors only); any damage is one :class:`InputError`."""
    path = Path(path)
    card = read_card(path)
    want = card["files"][TENSORS]
    size = (path / TENSORS).stat().st_size
    if want["bytes"] != size:
        raise InputError(f"{path / TENSORS}: corrupt or incomplete ({size} bytes, its card expects "
                         f"{want['bytes']}); learn the person again")
    digest = file_sha256(path / TENSORS)
    if digest != want["sha256"]:
        raise InputError(f"{path / TENSORS}: corrupt (its sha256 {digest[:12]}… differs from the card's "
                         f"{want['sha256'][:12]}…, at the same size); learn the person again")
    tensors = load_tensors(path / TENSORS)
    subjects: dict[str, dict[str, torch.Tensor]] = {n: {} for n in card["names"]}
    shared, buffers = {}, {}
    for key, t in tensors.items():
        kind, _, rest = key.partition("/")
        if kind == "subject":
            name, _, part = rest.partition("/")
            if name not in subjects:
                raise InputError(f"{path}: tensor {key} names a person the card does not list")
            subjects[name][part] = t
        elif kind == "shared":
            shared[rest] = t
        elif kind == "buffer":
            buffers[rest] = t
        else:
            raise InputError(f"{path}: unexpected tensor {key}")
    incomplete = [n for n, parts in subjects.items() if not {"input", "queries"} <= set(parts)]
    if incomplete:
        raise InputError(f"{path}: no tensors for {incomplete}")
    return ConceptPack(card, subjects, shared, buffers, path)


def check_fits(pack: ConceptPack, base: dict[str, Any], config: dict[str, Any]) -> None:
    """A pack fits a base when the base's weights hash and its config (without subjects) match the card's."""
    where = pack.path or "the pack"
    if base_config(pack.card["config"]) != base_config(config):
        raise InputError(f"{where}: learned for another model config (preset {pack.card['config'].get('preset')!r}) "
                         f"than the base {base['path']} (preset {base.get('preset')!r})")
    want = pack.card["base"]
    # cards written before content hashes hold the sha256 of the base's file itself
    have = base["sha256"] if want.get("identity") == IDENTITY else file_sha256(Path(base["path"]) / WEIGHTS_NAME)
    if want["sha256"] != have:
        raise InputError(f"{where}: learned on another base model (sha256 {want['sha256'][:12]}…) than "
                         f"{base['path']} ({have[:12]}…); learn the person again on this base")


# --------------------------------------------------------------------- applying packs
@torch.no_grad()
def add_pack_subjects(model: PVChat, pack: ConceptPack) -> None:
    """Add the pack's people to ``model`` and copy in their rows and query blocks."""
    taken = [n for n in pack.names if n in model.subject_ids]
    if taken:
        raise InputError(f"{pack.path or 'pack'}: {', '.join(taken)} already loaded from another pack")
    for name, parts in pack.subjects.items():
        model.add_subject(name)
        state = {f"{k}.{name}": parts[k] for k in ("input", "output") if k in parts}
        subject_tokens.load_subject_token_state(model.llm, {name: model.subject_ids[name]}, state)
        block = model.qformer.subject_queries[model.subjects.index(name)]
        if block.shape != parts["queries"].shape:
            raise InputError(f"{pack.path}: query block of {name} is {tuple(parts['queries'].shape)}, "
                             f"the model's {tuple(block.shape)}")
        block.copy_(parts["queries"].to(block))
        if model.qformer.anchor is not None:
            if "identity" not in parts:
                raise InputError(f"{pack.path}: {name} has no identity key, which this model's subject queries need")
            model.qformer.anchor.keys[model.subjects.index(name)].copy_(parts["identity"].to(block))


@torch.no_grad()
def apply_shared(model: PVChat, pack: ConceptPack) -> None:
    """Copy the pack's shared tensors and buffers into ``model`` (the people's own tensors stay)."""
    params, buffers = dict(model.named_parameters()), dict(model.named_buffers())
    for table, tensors in ((params, pack.shared), (buffers, pack.buffers)):
        for name, t in tensors.items():
            if name not in table or tuple(table[name].shape) != tuple(t.shape):
                raise InputError(f"{pack.path or 'pack'}: tensor {name} {tuple(t.shape)} does not fit this model")
            table[name].copy_(t.to(table[name]))


def apply_pack(model: PVChat, pack: ConceptPack) -> None:
    """Both: the pack's people and its shared tensors."""
    add_pack_subjects(model, pack)
    apply_shared(model, pack)


def pack_size_estimate(preset: str, train_last_k: int = 0, num_people: int = 1) -> dict[str, int]:
    """Bytes of a pack and of its base for a preset, built on the meta device (float32 as trained here)."""
    cfg = get_preset(preset)
    cfg.subjects = [f"person{i}" for i in range(num_people)]
    with torch.device("meta"):
        model = PVChat.from_config(cfg)
    names = model.subjects
    shared_n = sum(p.numel() for p in trained_parameters(model, names, train_last_k).values())
    _, head = subject_tokens.subject_modules(model.llm)
    row = model.llm.get_input_embeddings().embedding_dim * (1 if head.tied else 2)  # input (+ output) row
    subject = len(names) * (row + model.qformer.subject_queries[0].numel())
    base_n = sum(p.numel() for p in model.parameters()) - subject
    return {"pack_params": subject + shared_n, "subject_params": subject, "shared_params": shared_n,
            "base_params": base_n, "pack_bytes_fp32": 4 * (subject + shared_n), "base_bytes_fp32": 4 * base_n,
            "base_bytes_bf16": 2 * base_n}


def dir_size(path: Path) -> int:
    """Bytes of all files under ``path``."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) if Path(path).exists() else 0

