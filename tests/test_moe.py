import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue import moe

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
F64 = torch.float64


def _logits(T, n, seed, device="cpu", dtype=F64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, n, generator=g, dtype=dtype).to(device)


# ------------------------------------------------------------------ routing and loads


@settings(max_examples=30, deadline=None)
@given(T=st.integers(1, 40), n=st.integers(1, 12), data=st.data(), seed=st.integers(0, 10_000))
def test_loads_sum_to_one_and_match_counts(T, n, data, seed):
    k = data.draw(st.integers(1, n))
    scores = _logits(T, n, seed)
    P, F = moe.load_stats(scores, k)
    torch.testing.assert_close(P.sum(), torch.tensor(1.0, dtype=F64), rtol=0, atol=1e-12)
    torch.testing.assert_close(F.sum(), torch.tensor(1.0, dtype=F64), rtol=0, atol=1e-12)
    idx = moe.route_topk(scores, k)
    counts = torch.bincount(idx.reshape(-1), minlength=n).double()
    torch.testing.assert_close(F, counts / (k * T), rtol=0, atol=1e-12)
    # each token's k experts are distinct and are its k largest scores
    assert all(len(set(row.tolist())) == k for row in idx)
    kth = scores.sort(dim=1, descending=True).values[:, k - 1 : k]
    assert bool((scores.gather(1, idx) >= kth).all())


def test_bias_changes_selection_only():
    scores = torch.tensor([[0.9, 0.5, 0.1]], dtype=F64)
    assert moe.route_topk(scores, 1).tolist() == [[0]]
    bias = torch.tensor([0.0, 0.0, 1.0], dtype=F64)
    assert moe.route_topk(scores, 1, bias).tolist() == [[2]]
    # a constant shift of the bias selects the same experts
    torch.testing.assert_close(moe.route_topk(scores, 2, bias), moe.route_topk(scores, 2, bias + 7.0))


def test_max_violation():
    assert moe.max_violation(torch.full((4,), 0.25)) == pytest.approx(0.0, abs=1e-7)
    assert moe.max_violation(torch.tensor([0.9, 0.1])) == pytest.approx(0.8, abs=1e-6)


def test_router_probs_normalizations():
    s = torch.rand(5, 3, dtype=F64) + 0.1
    torch.testing.assert_close(moe.router_probs(s, "sum").sum(1), torch.ones(5, dtype=F64))
    torch.testing.assert_close(moe.router_probs(s, None), s)
    torch.testing.assert_close(moe.router_probs(s, "softmax"), s.softmax(1))


# ----------------------------------------------------------------------- losses


def test_aux_loss_equals_its_formula_and_ste_gradient():
    logits = _logits(64, 6, 1).requires_grad_(True)
    P, F = moe.load_stats(logits, 2)
    value = moe.aux_loss(P, F)
    torch.testing.assert_close(value, 6 * (F * P).sum())
    (g_aux,) = torch.autograd.grad(value, logits)
    P2, F2 = moe.load_stats(logits, 2)
    (g_ste,) = torch.autograd.grad(6 * moe.ste_balance_loss(P2, F2), logits)
    torch.testing.assert_close(g_aux, g_ste, rtol=0, atol=1e-14)


def test_ste_balance_loss_values():
    P = torch.tensor([0.3, 0.7], dtype=F64, requires_grad=True)
    F = torch.tensor([0.5, 0.5], dtype=F64)
    sq = moe.ste_balance_loss(P, F)
    assert float(sq.detach()) == pytest.approx(0.0, abs=1e-15)  # value is that of F
    ent = moe.ste_balance_loss(P, F, form="entropy")
    assert float(ent.detach()) == pytest.approx(math.log(0.5))
    (g,) = torch.autograd.grad(ent, P)
    torch.testing.assert_close(g, torch.log(F) + 1)  # d/dP of sum P log F, plus the constant 1
    Q = torch.tensor([0.25, 0.75], dtype=F64)
    assert float(moe.ste_balance_loss(P, F, target=Q).detach()) == pytest.approx(0.0625)


def test_entropy_with_dead_expert_needs_eps():
    P = torch.tensor([0.5, 0.4, 0.1], dtype=F64, requires_grad=True)
    F = torch.tensor([0.5, 0.5, 0.0], dtype=F64)
    (g,) = torch.autograd.grad(moe.ste_balance_loss(P, F, form="entropy"), P)
    assert not bool(torch.isfinite(g).all())
    (g,) = torch.autograd.grad(moe.ste_balance_loss(P, F, form="entropy", eps=1e-6), P)
    assert bool(torch.isfinite(g).all())


def test_ste_value_and_gradient():
    a = torch.tensor([1.0, 2.0], requires_grad=True)
    out = moe.ste(torch.tensor([5.0, 6.0]), a * 3)
    torch.testing.assert_close(out.detach(), torch.tensor([5.0, 6.0]))
    out.sum().backward()
    torch.testing.assert_close(a.grad, torch.tensor([3.0, 3.0]))


# --------------------------------------------------------------------- bias update


@pytest.mark.parametrize("rule", moe.BIAS_RULES)
def test_bias_update_moves_loads_toward_balance(rule):
    g = torch.Generator().manual_seed(3)
    n, k, T = 8, 2, 2000
    x = torch.randn(T, 16, generator=g, dtype=F64) + 0.7 * torch.randn(16, generator=g, dtype=F64)
    scores = torch.sigmoid(x @ (torch.randn(16, n, generator=g, dtype=F64) / 4))
    b = torch.zeros(n, dtype=F64)
    _, F0 = moe.load_stats(scores, k, b, normalize="sum")
    for _ in range(300):
        _, F = moe.load_stats(scores, k, b, normalize="sum")
        b = moe.bias_update(b, F, 1e-3 if rule != "sgd" else 0.05, rule)
    _, F1 = moe.load_stats(scores, k, b, normalize="sum")
    assert moe.max_violation(F1) < 0.5 * moe.max_violation(F0)
    if rule != "sign":  # sum of F - Q is zero: these rules keep sum(b) fixed
        assert abs(float(b.sum())) < 1e-12


def test_bias_update_single_step_direction():
    b = torch.zeros(3, dtype=F64)
    F = torch.tensor([0.5, 0.3, 0.2], dtype=F64)
    for rule in moe.BIAS_RULES:
        step = moe.bias_update(b, F, 0.1, rule)
        assert float(step[0]) < 0 < float(step[2])  # over-loaded goes down, under-loaded up
    torch.testing.assert_close(moe.bias_update(b, F, 1.0, "sgd"), -(F - 1 / 3))


# ------------------------------------------------------------------------ noise floor


def test_uniform_router_floor_scales_like_sqrt():
    g = torch.Generator().manual_seed(0)
    m1, q1 = moe.uniform_router_floor(256, 8, 2, trials=200, generator=g)
    m4, q4 = moe.uniform_router_floor(4096, 8, 2, trials=200, generator=g)
    assert 0 < m1 < q1 and 0 < m4 < q4
    assert 2.5 < m1 / m4 < 6.0  # sqrt(16) = 4 for a max of near-Gaussian counts
    # k = n: every token uses every expert, no noise at all
    assert moe.uniform_router_floor(100, 4, 4, trials=20, generator=g) == pytest.approx((0.0, 0.0), abs=1e-6)


# ----------------------------------------------------------------------- the layer


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("score", moe.SCORE_FUNCTIONS)
@pytest.mark.parametrize("hidden", [None, 12])
def test_sparse_dispatch_equals_dense_reference(device, score, hidden):
    g = torch.Generator(device=device).manual_seed(5)
    layer = moe.MoE(6, 5, 2, hidden, score=score, renormalize=score == "sigmoid", generator=g, dtype=F64)
    x = torch.randn(33, 6, generator=g, device=device, dtype=F64)
    out = layer(x)
    torch.testing.assert_close(out.y, layer.dense_forward(x), rtol=0, atol=1e-12)
    torch.testing.assert_close(out.y, layer(x, dense=True).y, rtol=0, atol=1e-12)
    assert out.y.device.type == device
    assert out.indices.shape == (33, 2) and out.weights.shape == (33, 2)
    torch.testing.assert_close(out.F.sum(), torch.tensor(1.0, dtype=F64, device=device))
    # explicit per-token reference
    rho, _ = layer.scores(x)
    t = 7
    top = rho[t].topk(2).indices
    w = rho[t, top] / (rho[t, top].sum() if score == "sigmoid" else 1)
    ref = sum(w[j] * layer.expert(int(top[j]), x[t : t + 1])[0] for j in range(2))
    torch.testing.assert_close(out.y[t], ref, rtol=0, atol=1e-12)


def test_layer_gradients_flow_and_bias_update():
    g = torch.Generator().manual_seed(2)
    layer = moe.MoE(4, 4, 1, 8, generator=g)
    x = torch.randn(50, 4, generator=g)
    out = layer(x)
    (out.y.square().mean() + 0.01 * moe.aux_loss(out.P, out.F)).backward()
    assert layer.router.grad is not None and layer.w_in.grad is not None
    layer.update_bias(out.F, 1e-2)
    assert float(layer.bias.abs().max()) == pytest.approx(1e-2)
    assert isinstance(out.max_violation, float)


# ------------------------------------------------------------------------- bad input


def test_bad_inputs_raise():
    s = torch.randn(4, 3)
    with pytest.raises(ValueError, match="k"):
        moe.route_topk(s, 4)
    with pytest.raises(ValueError, match="k"):
        moe.route_topk(s, 0)
    with pytest.raises(ValueError, match="scores"):
        moe.route_topk(torch.randn(3), 1)
    with pytest.raises(TypeError, match="scores"):
        moe.route_topk(torch.ones(4, 3, dtype=torch.long), 1)
    with pytest.raises(ValueError, match="bias"):
        moe.route_topk(s, 1, torch.zeros(4))
    with pytest.raises(ValueError, match="normalize"):
        moe.load_stats(s, 1, normalize="max")
    with pytest.raises(ValueError, match="P and F"):
        moe.aux_loss(torch.rand(3), torch.rand(4))
    with pytest.raises(ValueError, match="form"):
        moe.ste_balance_loss(torch.rand(3), torch.rand(3), form="cube")
    with pytest.raises(ValueError, match="alpha"):
        moe.bias_update(torch.zeros(3), torch.rand(3), -1.0)
    with pytest.raises(ValueError, match="rule"):
        moe.bias_update(torch.zeros(3), torch.rand(3), 0.1, "adam")
    with pytest.raises(TypeError, match="indices"):
        moe.topk_indicator(torch.zeros(2, 1), 3)
    with pytest.raises(ValueError, match="trials"):
        moe.uniform_router_floor(10, 3, 1, trials=5)
    with pytest.raises(ValueError, match="score"):
        moe.MoE(4, 3, 1, score="relu")
    layer = moe.MoE(4, 3, 1)
    with pytest.raises(ValueError, match="x"):
        layer(torch.randn(5, 3))
    with pytest.raises(TypeError, match="x"):
        layer(torch.randn(5, 4, dtype=F64))
