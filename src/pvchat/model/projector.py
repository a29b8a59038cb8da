"""Q-former outputs → LLM input embeddings: the paper's linear projector, or word mixtures.

``linear`` is the paper's step 3 (Fig. 4): one ``nn.Linear`` into the LLM's embedding space.

``words`` (the ``small`` preset) writes each visual token in the LLM's own vocabulary, so a small
LLM reads what the Q-former saw with the word embeddings it was pretrained on, instead of learning
a new input space from a few hundred CPU steps (README "Status": with the linear projector the
aligned base answered every clip alike)::

    p = W q + b                                           (W1)  (B, Q, D_llm)
    π = softmax( s · ⟨LN(p)/√D, Ê_v⟩ )  over v < V        (W2)  Ê: the LLM's word embeddings, unit norm
    token = π E + g · p                                   (W3)  a mixture of words, plus a learned residual

E is the LLM's input embedding matrix (read at call time, never copied or trained here); V is
its own vocabulary, without the tokens pvchat adds (chat markers, people). π is returned so
the answer-words loss (:func:`answer_words_loss`) can ask the visual tokens for the words the
answer uses.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pvchat.errors import unknown_choice

PROJECTORS = ("linear", "words")
# s of (W2) at start: cosines lie in [-1, 1], and over ~49k words a scale of 30 leaves π nearly flat,
# so every visual token is close to the mean word embedding whatever the clip (measured: the LLM then
# ignores them); at 100 the best-matching words dominate from the first step
SCALE_INIT = 100.0

# words an answer uses that say nothing about the video (the template's and the question's own)
STOP_WORDS = frozenset(
    "a an the is are was were be in on of to and or with this that it its video clip person people "
    "he she they his her their what who where does do doing wearing wears clothes describe can see i "
    "appears appear visible clearly there here".split()
)


class WordProjector(nn.Module):
    """(W1–W3). ``vocab_size``: V, the rows of the embedding matrix that are the LLM's own words."""

    def __init__(self, in_dim: int, out_dim: int, vocab_size: int):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        self.norm = nn.LayerNorm(out_dim)
        self.log_scale = nn.Parameter(torch.tensor(math.log(SCALE_INIT)))
        self.gate = nn.Parameter(torch.tensor(0.0))
        self.vocab_size = vocab_size

    @property
    def out_features(self) -> int:
        return self.linear.out_features

    def forward(self, q: torch.Tensor, embeddings: torch.Tensor,
                candidates: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """q (B, Q, D_q), embeddings (≥ V, D_llm) → (tokens (B, Q, D_llm), π (B, Q, V)).

        ``candidates`` (K,) restricts (W2) to those word ids (π is then (B, Q, K)): a sampled softmax
        for the LLM-free warm-up (pretrain.warm_words), never for answering."""
        p = self.linear(q)  # (W1)
        E = embeddings[: self.vocab_size].detach()  # the LLM's words; never trained here        (V, D_llm)
        if candidates is not None:
            E = E[candidates]
        unit = E / E.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        logits = self.log_scale.exp() * (self.norm(p) / math.sqrt(p.shape[-1])) @ unit.to(p.dtype).T
        probs = logits.float().softmax(-1)  # (W2)                                                  (B, Q, V)
        tokens = probs.to(p.dtype) @ E.to(p.dtype) + self.gate * p  # (W3)
        return tokens, probs


def build_projector(kind: str, in_dim: int, out_dim: int, vocab_size: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    if kind == "words":
        return WordProjector(in_dim, out_dim, vocab_size)
    raise unknown_choice("projector", kind, PROJECTORS)


class AnswerWords:
    """Which answer tokens are content words: a token counts when its text has a letter and is not
    a stop word (case-insensitive), and it is one of the LLM's own words (id < V)."""

    def __init__(self, tokenizer, vocab_size: int):
        self.tokenizer, self.vocab_size = tokenizer, vocab_size
        self._cache: dict[int, bool] = {}

    def __call__(self, token_id: int) -> bool:
        if token_id not in self._cache:
            text = self.tokenizer.decode([token_id]).strip().lower()
            self._cache[token_id] = (token_id < self.vocab_size and any(c.isalpha() for c in text)
                                     and text not in STOP_WORDS)
        return self._cache[token_id]


def answer_words(labels: torch.Tensor, is_word: AnswerWords, ignore_index: int = -100) -> list[list[int]]:
    """Per sample, the content-word ids among its answer tokens (labels (B, L), ``ignore_index`` elsewhere)."""
    return [sorted({int(t) for t in row if int(t) != ignore_index and is_word(int(t))}) for row in labels]


def word_mixture(probs: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """P_b = mean over the sample's own visual tokens of π_{b,i}: (B, Q, V), (B, Q) → (B, V)."""
    return (probs * keep[..., None]).sum(1) / keep.sum(1, keepdim=True).clamp_min(1)


def answer_words_loss(probs: torch.Tensor, keep: torch.Tensor, words: list[list[int]]) -> torch.Tensor:
    """The visual tokens of a sample, as one bag of words, should hold its answer's content words:

        P_b(w) = mean_{i kept} π_{b,i}(w),   L = − mean_b mean_{w ∈ answer_b} log P_b(w)        (W4)

    probs (B, Q, V) from (W2), keep (B, Q) the sample's own visual tokens, ``words`` per sample the
    indices into π's last axis of its answer's content words (:func:`answer_words`). Samples
    without a content word add nothing."""
    mix = word_mixture(probs, keep)  # (B, V)
    terms = [-(mix[b, w] + 1e-6).log().mean() for b, w in enumerate(words) if w]
    return torch.stack(terms).mean() if terms else probs.sum() * 0
