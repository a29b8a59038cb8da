"""Forward+backward time of ReMoH and MoH attention relative to plain MHA, at the Q-former's shape.

    python bench/attention.py [--batch 2] [--repeats 30] [--device cpu]

Shapes as the official model (pvchat-official.md §2.3): 112 query tokens of width 768, 12 heads
(8 shared + 4 routed, target 2); self-attention over the queries and cross-attention to the
2049 vision tokens of width 1408. The three modes run interleaved in one process and the ratio
of medians is reported, so machine noise cancels instead of biasing one mode.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pvchat.model.attention import HeadRoutedAttention


def _step(attn, x, kv):
    out, stats = attn(x, encoder_hidden_states=kv)
    loss = out.float().square().mean()
    if stats is not None:
        loss = loss + 1e-3 * stats.gates.mean() + (stats.balance_loss if stats.balance_loss is not None else 0)
    loss.backward()


def bench(kind: str, batch: int, repeats: int, device: str) -> dict[str, float]:
    torch.manual_seed(0)
    kv_width, kv_len = (1408, 2049) if kind == "cross" else (None, 0)
    x = torch.randn(batch, 112, 768, device=device)
    kv = torch.randn(batch, kv_len, kv_width, device=device) if kind == "cross" else None
    mods = {r: HeadRoutedAttention(768, 12, r, num_shared_heads=8, top_k=2, kv_hidden_size=kv_width).to(device)
            for r in ("mha", "moh", "remoh")}
    times: dict[str, list[float]] = {r: [] for r in mods}
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(3):  # warm-up
        for m in mods.values():
            _step(m, x, kv)
    for _ in range(repeats):
        for r, m in mods.items():
            m.zero_grad(set_to_none=True)
            sync()
            t0 = time.perf_counter()
            _step(m, x, kv)
            sync()
            times[r].append(time.perf_counter() - t0)
    med = {r: statistics.median(t) for r, t in times.items()}
    return {"mha_ms": med["mha"] * 1e3, "moh/mha": med["moh"] / med["mha"], "remoh/mha": med["remoh"] / med["mha"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    print(f"device={a.device} threads={torch.get_num_threads()} batch={a.batch} repeats={a.repeats}")
    print(f"{'attention':<10} {'mha ms':>8} {'moh/mha':>8} {'remoh/mha':>10}")
    for kind in ("self", "cross"):
        r = bench(kind, a.batch, a.repeats, a.device)
        print(f"{kind:<10} {r['mha_ms']:8.2f} {r['moh/mha']:8.3f} {r['remoh/mha']:10.3f}")


if __name__ == "__main__":
    main()
