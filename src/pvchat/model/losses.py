"""Sparsity control for ReMoH: SPR (Eq. 7–9) and HAE (Eq. 10); total loss Eq. 11.

Variants, selected by name so the paper's ablations and the official code can be compared:

=============  =================================================================================
``spr``        L_SPR = β · L_Reg
  "paper"      L_Reg = mean_t (1/m) Σ_i ReLU(W_r x_t)_i — the L1 norm of the router outputs (Eq. 8)
  "official"   L_Reg = Σ_i f_i · mean_t ReLU(W_r x_t)_i, f_i = fraction of tokens with head i on:
               ReMoE's load-balanced L1, as the official code computes it (pvchat-official.md §3.4)
  "off"        no SPR (Table 3, "w/o SPR")
``hae``        L_HAE = e^{2(R_s − T_s)} − 1 if R_s > T_s else 0 (Eq. 10)
  "paper"      R_s's value is the hard count, its gradient that of the soft rate
               1 − mean σ(τ·W_r x_t) (straight-through), so HAE really pushes routers back up
  "official"   R_s from the hard count only: same value, **no gradient**, weight 0.5 (official code)
  "off"        no HAE
=============  =================================================================================

β (Eq. 9) lives in each routed attention module as a saved fp32 buffer and is updated once per
optimizer step from the sparsity measured since the last update:
β ← clamp(β · e^{k (T_s − R_s)}, β_min, β_max), k = 0.8, β₀ = 1e-8 (official values).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pvchat.errors import unknown_choice
from pvchat.model.attention import HeadRoutedAttention, RoutingStats

SPR_MODES = ("paper", "official", "off")
HAE_MODES = ("paper", "official", "off")


@dataclass
class SparsityLossConfig:
    """How the ReMoH routers are regularised (paper §3.3.2)."""

    spr: str = "paper"
    hae: str = "paper"
    k: float = 0.8  # β update rate (Eq. 9), official value
    beta_init: float = 1e-8  # β₀, official value
    beta_min: float = 1e-15
    beta_max: float = 10.0
    hae_weight: float = 1.0  # Eq. 11 sums the terms unweighted; the official code uses 0.5
    moh_balance_weight: float = 0.01  # MoH's load-balance coefficient (MoH code default)

    def __post_init__(self):
        if self.spr not in SPR_MODES:
            raise unknown_choice("spr mode", self.spr, SPR_MODES)
        if self.hae not in HAE_MODES:
            raise unknown_choice("hae mode", self.hae, HAE_MODES)


def spr_regulariser(stats: RoutingStats, mode: str) -> torch.Tensor:
    """L_Reg of Eq. 8 for one module (before multiplying by β)."""
    gates = stats.gates  # (B, T, m), ≥ 0
    if mode == "paper":
        return gates.mean()  # mean over tokens of (1/m)·‖ReLU(W_r x_t)‖₁
    if mode == "official":
        f = (gates > 0).flatten(0, -2).float().mean(0)  # (m,) no grad
        return (f * gates.flatten(0, -2).mean(0)).sum()
    raise unknown_choice("spr mode", mode, SPR_MODES[:2])


def hae_loss(stats: RoutingStats, target_sparsity: float, mode: str) -> torch.Tensor:
    """Eq. 10: e^{2(R_s − T_s)} − 1 when the routed heads are sparser than the target, else 0."""
    r_hard = stats.sparsity.detach()
    if mode == "official":
        r = r_hard  # the official code's bool-count rate: the value, but no gradient
    elif mode == "paper":
        r = r_hard + (stats.soft_sparsity - stats.soft_sparsity.detach())  # straight-through
    else:
        raise unknown_choice("hae mode", mode, HAE_MODES[:2])
    if r_hard <= target_sparsity:
        return (r - r.detach()) * 0.0  # zero, but keeps the graph uniform
    return torch.exp(2.0 * (r - target_sparsity)) - 1.0


def routed_modules(model: nn.Module) -> list[HeadRoutedAttention]:
    """Every attention module with a router, in registration order."""
    return [m for m in model.modules() if isinstance(m, HeadRoutedAttention) and m.routing != "mha"]


class SparsityController(nn.Module):
    """Holds β per routed module (saved buffers) and turns routing stats into L_SPR + L_HAE.

    Stats from each forward are accumulated (R_s, no grad) and :meth:`step` applies Eq. 9 once
    per optimizer step with their mean, so gradient accumulation and evaluation never move β.
    """

    def __init__(self, num_modules: int, target_sparsity: list[float], config: SparsityLossConfig):
        super().__init__()
        self.config = config
        self.register_buffer("beta", torch.full((num_modules,), config.beta_init, dtype=torch.float32))
        self.register_buffer("target", torch.tensor(target_sparsity, dtype=torch.float32))
        self.register_buffer("_rs_sum", torch.zeros(num_modules), persistent=False)
        self.register_buffer("_rs_count", torch.zeros((), dtype=torch.long), persistent=False)

    def _apply(self, fn, recurse=True):
        # β stays fp32 when the model is cast to bf16/fp16 (like ReMoE's buffer)
        super()._apply(fn, recurse)
        self.beta.data = self.beta.data.float()
        return self

    def forward(self, stats: list[RoutingStats]) -> dict[str, torch.Tensor]:
        """Loss terms for one forward pass; also records R_s for the next β update when training."""
        cfg = self.config
        device = self.beta.device
        spr = torch.zeros((), device=device)
        hae = torch.zeros((), device=device)
        balance = torch.zeros((), device=device)
        for i, s in enumerate(stats):
            if s.balance_loss is not None:  # moh
                balance = balance + s.balance_loss
                continue
            if cfg.spr != "off":
                spr = spr + self.beta[i] * spr_regulariser(s, cfg.spr)  # Eq. 7
            if cfg.hae != "off":
                hae = hae + hae_loss(s, float(self.target[i]), cfg.hae)  # Eq. 10
        weight_hae = 0.5 if cfg.hae == "official" else cfg.hae_weight
        if self.training and stats:
            self._rs_sum += torch.stack([s.sparsity.detach().float() for s in stats]).to(device)
            self._rs_count += 1
        return {"spr": spr, "hae": weight_hae * hae, "moh_balance": cfg.moh_balance_weight * balance}

    @torch.no_grad()
    def step(self) -> None:
        """Eq. 9, once per optimizer step: β ← clamp(β·e^{k(T_s − R_s)}, β_min, β_max)."""
        if int(self._rs_count) == 0:
            return
        rs = self._rs_sum / self._rs_count
        beta = self.beta * torch.exp(self.config.k * (self.target - rs))
        self.beta.copy_(beta.clamp(self.config.beta_min, self.config.beta_max))
        self._rs_sum.zero_()
        self._rs_count.zero_()

    @torch.no_grad()
    def pool(self, reduce_sum) -> None:
        """Replace this process's R_s statistics by the sum over all processes (``reduce_sum``: an
        all-reduce of a tensor), so every rank moves β (Eq. 9) by the whole batch under DDP."""
        sums = reduce_sum(torch.cat([self._rs_sum, self._rs_count[None].to(self._rs_sum)]))
        self._rs_sum.copy_(sums[:-1])
        self._rs_count.fill_(int(sums[-1].round()))

    def last_sparsity(self) -> torch.Tensor:
        """Mean R_s per module since the last :meth:`step` (NaN if none)."""
        return self._rs_sum / self._rs_count.clamp(min=1) if int(self._rs_count) else torch.full_like(self._rs_sum, float("nan"))
