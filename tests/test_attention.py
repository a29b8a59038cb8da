"""HeadRoutedAttention: shapes, Eq. 4–6 by hand, routing edge cases, init, errors."""

import pytest
import torch

from pvchat.errors import ConfigError
from pvchat.model.attention import HeadRoutedAttention


def _pair(routing, **kw):
    torch.manual_seed(0)
    plain = HeadRoutedAttention(16, 4, "mha")
    routed = HeadRoutedAttention(16, 4, routing, num_shared_heads=2, top_k=1, **kw)
    routed.load_state_dict(plain.state_dict(), strict=False)
    return plain.eval(), routed.eval()


@pytest.mark.parametrize("routing", ["mha", "moh", "remoh"])
def test_shapes_self_and_cross(routing):
    attn = HeadRoutedAttention(16, 4, routing, num_shared_heads=2, top_k=1, kv_hidden_size=24)
    x, kv = torch.randn(3, 5, 16), torch.randn(3, 7, 24)
    out, stats = attn(x, encoder_hidden_states=kv)
    assert out.shape == (3, 5, 16)
    if routing == "mha":
        assert stats is None
        return
    assert stats.logits.shape == stats.gates.shape == (3, 5, 2)
    assert stats.alpha.shape == (3, 5, 2) and stats.head_scale.shape == (3, 5, 4)
    assert stats.active_rate.shape == (2,) and stats.sparsity.dim() == 0
    assert torch.allclose(stats.alpha.sum(-1), torch.ones(3, 5))


def test_remoh_matches_eq_4_to_6_by_hand():
    torch.manual_seed(1)
    attn = HeadRoutedAttention(8, 4, "remoh", num_shared_heads=2, top_k=1, alpha_scale=1.0).eval()
    with torch.no_grad():
        attn.router.weight.normal_()
        attn.router.bias.normal_()
        attn.balance.weight.normal_()
    x = torch.randn(1, 3, 8)
    out, stats = attn(x)

    d = 2
    q, k, v = attn.query(x)[0], attn.key(x)[0], attn.value(x)[0]
    expected = torch.zeros(3, 8)
    for t in range(3):
        alpha = torch.softmax(attn.balance.weight @ x[0, t], 0)  # Eq. 6
        routed = torch.relu(attn.router.weight @ x[0, t] + attn.router.bias)
        s = [alpha[0], alpha[0], alpha[1] * routed[0], alpha[1] * routed[1]]  # Eq. 5
        for i in range(4):
            sl = slice(i * d, (i + 1) * d)
            w = torch.softmax(q[t, sl] @ k[:, sl].T / d**0.5, 0)
            head = w @ v[:, sl]  # Hⁱ
            expected[t] += s[i] * head @ attn.output.weight[:, sl].T  # s_i Hⁱ W_Oⁱ, Eq. 4
        expected[t] += attn.output.bias
    torch.testing.assert_close(out[0], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stats.gates[0], torch.relu(x[0] @ attn.router.weight.T + attn.router.bias))


def test_all_routed_scores_zero_is_shared_heads_only():
    plain, routed = _pair("remoh")
    with torch.no_grad():
        routed.router.weight.zero_()
        routed.router.bias.fill_(-1.0)  # ReLU → every routed score is 0
        # shared-heads-only reference: plain attention with the routed heads' W_O columns removed
        plain.output.weight[:, 8:] = 0
    x = torch.randn(2, 6, 16)
    out, stats = routed(x)
    assert float(stats.sparsity) == 1.0 and stats.active_rate.sum() == 0
    torch.testing.assert_close(out, plain(x)[0])  # 2·α1 = 1 with W_h = 0 at init


@pytest.mark.parametrize("routing", ["remoh", "moh"])
def test_init_from_plain_attention_starts_close(routing):
    plain, routed = _pair(routing)
    x = torch.randn(2, 6, 16)
    ref = plain(x)[0]
    err = (routed(x)[0] - ref).abs().max() / ref.abs().max()
    if routing == "remoh":
        assert err < 1e-2  # dense start: every s_i ≈ 1
    else:  # MoH keeps shared + top-k routed heads at weight 1, drops the others: still same scale
        assert err < 1.0


def test_official_scaling_halves_the_output_at_init():
    plain, routed = _pair("remoh", alpha_scale=1.0, router_bias_init=0.0)
    with torch.no_grad():
        routed.router.weight.zero_()
        plain.output.weight[:, 8:] = 0
        plain.output.weight.mul_(0.5)
        plain.output.bias.mul_(2 / 2)
    x = torch.randn(1, 4, 16)
    out = routed(x)[0] - routed.output.bias
    torch.testing.assert_close(out, plain(x)[0] - plain.output.bias)


def test_moh_selects_top_k_and_balances():
    torch.manual_seed(0)
    attn = HeadRoutedAttention(24, 6, "moh", num_shared_heads=2, top_k=2)
    with torch.no_grad():
        attn.router.weight.normal_()
    out, stats = attn(torch.randn(2, 5, 24))
    assert ((stats.gates > 0).sum(-1) == 2).all()
    torch.testing.assert_close(stats.gates.sum(-1), torch.full((2, 5), 2.0))
    assert stats.balance_loss is not None and stats.balance_loss > 0
    stats.balance_loss.backward()
    assert attn.router.weight.grad.abs().sum() > 0


def test_key_mask_hides_keys():
    torch.manual_seed(0)
    attn = HeadRoutedAttention(16, 4, "remoh", num_shared_heads=2).eval()
    x = torch.randn(1, 5, 16)
    keep = torch.tensor([[1, 1, 1, 0, 0]], dtype=torch.bool)
    a = attn(x, attention_mask=keep)[0][:, :3]
    x2 = x.clone()
    x2[:, 3:] = torch.randn(1, 2, 16)  # change only masked tokens
    b = attn(x2, attention_mask=keep)[0][:, :3]
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(routing="sparse"), "choose one of: mha, moh, remoh"),
        (dict(routing="remoh", num_shared_heads=4), r"num_shared_heads must be in .*\[0, 3\]"),
        (dict(routing="remoh", num_shared_heads=5), r"num_shared_heads"),
        (dict(routing="moh", num_shared_heads=2, top_k=3), r"top_k must be in \[1, 2\]"),
    ],
)
def test_bad_configuration_names_valid_choices(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        HeadRoutedAttention(16, 4, **kwargs)
