"""Subject tokens: the trainable ``<Name>`` and ``[PERSON]``/``[/PERSON]`` rows added to a causal LLM.

Paper §3.3/§4.1 and the official code (pvchat-official.md §2.5–2.6): one new token per subject
(``<sks>``), and ``[PERSON]``/``[/PERSON]`` around each name when several people are in play. The LLM
itself (build, load, LoRA) is :mod:`pvchat.model.llm`.

New-token rows — design choice
------------------------------
The paper intends the ``<sks>`` row to train at lr 1e-4 (§4.2, group 2); in the official code it
never does (§4.4.1: the optimizer holds a detached copy) and its ``lm_head`` row stays random
(§4.4.2). Here every new token gets its own row in the input embedding *and* in the output head,
and those rows are real, trainable parameters, while every original row stays frozen.

It is done with a small wrapper, not PEFT's ``trainable_token_indices``. PEFT 0.21's
``TrainableTokensWrapper`` does handle ``embed_tokens``, an untied ``lm_head`` and LoRA together,
but its token indices are fixed when the adapter is created, and once it wraps the embedding
``resize_token_embeddings`` fails ("Old embeddings are of type TrainableTokensWrapper"). A person
added after LoRA (a second concept pack) would then mean rebuilding the adapter. The wrapper
keeps three properties that this needs:

* The original table is never resized or written. New tokens get rows *beside* it, so AdamW
  (weight decay included) cannot touch an original row: none is in any optimizer group.
* Each new token is its own ``nn.Parameter`` of shape ``(D,)``. Adding a person later appends
  one parameter and leaves the earlier ones, and their optimizer state, alone. One person's rows
  can be frozen while another trains (:func:`set_subject_trainable`). A concept pack is just the
  rows (:func:`subject_token_state`).
* New rows are kept in float32 even when the base model is bf16, so a 1e-4 step is not rounded
  away (§4.4.4). A later ``model.to(dtype)`` casts them too.

::

    input_ids (B, L) ──► SubjectEmbedding: original id → frozen base row; new id → its own row ─► (B, L, D)
    hidden (B, L, D) ──► SubjectHead: frozen base logits (B, L, V0) ⧺ new-row logits (B, L, K) ─► (B, L, V0+K)

With tied embeddings (``tie_word_embeddings=True``) the head shares the embedding's new rows, as the
base rows are shared. An id inside the original table (a tokenizer shorter than the model's padded
vocabulary) gets an *override* row: the base row stays bit-identical but is no longer read.
``config.vocab_size`` is kept equal to the extended vocabulary, which HF's loss needs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from peft import PeftModel
from tokenizers import AddedToken
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from pvchat.errors import ConfigError, InputError

PERSON_DELIMITERS = ("[PERSON]", "[/PERSON]")


# -------------------------------------------------------------- new-row modules
class NewRows(nn.Module):
    """Rows for tokens outside a frozen table, one float32 ``(D,)`` parameter per token.

    Args:
        dim: row width D.
        base_vocab: V0, the number of rows of the frozen table beside it.
    """

    def __init__(self, dim: int, base_vocab: int):
        super().__init__()
        self.dim, self.base_vocab = dim, base_vocab
        self.params = nn.ParameterList()
        self.ids: list[int] = []  # slot → token id (the buffers below are its tensor forms)
        for buf in ("token_ids", "ext_slots", "over_ids", "over_slots"):  # token_ids: (K,) slot → id
            self.register_buffer(buf, torch.zeros(0, dtype=torch.long), persistent=False)

    def slot(self, token_id: int) -> int | None:
        return self.ids.index(token_id) if token_id in self.ids else None

    @property
    def vocab_size(self) -> int:
        """V0 + the number of rows that extend the table (ids ≥ V0 are contiguous)."""
        return max([self.base_vocab] + [i + 1 for i in self.ids])

    def add(self, token_id: int, value: torch.Tensor) -> nn.Parameter:
        if token_id > self.vocab_size:
            raise ConfigError(
                f"token id {token_id} leaves a gap after the model's {self.vocab_size} rows; the tokenizer has "
                "tokens the model lacks: call ensure_chat_tokens(tokenizer, model) before add_subject_tokens"
            )
        dtype = torch.float32 if value.is_floating_point() else value.dtype
        p = nn.Parameter(value.detach().to(dtype).clone().reshape(self.dim))
        self.params.append(p)
        self.ids.append(int(token_id))
        ids = self.ids
        device = value.device
        ext = sorted((i, s) for s, i in enumerate(ids) if i >= self.base_vocab)
        over = [(i, s) for s, i in enumerate(ids) if i < self.base_vocab]
        self.token_ids = torch.tensor(ids, dtype=torch.long, device=device)
        # cached index tensors for the head (no host sync per forward):
        self.ext_slots = torch.tensor([s for _, s in ext], dtype=torch.long, device=device)  # slots of V0, V0+1, …
        self.over_ids = torch.tensor([i for i, _ in over], dtype=torch.long, device=device)  # base rows replaced
        self.over_slots = torch.tensor([s for _, s in over], dtype=torch.long, device=device)
        return p

    def matrix(self, dtype: torch.dtype) -> torch.Tensor:
        """(K, D) in ``dtype``; gradients flow back to the float32 parameters."""
        return torch.stack(list(self.params)).to(dtype)


class SubjectEmbedding(nn.Module):
    """A frozen input embedding plus :class:`NewRows` (module docstring). ``base`` may later be LoRA-wrapped."""

    def __init__(self, base: nn.Embedding):
        super().__init__()
        self.base = base
        self.new = NewRows(base.embedding_dim, base.num_embeddings)

    @property
    def embedding_dim(self) -> int:
        return self.new.dim

    @property
    def num_embeddings(self) -> int:
        return self.new.vocab_size

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if not len(self.new.params):
            return self.base(input_ids)
        match = input_ids.unsqueeze(-1) == self.new.token_ids  # (B, L, K)
        is_new = match.any(-1)  # (B, L)
        base = self.base(input_ids.masked_fill(is_new, 0))  # (B, L, D), new positions masked out below
        new = F.embedding(match.long().argmax(-1), self.new.matrix(base.dtype))  # (B, L, D)
        return torch.where(is_new.unsqueeze(-1), new, base)


def word_embedding_matrix(llm: nn.Module) -> torch.Tensor:
    """(V', D) the LLM's input embedding matrix of its own tokens (the rows pvchat adds excluded:
    they live in :class:`NewRows`)."""
    emb = llm.get_input_embeddings()
    base = emb.base if isinstance(emb, SubjectEmbedding) else emb
    base = getattr(base, "base_layer", base)  # a LoRA-wrapped embedding
    return base.weight


class SubjectHead(nn.Module):
    """A frozen output head plus new rows; with ``tied`` the rows are the embedding's own."""

    def __init__(self, base: nn.Linear, tied: SubjectEmbedding | None = None):
        super().__init__()
        self.base = base
        self._tied = [tied] if tied is not None else []  # a list, so the shared rows are registered once
        if tied is None:
            self.own = NewRows(base.in_features, base.out_features)

    @property
    def new(self) -> NewRows:
        return self._tied[0].new if self._tied else self.own

    @property
    def tied(self) -> bool:
        return bool(self._tied)

    @property
    def out_features(self) -> int:
        return self.new.vocab_size

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.base(hidden)  # (B, L, V0)
        rows = self.new
        if not len(rows.params):
            return logits
        new = F.linear(hidden, rows.matrix(hidden.dtype)).to(logits.dtype)  # (B, L, K)
        if len(rows.ext_slots):  # new ids V0, V0+1, … extend the vocabulary
            logits = torch.cat([logits, new.index_select(-1, rows.ext_slots)], dim=-1)  # (B, L, V0+E)
        if len(rows.over_slots):  # ids inside the base table (padded vocabularies) replace its rows
            logits = logits.index_copy(-1, rows.over_ids, new.index_select(-1, rows.over_slots))
        return logits


# ----------------------------------------------------------------- subject tokens
def _unwrap(model: nn.Module) -> PreTrainedModel:
    return model.get_base_model() if isinstance(model, PeftModel) else model


def subject_modules(model: nn.Module, install: bool = False) -> tuple[SubjectEmbedding, SubjectHead] | None:
    """The (embedding, head) wrappers of ``model`` (installed first when ``install``), or None."""
    inner = _unwrap(model)
    emb, head = inner.get_input_embeddings(), inner.get_output_embeddings()
    if isinstance(emb, SubjectEmbedding) and isinstance(head, SubjectHead):
        return emb, head
    if not install:
        return None
    if not isinstance(emb, nn.Embedding) or not isinstance(head, nn.Linear):
        raise ConfigError(
            f"subject tokens need an nn.Embedding input table and an nn.Linear lm_head; got "
            f"{type(emb).__name__} and {type(head).__name__}"
        )
    if head.weight.shape[0] != emb.weight.shape[0]:
        raise ConfigError(f"input table has {emb.weight.shape[0]} rows but lm_head {head.weight.shape[0]}")
    new_emb = SubjectEmbedding(emb)
    new_head = SubjectHead(head, tied=new_emb if head.weight is emb.weight else None)
    inner.set_input_embeddings(new_emb)
    inner.set_output_embeddings(new_head)
    return new_emb, new_head


def ensure_vocab_size(model: nn.Module, size: int) -> None:
    """Make the model's vocabulary at least ``size`` (frozen rows), before subject tokens exist."""
    mods = subject_modules(model)
    if mods is not None:
        if size > mods[0].num_embeddings:
            raise ConfigError(
                f"the tokenizer has {size} tokens but the model {mods[0].num_embeddings} rows, and subject tokens "
                "are already installed: add chat tokens (ensure_chat_tokens) before subject tokens"
            )
        return
    if size > _unwrap(model).get_input_embeddings().weight.shape[0]:
        _unwrap(model).resize_token_embeddings(size, mean_resizing=False)


def token_for(name: str) -> str:
    """``"sks"`` → ``"<sks>"``; a name already in angle brackets (``"<sks>"``) is kept."""
    return name if name.startswith("<") and name.endswith(">") else f"<{name}>"


def _set_vocab_size(model: nn.Module, size: int) -> None:
    config = _unwrap(model).config
    for cfg in {id(c): c for c in (config, config.get_text_config())}.values():
        if getattr(cfg, "vocab_size", 0) < size:
            cfg.vocab_size = size


class _RowInit:
    """Initial values of new rows: an existing token keeps its base row; a new one starts at the
    mean row (+ per-dimension noise for inputs, so two new tokens differ), the average-embedding
    init of Hewitt (2021). Statistics are computed once per table."""

    def __init__(self, table: torch.Tensor):
        self.table = table
        self._stats: tuple[torch.Tensor, torch.Tensor] | None = None

    @torch.no_grad()
    def __call__(self, token_id: int, existed: bool, noise: bool) -> torch.Tensor:
        if existed and token_id < self.table.shape[0]:
            return self.table[token_id].float()
        if self._stats is None:
            self._stats = torch.std_mean(self.table.float(), dim=0)  # (D,), (D,)
        std, mean = self._stats
        return mean + std * torch.randn_like(std) if noise else mean.clone()


def add_subject_tokens(model: nn.Module, tokenizer: PreTrainedTokenizerBase, names: Sequence[str]) -> dict[str, int]:
    """Add ``[PERSON]``, ``[/PERSON]`` (once) and one token per name, each with trainable new rows.

    Idempotent: a name that already has rows keeps them untouched. Works before or after
    :func:`apply_lora`. Subject tokens are added as non-special ``AddedToken`` (never split, kept
    by ``decode(skip_special_tokens=True)``); the delimiters as special tokens.

    Subject rows start trainable. Delimiter rows start frozen: every subject's prompts share them,
    so training one person must not move them under another person's concept pack. A
    multi-person stage can unfreeze them with ``set_subject_trainable(model,
    person_delimiter_ids(tokenizer), True)``.

    Args:
        model: a HF causal LM or its ``PeftModel``.
        tokenizer: its tokenizer (modified in place).
        names: ``"sks"`` or ``"<sks>"`` style names.

    Returns:
        name → token id, for the given names.
    """
    bad = [n for n in names if not isinstance(n, str) or not n.strip("<>") or any(c.isspace() for c in n)]
    if bad:
        raise InputError(f"invalid subject names {bad}: use non-empty names without spaces, e.g. 'sks'")
    emb, head = subject_modules(model, install=True)
    if len(tokenizer) > emb.num_embeddings:  # checked before the tokenizer is touched
        raise ConfigError(
            f"the tokenizer has {len(tokenizer)} tokens but the model {emb.num_embeddings} rows: "
            "call ensure_chat_tokens(tokenizer, model) before add_subject_tokens"
        )
    wanted = [(t, True) for t in PERSON_DELIMITERS] + [(token_for(n), False) for n in names]
    vocab = tokenizer.get_vocab()
    existed = {t: t in vocab for t, _ in wanted}
    for tok, special in wanted:
        if not existed[tok]:
            tokenizer.add_tokens([AddedToken(tok, special=special, normalized=False)], special_tokens=special)
    init_in, init_out = _RowInit(emb.base.weight), _RowInit(head.base.weight)
    for tok, is_delimiter in wanted:
        token_id = tokenizer.convert_tokens_to_ids(tok)
        if emb.new.slot(token_id) is not None:
            continue
        rows = [emb.new.add(token_id, init_in(token_id, existed[tok], noise=True))]
        if not head.tied:
            rows.append(head.new.add(token_id, init_out(token_id, existed[tok], noise=False)))
        for p in rows:  # delimiters are shared by all subjects: frozen unless a multi-person stage unfreezes them
            p.requires_grad_(not is_delimiter)
    _set_vocab_size(model, emb.num_embeddings)
    return {n: tokenizer.convert_tokens_to_ids(token_for(n)) for n in names}


def person_delimiter_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    """``{"[PERSON]": id, "[/PERSON]": id}`` (after :func:`add_subject_tokens`)."""
    return {t: tokenizer.convert_tokens_to_ids(t) for t in PERSON_DELIMITERS}


def _row_params(model: nn.Module, ids: Mapping[str, int]) -> dict[str, nn.Parameter]:
    mods = subject_modules(model)
    if mods is None:
        raise ConfigError("the model has no subject tokens; call add_subject_tokens first")
    emb, head = mods
    out: dict[str, nn.Parameter] = {}
    for name, token_id in ids.items():
        slot = emb.new.slot(token_id)
        if slot is None:
            raise InputError(f"token id {token_id} ({name}) has no trainable row; call add_subject_tokens first")
        out[f"input.{name}"] = emb.new.params[slot]
        if not head.tied:
            out[f"output.{name}"] = head.new.params[head.new.slot(token_id)]
    return out


def _as_mapping(ids: Mapping[str, int] | Sequence[int]) -> Mapping[str, int]:
    return ids if isinstance(ids, Mapping) else {str(i): int(i) for i in ids}


def subject_token_state(model: nn.Module, ids: Mapping[str, int] | Sequence[int]) -> dict[str, torch.Tensor]:
    """The trained rows, ``{"input.<name>": (D,), "output.<name>": (D,)}`` (no ``output.*`` when tied),
    float32 on CPU: the LLM part of a concept pack. Keys use names, so a pack loads into a model
    where the token got another id."""
    return {k: p.detach().float().cpu().clone() for k, p in _row_params(model, _as_mapping(ids)).items()}


@torch.no_grad()
def load_subject_token_state(model: nn.Module, ids: Mapping[str, int] | Sequence[int], state: Mapping[str, torch.Tensor]) -> None:
    """Copy rows saved by :func:`subject_token_state` into ``model`` (the tokens must exist)."""
    ids = _as_mapping(ids)
    params = _row_params(model, ids)
    missing = sorted(set(params) - set(state))
    extra = sorted(k for k in state if k.split(".", 1)[-1] in ids and k not in params)  # e.g. output.* into a tied model
    if missing or extra:
        raise InputError(f"subject token state does not match the model (missing {missing}, unexpected {extra})")
    for key, p in params.items():
        if tuple(state[key].shape) != tuple(p.shape):
            raise InputError(f"subject token state {key}: shape {tuple(state[key].shape)} != {tuple(p.shape)}")
        p.copy_(state[key].to(p))


def set_subject_trainable(model: nn.Module, ids: Mapping[str, int] | Sequence[int], trainable: bool) -> None:
    """Freeze or unfreeze the rows of some subjects (e.g. keep person A fixed while B trains)."""
    for p in _row_params(model, _as_mapping(ids)).values():
        p.requires_grad_(trainable)


def new_token_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every new-token row (input and output), trainable or not."""
    mods = subject_modules(model)
    if mods is None:
        return []
    emb, head = mods
    return list(emb.new.params) + ([] if head.tied else list(head.new.params))
