"""Attention whose heads are experts: plain MHA, MoH top-k routing and ReMoH (PVChat §3.3.1).

One module, three routing modes, usable as self- or cross-attention::

    x_t ──► query ─┐
    kv  ──► key ───┼─► softmax(QKᵀ/√d)V ─► H¹ … Hʰ   (B, h, T, d)   every head is computed
    kv  ──► value ─┘                             │
    x_t ──► balance (W_h) ─► [α1, α2]            ├─ × s_i per token and head
    x_t ──► router  (W_r) ─► routed scores ──────┘
                                                 ▼
                            output (W_O) ◄── concat_i(s_i Hⁱ)        Σ_i s_i Hⁱ W_Oⁱ   (Eq. 4)

Routing modes (``routing=``):

* ``mha``   s_i = 1 for every head: standard multi-head attention, the paper's baseline.
* ``moh``   MoH (Jin et al. 2024): shared heads weighted by ``n·softmax(W_s x)``, the top-k of the
  routed heads by ``k·renorm(topk(softmax(W_r x)))``, the two groups by ``2·softmax(W_h x)``.
  A load-balance loss ``E·Σ_i f_i P_i`` is returned in ``stats``.
* ``remoh`` ReMoH (Eq. 5–6): s_i = α1 for the n shared heads, s_i = α2·ReLU(W_r x_t)_i for the m
  routed heads, [α1, α2] = softmax(W_h x_t).

Gate scaling (our choice, documented here because it decides what a pretrained layer does at
init): both routing modes scale α by 2 (``α_scale``), and the ReMoH router has a bias initialised
to ``router_bias_init = 1`` with weights ~N(0, 1e-3). With W_h = 0 at init, 2·α1 = 2·α2 = 1 and
ReLU(W_r x + 1) ≈ 1, so every s_i ≈ 1 and a ReMoH layer loaded from plain attention weights
starts as that plain attention (dense), then SPR pushes the routed heads to the target sparsity —
ReMoE's dense-to-sparse schedule. The official code has no scaling and starts at
≈ 0.5·(shared heads) (pvchat-official.md §3.3); ``alpha_scale=1, router_bias_init=0`` reproduces
that, minus its logit clamps.

Regulariser gradients (``reg_grad=``): the SPR and HAE terms are functions of the router outputs
W_r x_t. With ``"all"`` (the paper, ReMoE) their gradient reaches W_r and, through x_t, every layer
below. With ``"router"`` the statistics they read are computed from x_t detached, so they move W_r
and its bias only; the forward pass and the LM gradient are unchanged. At CPU-demo scale (a
random-init model, learning rates ~100× the paper's) the sparsity terms' gradient through x_t
outweighs the LM's and the Q-former stops reading identity (README, "Status").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pvchat.errors import ConfigError, unknown_choice

ROUTING_MODES = ("mha", "moh", "remoh")
REG_GRAD_MODES = ("all", "router")


@dataclass
class RoutingStats:
    """What a routed attention layer reports each forward (all per token where shaped (B, T, ·)).

    Attributes:
        logits: routed-head router outputs before the nonlinearity, W_r x_t (+ b), (B, T, m).
        gates: routed scores after ReLU (remoh) or top-k softmax (moh), (B, T, m).
        alpha: [α1, α2] before scaling, (B, T, 2).
        head_scale: s_i for every head, (B, T, h).
        active_rate: fraction of tokens whose routed head i is active, (m,).  (no grad)
        sparsity: R_s = 1 − fraction of active routed scores, scalar.       (hard count, no grad)
        soft_sparsity: 1 − mean(sigmoid(τ·logits)), a differentiable stand-in for R_s.
        balance_loss: MoH load-balance loss E·Σ f_i P_i (moh only, else None).
    """

    logits: torch.Tensor
    gates: torch.Tensor
    alpha: torch.Tensor
    head_scale: torch.Tensor
    active_rate: torch.Tensor
    sparsity: torch.Tensor
    soft_sparsity: torch.Tensor
    balance_loss: torch.Tensor | None = None


class HeadRoutedAttention(nn.Module):
    """Multi-head attention with per-token head gates (``mha`` | ``moh`` | ``remoh``).

    Args:
        hidden_size: width of the query-side tokens x_t (and of the output).
        num_heads: h, the number of heads; ``hidden_size`` must divide by it.
        routing: ``"mha"``, ``"moh"`` or ``"remoh"``.
        num_shared_heads: n, heads 0..n−1 are always on; the other m = h − n are routed.
        top_k: b, the number of routed heads a token should use: MoH's top-k, and ReMoH's target
            (T_s = 1 − b/m, Eq. 9). Defaults to m // 2.
        kv_hidden_size: width of ``encoder_hidden_states`` for cross-attention (default hidden_size).
        attention_dropout: dropout on the attention probabilities (BERT's 0.1).
        alpha_scale: factor on [α1, α2] (2 keeps the mean gate at 1; see module docstring).
        router_bias_init: initial ReMoH router bias (1 starts dense; 0 starts as the official code).
        soft_tau: temperature of the differentiable activation measure sigmoid(τ·logit) used by HAE.
        reg_grad: ``"all"`` or ``"router"``: what the SPR/HAE gradients reach (module docstring).
        gates_only: build the routers alone, no Q/K/V/O projections: the head gates of an attention
            layer that lives elsewhere (a pretrained decoder's, :mod:`pvchat.model.backbones.remoh`);
            :meth:`head_gates` is then the module's only use.
        router_std: std of W_r at init; 0 with ``router_bias_init=1`` makes every s_i exactly 1, so
            a patched pretrained layer computes exactly what it did before training.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        routing: str = "mha",
        num_shared_heads: int = 0,
        top_k: int | None = None,
        kv_hidden_size: int | None = None,
        attention_dropout: float = 0.0,
        alpha_scale: float = 2.0,
        router_bias_init: float = 1.0,
        soft_tau: float = 10.0,
        reg_grad: str = "all",
        gates_only: bool = False,
        router_std: float = 1e-3,
    ):
        super().__init__()
        if routing not in ROUTING_MODES:
            raise unknown_choice("routing", routing, ROUTING_MODES)
        if reg_grad not in REG_GRAD_MODES:
            raise unknown_choice("reg_grad", reg_grad, REG_GRAD_MODES)
        if num_heads <= 0 or (hidden_size % num_heads and not gates_only):
            raise ConfigError(f"hidden_size {hidden_size} must be a positive multiple of num_heads {num_heads}")
        num_routed = num_heads - num_shared_heads
        if routing != "mha":
            if not 0 <= num_shared_heads < num_heads:
                raise ConfigError(
                    f"num_shared_heads must be in [0, num_heads-1] = [0, {num_heads - 1}] so that at least one "
                    f"head is routed; got {num_shared_heads}"
                )
            top_k = num_routed // 2 if top_k is None else top_k
            if not 1 <= top_k <= num_routed:
                raise ConfigError(f"top_k must be in [1, {num_routed}] (the routed heads); got {top_k}")
        self.hidden_size, self.num_heads, self.head_dim = hidden_size, num_heads, hidden_size // num_heads
        self.routing, self.num_shared, self.num_routed = routing, num_shared_heads, num_routed
        self.top_k, self.alpha_scale, self.soft_tau, self.reg_grad = top_k, alpha_scale, soft_tau, reg_grad
        self.attention_dropout = attention_dropout
        self.gates_only = gates_only
        kv_hidden_size = kv_hidden_size or hidden_size

        if gates_only:
            if routing == "mha":
                raise ConfigError("gates_only needs routing 'moh' or 'remoh' (mha has no gates)")
        else:
            self.query = nn.Linear(hidden_size, hidden_size)
            self.key = nn.Linear(kv_hidden_size, hidden_size)
            self.value = nn.Linear(kv_hidden_size, hidden_size)
            self.output = nn.Linear(hidden_size, hidden_size)
        if routing != "mha":
            self.router = nn.Linear(hidden_size, num_routed, bias=routing == "remoh")  # W_r
            self.balance = nn.Linear(hidden_size, 2, bias=False)  # W_h
            if routing == "moh" and num_shared_heads > 1:
                self.shared_router = nn.Linear(hidden_size, num_shared_heads, bias=False)  # MoH's W_s
            self.reset_router_parameters(router_bias_init, router_std)

    @property
    def target_sparsity(self) -> float:
        """T_s = 1 − b/m (Eq. 9), the fraction of routed scores that should be zero."""
        return 1.0 - self.top_k / self.num_routed if self.routing != "mha" else 0.0

    def reset_router_parameters(self, router_bias_init: float = 1.0, router_std: float = 1e-3) -> None:
        """Routers start (nearly) uniform: W_h = 0, W_r ~ N(0, router_std), ReMoH bias = router_bias_init."""
        if router_std > 0:
            nn.init.normal_(self.router.weight, std=router_std)
        else:
            nn.init.zeros_(self.router.weight)
        if self.router.bias is not None:
            nn.init.constant_(self.router.bias, router_bias_init)
        nn.init.zeros_(self.balance.weight)
        if hasattr(self, "shared_router"):
            nn.init.zeros_(self.shared_router.weight)

    # ------------------------------------------------------------------ gates
    def head_gates(self, x: torch.Tensor) -> tuple[torch.Tensor, RoutingStats]:
        """s_i per token for every head, (B, T, h), and the routing statistics (Eq. 5–6)."""
        return self._head_gates(x)

    def _head_gates(self, x: torch.Tensor) -> tuple[torch.Tensor, RoutingStats]:
        """s_i per token for every head, (B, T, h), and the routing statistics."""
        alpha = torch.softmax(self.balance(x), dim=-1)  # [α1, α2], Eq. 6       (B, T, 2)
        a1, a2 = (self.alpha_scale * alpha).unbind(-1)
        logits = self.router(x)  # W_r x_t                                       (B, T, m)
        balance_loss = None
        if self.routing == "remoh":
            gates = F.relu(logits)  # ReLU(W_r x_t)_i, Eq. 5
            routed = a2.unsqueeze(-1) * gates
            shared = a1.unsqueeze(-1).expand(*x.shape[:-1], self.num_shared)
            active = gates > 0
        else:  # moh: top-k of softmax over routed heads, renormalised, × k (MoH paper / code)
            probs = torch.softmax(logits, dim=-1)
            top_vals, top_idx = probs.topk(self.top_k, dim=-1)
            active = torch.zeros_like(probs, dtype=torch.bool).scatter_(-1, top_idx, True)
            gates = torch.zeros_like(probs).scatter(-1, top_idx, top_vals / top_vals.sum(-1, keepdim=True))
            gates = gates * self.top_k
            routed = a2.unsqueeze(-1) * gates
            if hasattr(self, "shared_router"):
                shared = a1.unsqueeze(-1) * self.num_shared * torch.softmax(self.shared_router(x), dim=-1)
            else:
                shared = a1.unsqueeze(-1).expand(*x.shape[:-1], self.num_shared)
            # load balance E·Σ_i f_i P_i: f_i = fraction of tokens routed to head i, P_i = mean prob
            f = active.flatten(0, -2).float().mean(0)
            p = probs.flatten(0, -2).mean(0)
            balance_loss = self.num_routed * (f * p).sum()
        head_scale = torch.cat([shared, routed], dim=-1)  # (B, T, h)
        with torch.no_grad():
            active_rate = active.flatten(0, -2).float().mean(0)  # per routed head   (m,)
            sparsity = 1.0 - active.float().mean()  # R_s, hard count
        reg_logits, reg_gates = logits, gates  # what SPR (gates) and HAE (soft sparsity) differentiate
        if self.reg_grad == "router" and self.routing == "remoh":
            reg_logits = self.router(x.detach())
            reg_gates = F.relu(reg_logits)
        soft_sparsity = 1.0 - torch.sigmoid(self.soft_tau * reg_logits).mean()
        stats = RoutingStats(reg_logits, reg_gates, alpha, head_scale, active_rate, sparsity, soft_sparsity, balance_loss)
        return head_scale, stats

    # ---------------------------------------------------------------- forward
    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, RoutingStats | None]:
        """Attend from ``hidden_states`` (B, T, C) to itself or to ``encoder_hidden_states`` (B, S, C_kv).

        Args:
            hidden_states: query-side tokens x_t, (B, T, C); the routers read these.
            encoder_hidden_states: key/value tokens for cross-attention, (B, S, C_kv).
            attention_mask: which keys may be attended: bool/0-1 (B, S) or (B, T, S) with 1 = keep,
                or an additive float mask broadcastable to (B, h, T, S).

        Returns:
            ``(output, stats)``: output (B, T, C) after W_O; stats is None for ``mha``.
        """
        if self.gates_only:
            raise ConfigError("a gates_only HeadRoutedAttention has no projections; call head_gates(x)")
        B, T, C = hidden_states.shape
        kv = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        S = kv.shape[1]
        h, d = self.num_heads, self.head_dim

        # 1. per-head projections                                    (B, h, T|S, d)
        q = self.query(hidden_states).view(B, T, h, d).transpose(1, 2)
        k = self.key(kv).view(B, S, h, d).transpose(1, 2)
        v = self.value(kv).view(B, S, h, d).transpose(1, 2)

        # 2. every head attends: Hⁱ = softmax(q kᵀ/√d) v              (B, h, T, d)
        mask = _as_sdpa_mask(attention_mask, B, T, S, q.dtype)
        heads = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.attention_dropout if self.training else 0.0
        )

        # 3. heads as experts: scale head i by s_i (Eq. 4–6)         (B, h, T, d)
        stats = None
        if self.routing != "mha":
            head_scale, stats = self._head_gates(hidden_states)  # (B, T, h)
            heads = heads * head_scale.transpose(1, 2).unsqueeze(-1).to(heads.dtype)

        # 4. Σ_i s_i Hⁱ W_Oⁱ  ==  W_O · concat_i(s_i Hⁱ)               (B, T, C)
        out = self.output(heads.transpose(1, 2).reshape(B, T, C))
        return out, stats


def _as_sdpa_mask(mask: torch.Tensor | None, B: int, T: int, S: int, dtype: torch.dtype) -> torch.Tensor | None:
    """Normalise a key mask to what SDPA takes: bool keep-mask or additive float, (B, 1|h, T, S)."""
    if mask is None:
        return None
    if mask.dtype == torch.bool or not torch.is_floating_point(mask) or (mask.dim() <= 3 and _is_binary(mask)):
        keep = mask.bool()
        if keep.dim() == 2:  # (B, S)
            keep = keep[:, None, None, :]
        elif keep.dim() == 3:  # (B, T, S)
            keep = keep[:, None]
        return keep.expand(B, 1, T, S)
    return mask.to(dtype)  # additive, already broadcastable


def _is_binary(mask: torch.Tensor) -> bool:
    return bool(((mask == 0) | (mask == 1)).all())


__all__ = ["HeadRoutedAttention", "RoutingStats", "ROUTING_MODES"]
