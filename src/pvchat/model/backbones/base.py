"""What every family shares: the settings, the people, LoRA, the routers, the loss, decoding and packs.

A family adapter (one file per family in this folder) subclasses :class:`PersonalVLM` and says
only what differs: how the base loads, which attention layers get routers, how frames and a
question become the model's inputs (its own processor and chat template), and how it decodes.

::

    frames (T, H, W, 3) + question ─► encode (family's processor + template) ─► batch
    batch ─► logits (B, L, V) ─► L_LM on the answer tokens
    routers' stats ─► L_SPR + L_HAE (Eq. 7–10)           loss = L_LM + L_SPR + L_HAE (Eq. 11)

Place of the paper's method (paper §3.3; official Qwen3.5 port, pvchat-official.md):

* Q-former families: ReMoH in the Q-former's attention, N learnable queries per person
  appended to the general queries when that person is in play (supp. S4), ``<Name>`` in the LLM.
* decoder-only families: ReMoH routers over the heads of chosen decoder attention layers, and
  per person one ``<Name>`` token plus N detail tokens ``<Name#1>`` … ``<Name#N>`` whose rows train;
  the prompt introduces the people in play as ``<Name> is <Name#1>…<Name#N>.``
* everywhere: LoRA through PEFT on the language model only, the vision tower frozen.

A concept pack (:mod:`pvchat.pack`'s files: ``pack.safetensors`` + ``card.json``) holds the
people's rows (and query blocks), the routers, the LoRA weights and β, and the base's config
hash (:func:`config_sha256`); a pack is refused by a base whose hash or settings differ.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pvchat.errors import ConfigError, InputError
from pvchat.io import read_json
from pvchat.model import llm as llm_lib, subject_tokens
from pvchat.model.backbones.remoh import route_heads
from pvchat.model.losses import SparsityController, SparsityLossConfig, routed_modules
from pvchat.model.prompt import IGNORE_INDEX, names_in, validate_name
from pvchat.pack import FORMAT, VERSION, ConceptPack, save_pack


@dataclass
class BackboneConfig:
    """How a base is personalised (defaults: the paper's and the official code's values)."""

    routing: str = "remoh"
    routed_layers: list[int] | None = None  # None: the family's default (decoder 0–2; upper half of a Q-former)
    num_shared_heads: int | None = None  # None: 2/3 of the heads (official: 8 of 12)
    top_k: int | None = None  # None: half the routed heads
    reg_grad: str = "all"
    detail_tokens: int = 16  # decoder-only families: N detail tokens per person
    subject_queries: int = 16  # Q-former families: N queries per person
    train_qformer: bool = False  # Q-former families: the Q-former's own weights train too (larger packs)
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: list[str] = field(default_factory=lambda: list(llm_lib.LORA_TARGETS))
    num_frames: int = 8
    loss: SparsityLossConfig = field(default_factory=SparsityLossConfig)

    def __post_init__(self):
        if isinstance(self.loss, dict):
            self.loss = SparsityLossConfig(**self.loss)
        if self.detail_tokens < 0 or self.subject_queries < 1 or self.num_frames < 1 or self.lora_r < 0:
            raise ConfigError("detail_tokens ≥ 0, subject_queries ≥ 1, num_frames ≥ 1 and lora_r ≥ 0 are needed")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BackboneConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(d) - known)
        if bad:
            raise ConfigError(f"unknown backbone settings {bad}; valid: {', '.join(sorted(known))}")
        return cls(**d)


def config_sha256(path: Path) -> str:
    """sha256 of a base's config.json as canonical JSON (sorted keys): what a pack records of its base."""
    return hashlib.sha256(json.dumps(read_json(Path(path) / "config.json"), sort_keys=True).encode()).hexdigest()


def detail_token(name: str, i: int) -> str:
    """The i-th detail token of a person, ``<Ann#3>``: '#' keeps it outside the name grammar (no mention)."""
    return f"<{name}#{i}>"


@dataclass
class VLMOutput:
    loss: torch.Tensor | None
    lm_loss: torch.Tensor | None
    spr: torch.Tensor
    hae: torch.Tensor
    logits: torch.Tensor


class PersonalVLM(nn.Module):
    """A local HF video LLM with the paper's method put in. Build with a family's :meth:`load`.

    Args:
        hf: the HF model (LoRA is injected into it in place).
        tokenizer: its tokenizer (people's tokens are added to it).
        settings: the personalisation settings.
        path: the base's directory.
    """

    family: str = ""
    qformer_family: bool = False

    def __init__(self, hf: nn.Module, tokenizer, settings: BackboneConfig, path: Path):
        super().__init__()
        self.hf = hf
        self.tokenizer = tokenizer
        self.settings = settings
        self.path = Path(path)
        self.base_sha256 = config_sha256(self.path)
        self.people: dict[str, list[int]] = {}  # name → token ids (<Name>, then its detail tokens)
        self.vision_trained = 0  # the last K vision blocks some stage trained (they go into packs)
        self.hf.requires_grad_(False)
        self.hf.eval()
        subject_tokens.subject_modules(self.hf, install=True)
        self._peft = []  # the PeftModel wrapper, kept out of the module tree (it wraps self.hf itself)
        if settings.lora_r > 0:
            self._peft.append(llm_lib.apply_lora(self.hf, r=settings.lora_r, alpha=settings.lora_alpha,
                                                 dropout=settings.lora_dropout, target_modules=settings.lora_targets,
                                                 within=self.lm_scope()))
        for attention, out_proj, width, heads in self.routed_attention():  # after LoRA: hooks sit on its W_O
            route_heads(attention, out_proj, width, heads, routing=settings.routing,
                        num_shared_heads=settings.num_shared_heads, top_k=settings.top_k, reg_grad=settings.reg_grad)
        self.gates = routed_modules(self.hf)
        self.sparsity = SparsityController(len(self.gates), [g.target_sparsity for g in self.gates], settings.loss)

    # ------------------------------------------------------------ family hooks
    def lm_scope(self) -> str:
        """Dotted name of the language model inside ``hf`` (LoRA goes there only)."""
        raise NotImplementedError

    def routed_attention(self) -> list[tuple[nn.Module, str, int, int]]:
        """(attention module, its W_O's name, width of its input, heads) for each routed layer."""
        raise NotImplementedError

    def encode(self, frames: np.ndarray, question: str, answer: str | None = None,
               history: list[tuple[str, str]] | None = None) -> dict[str, Any]:
        """One sample with a batch axis of 1: the model's inputs, ``labels`` when ``answer`` is given;
        ``history``: earlier (question, answer) turns about the same video."""
        raise NotImplementedError

    def logits(self, batch: dict[str, Any]) -> torch.Tensor:
        """(1, L, V) next-token logits of an encoded sample."""
        raise NotImplementedError

    def generate_ids(self, batch: dict[str, Any], max_new_tokens: int) -> list[int]:
        """Greedy continuation of an encoded prompt, without the prompt."""
        raise NotImplementedError

    def vision_blocks(self) -> nn.ModuleList | list:
        """The vision tower's blocks that feed the features, in order (stage 2 may train the last K)."""
        raise NotImplementedError

    def _add_queries(self, name: str) -> None:
        """Q-former families: a query block for the person (decoder-only families have none)."""

    def person_queries(self, name: str) -> torch.Tensor | None:
        return None

    # -------------------------------------------------------------- people
    def check_text(self, *texts: str) -> None:
        """A question or answer may not hold the tokenizer's special tokens (a ``<|video_pad|>`` typed in
        would claim a video slot): one InputError naming the token."""
        if not hasattr(self, "_reserved"):
            tok = self.tokenizer
            added = {t.content for t in tok.added_tokens_decoder.values() if t.special}
            self._reserved = sorted((set(tok.all_special_tokens) | added) - {""}, key=len, reverse=True)
        for text in texts:
            if not isinstance(text, str):
                raise InputError(f"questions and answers are text, got {type(text).__name__}")
            hit = next((t for t in self._reserved if t in text), None)
            if hit is not None:
                raise InputError(f"{hit!r} is reserved and cannot appear in a question or an answer")

    def in_play(self, question: str) -> list[str]:
        """The known people a question names, in the order they were added; an unknown one is an error."""
        named = names_in(question)
        unknown = [n for n in named if n not in self.people]
        if unknown:
            raise InputError(f"unknown person {', '.join(unknown)}; this model knows {', '.join(self.people) or 'nobody'}")
        return [n for n in self.people if n in named]

    def person_prefix(self, names: list[str]) -> str:
        """``<Ann> is <Ann#1>…<Ann#N>. `` per person in play (decoder-only families; empty without detail tokens)."""
        if self.qformer_family or not self.settings.detail_tokens:
            return ""
        n = self.settings.detail_tokens
        return "".join(f"<{p}> is {''.join(detail_token(p, i) for i in range(1, n + 1))}. " for p in names)

    def add_person(self, name: str) -> list[int]:
        """One ``<name>`` token (+ N detail tokens, or a query block); nothing else changes."""
        validate_name(name)
        if name in self.people:
            raise InputError(f"person {name!r} already exists")
        details = [] if self.qformer_family else [detail_token(name, i) for i in range(1, self.settings.detail_tokens + 1)]
        ids = subject_tokens.add_subject_tokens(self.hf, self.tokenizer, [name, *details])
        self._add_queries(name)
        self.people[name] = [ids[name], *(ids[d] for d in details)]
        return self.people[name]

    # -------------------------------------------------------------- forward
    def forward(self, batch: dict[str, Any]) -> VLMOutput:
        """Eq. 11 for one encoded sample: L_LM on its answer tokens + L_SPR + L_HAE from the routers."""
        logits = self.logits(batch)  # (1, L, V)
        reg = self.sparsity([g.stats for g in self.gates])  # Eq. 7–10
        labels = batch.get("labels")
        if labels is None:
            return VLMOutput(None, None, reg["spr"], reg["hae"], logits)
        labels = labels.to(logits.device)
        lm = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX)
        return VLMOutput(lm + reg["spr"] + reg["hae"] + reg["moh_balance"], lm, reg["spr"], reg["hae"], logits)

    @torch.no_grad()
    def answer(self, frames: np.ndarray, question: str, max_new_tokens: int = 32,
               history: list[tuple[str, str]] | None = None) -> str:
        """Greedy answer to ``question`` about ``frames`` (T, H, W, 3) uint8, after the ``history`` turns."""
        ids = self.generate_ids(self.encode(frames, question, history=history), max_new_tokens)
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    # ------------------------------------------------------------ training
    def parameter_groups(self, names: list[str], lr_subject: float, lr_qformer: float, lr_lora: float,
                         vision_last_k: int = 0, lr_vision: float = 1e-5):
        """Freeze everything, unfreeze what personalising ``names`` trains, grouped by learning rate
        (paper §4.1): the people's rows and query blocks (1e-4), the routers and, with
        ``train_qformer``, the Q-former (1e-5), LoRA (1e-5), and the last ``vision_last_k`` vision
        blocks (stage 2, §3.4; 1e-5)."""
        for p in self.parameters():
            p.requires_grad_(False)
        subject = [self._row(i) for n in names for i in self.people[n]]
        subject = [p for rows in subject for p in rows]
        subject += [q for n in names if (q := self.person_queries(n)) is not None]
        routers = [p for g in self.gates for p in g.parameters()]
        if self.qformer_family and self.settings.train_qformer:
            taken = {id(p) for p in subject + routers}
            routers += [p for p in self.hf.qformer.parameters() if id(p) not in taken]
        lora = [p for n, p in self.hf.named_parameters() if "lora_" in n]
        vision = [p for block in self._last_vision_blocks(vision_last_k) for p in block.parameters()]
        self.vision_trained = max(self.vision_trained, vision_last_k)
        groups = [("subject", subject, lr_subject), ("routers", routers, lr_qformer), ("lora", lora, lr_lora),
                  ("vision", vision, lr_vision)]
        for _, params, _ in groups:
            for p in params:
                p.requires_grad_(True)
        return [{"name": n, "params": ps, "lr": lr} for n, ps, lr in groups if ps]

    def _last_vision_blocks(self, k: int) -> list[nn.Module]:
        if k == 0:
            return []
        blocks = list(self.vision_blocks())
        if not 0 < k <= len(blocks):
            raise ConfigError(f"train_last_k must be in 0..{len(blocks)} (the vision blocks that feed the features); got {k}")
        return blocks[len(blocks) - k:]

    def _row(self, token_id: int) -> list[nn.Parameter]:
        emb, head = subject_tokens.subject_modules(self.hf)
        rows = [emb.new.params[emb.new.slot(token_id)]]
        if not head.tied:
            rows.append(head.new.params[head.new.slot(token_id)])
        return rows

    # --------------------------------------------------------------- packs
    def card_config(self) -> dict[str, Any]:
        return {"family": self.family, **self.settings.to_dict()}

    def extract_pack(self, names: list[str]) -> ConceptPack:
        """The people's rows (and query blocks), the routers, LoRA and β, copied out (card left empty)."""
        missing = [n for n in names if n not in self.people]
        if missing or not 1 <= len(names) <= 3:
            raise InputError(f"a pack holds 1-3 known people; asked for {names}, the model knows {list(self.people)}")
        subjects = {}
        for n in names:
            token, *details = self.people[n]
            rows = [self._row(i) for i in self.people[n]]
            parts = {"input": rows[0][0].detach().float().cpu().clone()}
            if len(rows[0]) > 1:
                parts["output"] = rows[0][1].detach().float().cpu().clone()
            q = self.person_queries(n)
            if q is not None:  # Q-former: the query block
                parts["queries"] = q.detach().float().cpu().clone()
            else:  # decoder-only: the detail tokens' rows play the N per-person vectors' part
                parts["queries"] = torch.stack([r[0].detach().float().cpu() for r in rows[1:]]) if details else \
                    torch.zeros(0, rows[0][0].numel())
                if details and len(rows[0]) > 1:
                    parts["details_output"] = torch.stack([r[1].detach().float().cpu() for r in rows[1:]])
            subjects[n] = parts
        shared = {k: p.detach().cpu().clone() for k, p in self._shared_parameters().items()}
        buffers = {"sparsity.beta": self.sparsity.beta.detach().cpu().clone()}
        return ConceptPack({}, subjects, shared, buffers)

    def _shared_parameters(self) -> dict[str, nn.Parameter]:
        router_ids = {id(p) for g in self.gates for p in g.parameters()}
        router_ids |= {id(p) for b in self._last_vision_blocks(self.vision_trained) for p in b.parameters()}
        out = {}
        for n, p in self.named_parameters():
            if id(p) in router_ids or "lora_" in n:
                out[n] = p
            elif self.qformer_family and self.settings.train_qformer and n.startswith("hf.qformer."):
                out[n] = p
        return out

    def write_pack(self, names: list[str], out: Path, data: dict | None = None, metrics: dict | None = None,
                   extra: dict | None = None) -> dict:
        """Write the pack of ``names`` (1-3 people learned together) to ``out`` atomically; returns its card
        (``extra``: further card fields, e.g. the reference video)."""
        pack = self.extract_pack(names)
        card = {
            "format": FORMAT, "version": VERSION, "name": names[0], "names": list(names),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "base": {"preset": None, "path": str(self.path.resolve()), "sha256": self.base_sha256,
                     "size_bytes": sum(f.stat().st_size for f in self.path.glob("*.safetensors")), "family": self.family,
                     "hash_of": "config.json"},
            "config": self.card_config(), "train_last_k": self.vision_trained, "data": data or {},
            "metrics": metrics or {},
            "tensors": {"subject": sum(t.numel() for p in pack.subjects.values() for t in p.values()),
                        "shared": sum(t.numel() for t in pack.shared.values())},
            **(extra or {}),
        }
        return save_pack(pack, card, out)

    def check_fits(self, pack: ConceptPack) -> None:
        """One InputError when ``pack`` was learned on another base or with other settings."""
        where = pack.path or "the pack"
        base = pack.card["base"]
        if base.get("family") != self.family or base["sha256"] != self.base_sha256:
            raise InputError(f"{where}: learned on another base ({base.get('family')}, config sha256 "
                             f"{base['sha256'][:12]}…) than {self.path} ({self.family}, {self.base_sha256[:12]}…); "
                             f"learn the person again on this base")
        if pack.card["config"] != self.card_config():
            diff = sorted(k for k in self.card_config() if pack.card["config"].get(k) != self.card_config()[k])
            raise InputError(f"{where}: learned with other settings ({', '.join(diff)} differ) than this model's")

    @torch.no_grad()
    def apply_pack(self, pack: ConceptPack) -> None:
        """Add the pack's people and copy in everything it holds (after :meth:`check_fits`)."""
        self.check_fits(pack)
        taken = [n for n in pack.names if n in self.people]
        if taken:
            raise InputError(f"{pack.path or 'pack'}: {', '.join(taken)} already loaded")
        for name, parts in pack.subjects.items():
            self.add_person(name)
            rows = [self._row(i) for i in self.people[name]]
            rows[0][0].copy_(parts["input"])
            if len(rows[0]) > 1:
                rows[0][1].copy_(parts["output"])
            q = self.person_queries(name)
            if q is not None:
                q.copy_(parts["queries"].to(q))
            else:
                for i, r in enumerate(rows[1:]):
                    r[0].copy_(parts["queries"][i])
                    if len(r) > 1:
                        r[1].copy_(parts["details_output"][i])
        params = dict(self.named_parameters())
        for name, t in pack.shared.items():
            if name not in params or params[name].shape != t.shape:
                raise InputError(f"{pack.path or 'pack'}: tensor {name} {tuple(t.shape)} does not fit this model")
            params[name].copy_(t.to(params[name]))
        self.sparsity.beta.copy_(pack.buffers["sparsity.beta"])


def load_local(model_class, path: Path, dtype: torch.dtype | None = None) -> nn.Module:
    """``model_class.from_pretrained`` from the local directory only, safetensors only, in ``dtype``."""
    kwargs = {"dtype": dtype} if dtype is not None else {}
    return model_class.from_pretrained(path, local_files_only=True, use_safetensors=True, **kwargs)


def processor_settings(path: Path, keep: tuple[str, ...], names=("preprocessor_config.json",)) -> dict[str, Any]:
    """The keys ``keep`` of the first of ``names`` saved beside the model (the frames' size and normalisation)."""
    for name in names:
        f = Path(path) / name
        if f.is_file():
            return {k: v for k, v in read_json(f).items() if k in keep}
    raise InputError(f"{path}: no {' or '.join(names)} (the frames' size and normalisation) next to the model")


def supervised(prompt_ids: list[int], answer_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids (1, L), labels (1, L)): labels −100 on the prompt, the answer's ids after it."""
    ids = torch.tensor([prompt_ids + answer_ids])
    labels = torch.tensor([[IGNORE_INDEX] * len(prompt_ids) + answer_ids])
    return ids, labels
