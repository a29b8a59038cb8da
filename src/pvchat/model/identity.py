"""Identity-anchored subject queries: a person's query block starts from the person it matches.

The paper's subject queries (supp. S1) learn on their own to find their person among the vision
tokens; with a GPU-scale budget that works, on two CPU cores it did not (README "Status": 41
aligned blocks stayed at chance). The ``small`` preset's tower already carries a face embedding in
every person token (model/person_tower.py), so each subject gets a key k_s in that space (started
from the reference video's mean dlib embedding, learned with the block) and its block is primed
with what matches, frame by frame, with a learned null for "not here"::

    per frame t, over its person tokens j (present ones) and a null slot ∅:
        m_{s,t,j} = softmax_j( β (τ − ‖k_s − e_{t,j}‖) ),  logit(∅) = 0                    (A1)
        c_{s,t}   = Σ_j m_{s,t,j} x_{t,j} + m_{s,t,∅} n                                      (A2)
    prime_s = W_p · mean_t c_{s,t}   added to each of the block's N queries                 (A3)

β (sharpness) and τ (the distance where a face stops being the person, dlib's 0.6 at start) are
learned; n is a learned vector standing for "nobody matches". Everything after (self- and cross-
attention, ReMoH) is the paper's Q-former unchanged: the prime only tells the block where to look.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pvchat.errors import ConfigError

EMBED_DIM = 128


class IdentityAnchor(nn.Module):
    """Per-subject keys in face-embedding space and the priming of their query blocks (A1–A3).

    Args:
        vision_width: C, width of the vision tokens (the person tower's layout).
        hidden_size: D, the Q-former's width.
        embed_offset: where the 128-d face embedding starts in a vision token.
        present_index: the channel that is 1 on a person token with a face this frame.
    """

    def __init__(self, vision_width: int, hidden_size: int, embed_offset: int, present_index: int):
        super().__init__()
        if embed_offset + EMBED_DIM > vision_width or present_index >= vision_width:
            raise ConfigError(f"identity anchor: vision tokens of width {vision_width} hold no face embedding at "
                              f"{embed_offset}..{embed_offset + EMBED_DIM}")
        self.embed_offset, self.present_index = embed_offset, present_index
        self.keys = nn.ParameterList()
        self.log_beta = nn.Parameter(torch.tensor(math.log(20.0)))
        self.tau = nn.Parameter(torch.tensor(0.55))
        self.null = nn.Parameter(torch.zeros(vision_width))
        self.proj = nn.Linear(vision_width, hidden_size)
        nn.init.normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)

    def add_subject(self, key: torch.Tensor | None = None) -> int:
        ref = self.null
        k = torch.zeros(EMBED_DIM, device=ref.device, dtype=ref.dtype) if key is None else key.detach().clone()
        if k.shape != (EMBED_DIM,):
            raise ConfigError(f"an identity key is a {EMBED_DIM}-d face embedding, got shape {tuple(k.shape)}")
        self.keys.append(nn.Parameter(k.to(ref)))
        return len(self.keys) - 1

    def match(self, raw: torch.Tensor, blocks: list[int]) -> torch.Tensor:
        """(A1): raw tokens (B, T, N, C) → m (B, S', T, N + 1), the last slot being ∅."""
        e = raw[..., self.embed_offset:self.embed_offset + EMBED_DIM].float()  # (B, T, N, 128)
        present = raw[..., self.present_index] > 0.5  # (B, T, N)
        keys = torch.stack([self.keys[s] for s in blocks]).float()  # (S', 128)
        dist = torch.linalg.vector_norm(e[:, None] - keys[None, :, None, None], dim=-1)  # (B, S', T, N)
        logits = self.log_beta.exp() * (self.tau - dist)
        logits = logits.masked_fill(~present[:, None], float("-inf"))
        null = torch.zeros_like(logits[..., :1])
        return torch.cat([logits, null], -1).softmax(-1)

    def forward(self, raw: torch.Tensor, tokens: torch.Tensor, blocks: list[int]) -> torch.Tensor:
        """(A1–A3). raw (B, T, N, C) as the tower gave them (embeddings, presence flags), tokens the same
        after the frame position and norm, ``blocks`` the subject blocks in play → primes (B, S', D)."""
        if not blocks:
            return tokens.new_zeros(tokens.shape[0], 0, self.proj.out_features)
        m = self.match(raw, blocks).to(tokens.dtype)  # (B, S', T, N + 1)
        B, T, N, C = tokens.shape
        slots = torch.cat([tokens, self.null.to(tokens).expand(B, T, 1, C)], 2)  # (B, T, N + 1, C)
        pooled = torch.einsum("bstj,btjc->bsc", m, slots) / T  # (A2), averaged over frames      (B, S', C)
        return self.proj(pooled)  # (A3)                                                             (B, S', D)
