"""Q-former: BLIP-2 parity, ReMoH from BLIP-2 weights, subject query blocks and their masks."""

import pytest
import torch
from transformers import Blip2QFormerConfig, Blip2QFormerModel

from pvchat.errors import ConfigError
from pvchat.model.config import QFormerConfig
from pvchat.model.losses import routed_modules
from pvchat.model.qformer import QFormer

SIZES = dict(hidden_size=32, num_layers=4, num_heads=4, intermediate_size=64, dropout=0.0, attention_dropout=0.0)


def _blip2():
    torch.manual_seed(0)
    cfg = Blip2QFormerConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64,
                             encoder_hidden_size=24, cross_attention_frequency=2)
    return Blip2QFormerModel(cfg).eval()


def _qformer(routing="remoh", subjects=0, **kw):
    cfg = QFormerConfig(**SIZES, routing=routing, routed_layers=[2, 3], num_shared_heads=2, top_k=1,
                        num_general_queries=6, num_subject_queries=3, **kw)
    return QFormer(cfg, vision_width=24, num_subjects=subjects).eval()


@pytest.mark.parametrize("routing, tol", [("mha", 1e-6), ("remoh", 1e-2)])
def test_loads_blip2_qformer_and_matches_it(routing, tol):
    hf = _blip2()
    ours = _qformer(routing)
    queries = torch.randn(1, 6, 32)
    ours.load_blip2_qformer(hf.state_dict(), query_tokens=queries)
    vision = torch.randn(2, 10, 24)
    ref = hf(query_embeds=queries.expand(2, -1, -1), encoder_hidden_states=vision).last_hidden_state
    out, keep, stats = ours(vision)
    assert out.shape == (2, 6, 32) and keep.all()
    assert (out - ref).abs().max() < tol  # mha: exact; remoh: starts as the plain Q-former
    assert len(stats) == (0 if routing == "mha" else 3)  # self 2, 3 + cross 2


def test_blip2_mismatch_is_a_clear_error():
    hf = _blip2()
    ours = QFormer(QFormerConfig(**{**SIZES, "hidden_size": 16}, routing="mha", num_general_queries=6), 24)
    with pytest.raises(ConfigError, match="does not fit"):
        ours.load_blip2_qformer(hf.state_dict())


def test_official_layout_has_nine_remoh_modules_and_41508_router_params():
    with torch.device("meta"):
        q = QFormer(QFormerConfig(), vision_width=1408)
    mods = routed_modules(q)
    assert len(mods) == 9  # self-attn in layers 6–11 + cross-attn in layers 6, 8, 10
    router_params = sum(p.numel() for m in mods for p in [*m.router.parameters(), *m.balance.parameters()])
    assert router_params == 41_508  # pvchat-official.md §3.5
    assert all(m.num_shared == 8 and m.num_routed == 4 and m.target_sparsity == 0.5 for m in mods)


def test_masked_subject_queries_change_nothing():
    torch.manual_seed(0)
    q = _qformer(subjects=2)
    vision = torch.randn(2, 10, 24)
    mask = torch.tensor([[True, False], [True, True]])  # sample 0: only subject 0 in play
    out, keep, _ = q(vision, mask)
    assert out.shape == (2, 6 + 3 * 2, 32)
    assert keep[0].tolist() == [True] * 9 + [False] * 3 and keep[1].all()
    with torch.no_grad():
        q.subject_queries[1].add_(torch.randn(3, 32))  # change the masked subject's queries
    out2, _, _ = q(vision, mask)
    torch.testing.assert_close(out2[0, keep[0]], out[0, keep[0]])  # sample 0 unaffected
    assert not torch.allclose(out2[1], out[1])  # sample 1 has subject 1 in play: it matters

    alone, keep_alone, _ = q(vision[:1], mask[:1])  # the same sample in a batch of its own
    assert alone.shape == (1, 9, 32)
    torch.testing.assert_close(alone[0], out[0, keep[0]], atol=1e-5, rtol=1e-5)


def test_no_subject_in_play_uses_general_queries_only():
    q = _qformer(subjects=3)
    out, keep, _ = q(torch.randn(1, 10, 24), torch.zeros(1, 3, dtype=torch.bool))
    assert out.shape == (1, 6, 32)


def test_adding_a_subject_touches_nothing_else():
    q = _qformer(subjects=1)
    before = {k: v.clone() for k, v in q.state_dict().items()}
    idx = q.add_subject()
    after = q.state_dict()
    assert idx == 1 and set(after) - set(before) == {"subject_queries.1"}
    assert all(torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(ConfigError, match="subject_mask must be"):
        q(torch.randn(1, 10, 24), torch.zeros(1, 1, dtype=torch.bool))


def test_bad_qformer_config():
    with pytest.raises(ConfigError, match="routed_layers"):
        QFormerConfig(num_layers=4, routed_layers=[6])
    with pytest.raises(ConfigError, match="choose one of"):
        QFormerConfig(routing="topk")
