"""ReMoH on attention that someone else wrote: gates on the heads of a pretrained HF attention layer.

Eq. 4 writes the routed output as Σ_i s_i Hⁱ W_Oⁱ, which is W_O · concat_i(s_i Hⁱ): scaling head i's
slice of the output projection's *input* by s_i is the whole change. So a pretrained layer is
patched with two hooks and one new submodule, and its own weights and code stay as they are::

    hidden_states x_t (B, T, C) ─► attention module ─► heads concatenated (B, T, h·d) ─► W_O ─► (B, T, C)
          │ pre-hook: keep x_t                                   ▲ pre-hook on W_O: × s_i per head
          └──► head_router (HeadRoutedAttention, gates only): s (B, T, h) = [α1]ⁿ ⧺ α2·ReLU(W_r x_t)  (Eq. 5–6)

The router starts with W_r = 0, bias 1 and W_h = 0, so every s_i is exactly 1 and the patched
model computes bit for bit what the base did (tested per family) until training moves W_r.
Patch after LoRA: PEFT replaces W_O by a wrapper, and the hook must sit on what the layer calls.
The routers are float32 whatever the base's dtype (a 1e-5 step on bf16 weights rounds away).
"""

from __future__ import annotations

import torch
from torch import nn

from pvchat.errors import ConfigError
from pvchat.model.attention import HeadRoutedAttention

GATE = "head_router"  # the router's name inside the patched attention module


def route_heads(
    attention: nn.Module,
    out_proj: str,
    width: int,
    num_heads: int,
    routing: str = "remoh",
    num_shared_heads: int | None = None,
    top_k: int | None = None,
    reg_grad: str = "all",
) -> HeadRoutedAttention:
    """Put a head router on ``attention`` (an HF attention module) and return it.

    Args:
        attention: the module whose forward receives ``hidden_states`` (B, T, width) first.
        out_proj: dotted name of its output projection W_O inside ``attention`` (``"o_proj"``,
            ``"output.dense"``); its input is the h heads concatenated, (B, T, h·d).
        width: C, the width of ``hidden_states`` (what the router reads).
        num_heads: h, the query heads.
        routing: ``"remoh"`` (paper) or ``"moh"`` (top-k baseline).
        num_shared_heads: n always-on heads; default 2/3 of h (official: 8 of 12).
        top_k: b, the target number of routed heads per token (T_s = 1 − b/m, Eq. 9); default m // 2.
        reg_grad: what the SPR/HAE gradients reach (model/attention.py).
    """
    if hasattr(attention, GATE):
        raise ConfigError(f"{type(attention).__name__} already has a head router")
    shared = (2 * num_heads) // 3 if num_shared_heads is None else num_shared_heads
    proj = attention.get_submodule(out_proj)
    weight = next(proj.parameters())
    gate = HeadRoutedAttention(width, num_heads, routing=routing, num_shared_heads=shared, top_k=top_k,
                               reg_grad=reg_grad, gates_only=True, router_std=0.0, router_bias_init=1.0)
    gate.to(device=weight.device, dtype=torch.float32)
    attention.add_module(GATE, gate)
    seen: dict[str, torch.Tensor] = {}

    def keep_x(module, args, kwargs):
        seen["x"] = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]

    def scale_heads(module, args):
        heads = args[0]  # (B, T, h·d), head-major
        s, gate.stats = gate.head_gates(seen.pop("x").float())  # (B, T, h), Eq. 5–6
        B, T, HD = heads.shape
        heads = (heads.view(B, T, num_heads, HD // num_heads) * s.unsqueeze(-1).to(heads.dtype)).view(B, T, HD)
        return (heads, *args[1:])

    attention.register_forward_pre_hook(keep_x, with_kwargs=True)
    proj.register_forward_pre_hook(scale_heads)
    gate.stats = None
    return gate
