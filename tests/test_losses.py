"""SPR (Eq. 7–9) and HAE (Eq. 10): values, gradients, β update and its persistence."""

import math

import pytest
import torch

from pvchat.errors import ConfigError
from pvchat.model.attention import HeadRoutedAttention
from pvchat.model.losses import SparsityController, SparsityLossConfig, hae_loss, spr_regulariser


def _routed(seed=0, bias=0.0):
    torch.manual_seed(seed)
    attn = HeadRoutedAttention(16, 4, "remoh", num_shared_heads=2, top_k=1, router_bias_init=bias)
    with torch.no_grad():
        attn.router.weight.normal_()
    return attn


def test_spr_paper_is_l1_of_router_outputs_and_has_gradient():
    attn = _routed()
    _, stats = attn(torch.randn(2, 6, 16))
    reg = spr_regulariser(stats, "paper")
    torch.testing.assert_close(reg, stats.gates.abs().mean())  # ‖(1/m) ReLU(W_r x)‖₁ averaged over tokens
    reg.backward()
    assert attn.router.weight.grad.abs().sum() > 0


def test_spr_official_is_load_balanced_l1():
    attn = _routed()
    _, stats = attn(torch.randn(2, 6, 16))
    g = stats.gates.reshape(-1, 2)
    expected = sum((g[:, i] > 0).float().mean() * g[:, i].mean() for i in range(2))
    torch.testing.assert_close(spr_regulariser(stats, "official"), expected)


def _overshooting_stats():
    attn = _routed(bias=-2.0)  # mostly inactive: R_s > T_s = 0.5
    _, stats = attn(torch.randn(4, 8, 16))
    assert float(stats.sparsity) > attn.target_sparsity
    return attn, stats


def test_hae_value_matches_eq_10():
    attn, stats = _overshooting_stats()
    expected = math.exp(2 * (float(stats.sparsity) - attn.target_sparsity)) - 1
    for mode in ("paper", "official"):
        assert float(hae_loss(stats, attn.target_sparsity, mode).detach()) == pytest.approx(expected, rel=1e-5)


def test_hae_paper_has_gradient_official_has_none():
    attn, stats = _overshooting_stats()
    hae_loss(stats, attn.target_sparsity, "paper").backward()
    grad = attn.router.bias.grad
    assert grad is not None and (grad < 0).all()  # descent raises the router bias: heads wake up

    attn, stats = _overshooting_stats()
    loss = hae_loss(stats, attn.target_sparsity, "official")
    assert not loss.requires_grad  # the official code's HAE cannot move any weight


def test_hae_is_zero_below_target():
    attn = _routed(bias=50.0)  # all active: R_s = 0 < T_s
    _, stats = attn(torch.randn(2, 6, 16))
    assert float(hae_loss(stats, attn.target_sparsity, "paper").detach()) == 0.0


def test_beta_updates_once_per_step_bounded_and_saved():
    cfg = SparsityLossConfig(beta_init=1e-3, beta_max=1e-2)
    ctrl = SparsityController(1, [0.5], cfg)
    attn = _routed(bias=50.0)  # every routed score positive: R_s = 0
    _, stats = attn(torch.randn(2, 6, 16))
    assert float(stats.sparsity) == 0.0
    ctrl.train()
    ctrl([stats])
    ctrl([stats])
    assert float(ctrl.beta) == pytest.approx(1e-3)  # forwards alone never move β
    ctrl.step()
    assert float(ctrl.beta) == pytest.approx(1e-3 * math.exp(0.8 * (0.5 - 0.0)), rel=1e-5)  # Eq. 9
    for _ in range(20):
        ctrl([stats])
        ctrl.step()
    assert float(ctrl.beta) == pytest.approx(1e-2)  # bounded by beta_max

    ctrl.eval()
    before = ctrl.beta.clone()
    ctrl([stats])
    ctrl.step()
    assert torch.equal(ctrl.beta, before)  # evaluation never moves β

    state = ctrl.state_dict()
    assert set(state) == {"beta", "target"}
    other = SparsityController(1, [0.5], cfg)
    other.load_state_dict(state)
    assert torch.equal(other.beta, ctrl.beta)
    assert other.to(torch.bfloat16).beta.dtype == torch.float32


def test_loss_terms_and_bad_modes():
    ctrl = SparsityController(1, [0.5], SparsityLossConfig(spr="off", hae="off"))
    _, stats = _overshooting_stats()
    out = ctrl([stats])
    assert float(out["spr"]) == 0 and float(out["hae"]) == 0
    with pytest.raises(ConfigError, match="choose one of: off, official, paper"):
        SparsityLossConfig(spr="l2")


@pytest.mark.parametrize("reg_grad", ["all", "router"])
def test_reg_grad_router_keeps_sparsity_terms_off_the_layers_below(reg_grad):
    torch.manual_seed(0)
    attn = HeadRoutedAttention(16, 4, "remoh", num_shared_heads=2, top_k=1, router_bias_init=-0.2, reg_grad=reg_grad)
    with torch.no_grad():
        attn.router.weight.normal_()
    x = torch.randn(4, 8, 16, requires_grad=True)
    out, stats = attn(x)
    reg = spr_regulariser(stats, "paper") + hae_loss(stats, attn.target_sparsity, "paper")
    reg.backward()
    assert attn.router.weight.grad.abs().sum() > 0  # the routers are regularised either way
    reached_x = x.grad is not None and x.grad.abs().sum() > 0
    assert reached_x == (reg_grad == "all")
    # the forward pass (and so the LM gradient) is the same in both modes
    torch.manual_seed(0)
    other = HeadRoutedAttention(16, 4, "remoh", num_shared_heads=2, top_k=1, router_bias_init=-0.2)
    other.load_state_dict(attn.state_dict())
    torch.testing.assert_close(other(x)[0], out)


def test_reg_grad_mode_is_checked():
    with pytest.raises(ConfigError, match="reg_grad"):
        HeadRoutedAttention(16, 4, "remoh", num_shared_heads=2, reg_grad="x")
