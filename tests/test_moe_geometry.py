import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue import moe_geometry as mg

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
F64 = torch.float64


def _ffn(d=6, D=12, N=5, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, d, generator=g, dtype=F64)
    W_A = torch.randn(d, D, generator=g, dtype=F64) / math.sqrt(d)
    W_B = torch.randn(D, d, generator=g, dtype=F64) / math.sqrt(D)
    return x.to(device), W_A.to(device), W_B.to(device)


# ---------------------------------------------------------------- expert_outputs


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n", [1, 2, 3, 4, 6, 12])
def test_expert_outputs_sum_to_ffn(device, n):
    x, W_A, W_B = _ffn(device=device)
    V = mg.expert_outputs(x, W_A, W_B, n)
    assert V.shape == (5, n, 6) and V.device.type == device
    torch.testing.assert_close(V.sum(1), torch.relu(x @ W_A) @ W_B, rtol=0, atol=1e-12)


def test_expert_outputs_block_order_matches_slicing():
    x, W_A, W_B = _ffn()
    V = mg.expert_outputs(x, W_A, W_B, 3, act=torch.tanh)
    for i in range(3):
        block = torch.tanh(x @ W_A[:, 4 * i : 4 * i + 4]) @ W_B[4 * i : 4 * i + 4]
        torch.testing.assert_close(V[:, i], block, rtol=0, atol=1e-13)


def test_expert_outputs_bad_input():
    x, W_A, W_B = _ffn()
    with pytest.raises(ValueError, match="n must divide"):
        mg.expert_outputs(x, W_A, W_B, 5)
    with pytest.raises(ValueError, match="x must have 6 columns"):
        mg.expert_outputs(x[:, :4], W_A, W_B, 2)
    with pytest.raises(ValueError, match="W_B must have 12 rows"):
        mg.expert_outputs(x, W_A, W_B[:10], 2)
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor"):
        mg.expert_outputs(x.numpy(), W_A, W_B, 2)
    with pytest.raises(TypeError, match="share a dtype"):
        mg.expert_outputs(x.float(), W_A, W_B, 2)
    with pytest.raises(ValueError, match="W_A must have 2 dimensions"):
        mg.expert_outputs(x, W_A[0], W_B, 2)


# ---------------------------------------------------------------- topk_mask


@pytest.mark.parametrize("device", DEVICES)
def test_topk_mask(device):
    s = torch.tensor([[0.1, 0.9, 0.5, 0.3], [4.0, -1.0, 2.0, 3.0]], device=device)
    m = mg.topk_mask(s, 2)
    assert m.dtype == s.dtype and m.device.type == device
    assert m.cpu().tolist() == [[0, 1, 1, 0], [1, 0, 0, 1]]


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 4), st.integers(2, 10), st.integers(0, 10**6))
def test_topk_mask_properties(N, n, seed):
    s = torch.randn(N, n, generator=torch.Generator().manual_seed(seed), dtype=F64)
    for k in range(1, n + 1):
        m = mg.topk_mask(s, k)
        assert torch.all(m.sum(1) == k)
        # every kept score is at least every dropped score
        kept_min = torch.where(m > 0, s, torch.inf).min(1).values
        dropped_max = torch.where(m > 0, -torch.inf, s).max(1).values
        assert torch.all(kept_min >= dropped_max)


def test_topk_mask_bad_input():
    s = torch.randn(3, 4)
    with pytest.raises(ValueError, match="k must be an int in"):
        mg.topk_mask(s, 0)
    with pytest.raises(ValueError, match="k must be an int in"):
        mg.topk_mask(s, 5)
    with pytest.raises(ValueError, match="scores must have 2 dimensions"):
        mg.topk_mask(s[0], 1)
    with pytest.raises(TypeError, match="scores must have a floating dtype"):
        mg.topk_mask(torch.ones(2, 3, dtype=torch.long), 1)


# ---------------------------------------------------------------- residuals


@pytest.mark.parametrize("device", DEVICES)
def test_subset_residual(device):
    V = torch.tensor([[[1.0, 0.0], [-0.9, 0.0], [0.0, 0.5]]], dtype=F64, device=device)
    total = math.hypot(0.1, 0.5)
    for keep, expected_sq in ((0, 53 / 50), (1, 5 / 4), (2, 1 / 100)):
        mask = torch.zeros(1, 3, dtype=F64, device=device)
        mask[0, keep] = 1
        r = mg.subset_residual(V, mask)
        assert r.shape == (1,)
        assert float(r) == pytest.approx(math.sqrt(expected_sq) / total, rel=1e-12)
    assert float(mg.subset_residual(V, torch.ones(1, 3, dtype=F64, device=device))) == 0.0


def test_subset_residual_bad_input():
    V = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="mask must have shape"):
        mg.subset_residual(V, torch.ones(2, 4))
    with pytest.raises(ValueError, match="V must have 3 dimensions"):
        mg.subset_residual(V[0], torch.ones(2, 3))


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 3), st.integers(2, 7), st.integers(1, 4), st.integers(0, 10**6))
def test_bruteforce_matches_enumeration(N, n, dim, seed):
    V = torch.randn(N, n, dim, generator=torch.Generator().manual_seed(seed), dtype=F64)
    for k in range(1, n + 1):
        mask, res = mg.best_subset_bruteforce(V, k)
        assert torch.all(mask.sum(1) == k)
        torch.testing.assert_close(res, mg.subset_residual(V, mask), rtol=1e-9, atol=1e-9)
        for subset in itertools.combinations(range(n), k):
            m = torch.zeros(N, n, dtype=F64)
            m[:, list(subset)] = 1
            assert torch.all(mg.subset_residual(V, m) >= res - 1e-9)


def test_bruteforce_orthogonal_keeps_longest():
    q, _ = torch.linalg.qr(torch.randn(8, 5, generator=torch.Generator().manual_seed(1), dtype=F64))
    s = torch.tensor([[0.3, 2.0, 1.0, 0.1, 1.5]], dtype=F64)
    V = s.unsqueeze(-1) * q.T.unsqueeze(0)
    mask, _ = mg.best_subset_bruteforce(V, 2)
    assert mask.tolist() == [[0, 1, 0, 0, 1]]


@pytest.mark.parametrize("device", DEVICES)
def test_bruteforce_device_and_limit(device):
    V = torch.randn(4, 6, 3, dtype=F64, device=device)
    mask, res = mg.best_subset_bruteforce(V, 3)
    assert mask.device.type == device and res.device.type == device
    with pytest.raises(ValueError, match="exceeds max_subsets"):
        mg.best_subset_bruteforce(V, 3, max_subsets=10)
    with pytest.raises(ValueError, match="k must be an int in"):
        mg.best_subset_bruteforce(V, 7)


# ---------------------------------------------------------------- GeometricMoE


def _moe(k=2, router_act="sigmoid", norm="l2", device="cpu", eps=1e-6):
    return mg.GeometricMoE(
        8, 4, 3, k, router_act=router_act, norm=norm, eps=eps, dtype=F64, device=device,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("router_act", mg.ROUTER_ACTIVATIONS)
def test_geometric_moe_dense_at_k_equals_n(device, router_act):
    moe = _moe(k=4, router_act=router_act, device=device)
    x = torch.randn(10, 8, dtype=F64, device=device)
    torch.testing.assert_close(moe(x), moe.dense(x), rtol=0, atol=1e-12)


def test_geometric_moe_matches_reference():
    moe = _moe(k=2)
    x = torch.randn(7, 8, dtype=F64, generator=torch.Generator().manual_seed(3))
    p = moe.scores(x)
    V = mg.expert_outputs(x, moe.W_A, moe.W_B, 4)
    e = V / V.norm(dim=-1, keepdim=True)
    ref = (mg.topk_mask(p, 2).unsqueeze(-1) * p.unsqueeze(-1) * e).sum(1)
    torch.testing.assert_close(moe(x), ref, rtol=0, atol=1e-12)
    assert moe.last_selection.shape == (7, 2)
    assert torch.equal(mg.topk_mask(p, 2), torch.zeros(7, 4, dtype=F64).scatter_(1, moe.last_selection, 1.0))


def test_geometric_moe_contribution_norm_is_score():
    moe = _moe(k=4)
    x = torch.randn(6, 8, dtype=F64)
    V = moe.expert_terms(x)
    alive = V.norm(dim=-1) > 0  # a ReLU expert with c = 3 units is entirely off w.p. 1/8
    e = moe.normalize(V)
    torch.testing.assert_close(e.norm(dim=-1), alive.to(F64), rtol=0, atol=1e-12)  # dead experts give e = 0
    rms = _moe(k=4, norm="rms", eps=1e-30)  # eps inside the root biases small outputs
    e_rms = rms.normalize(rms.expert_terms(x)).norm(dim=-1)
    torch.testing.assert_close(e_rms[alive], torch.full_like(e_rms[alive], math.sqrt(8)), rtol=1e-5, atol=0)


def test_geometric_moe_unselected_experts_get_no_gradient():
    moe = _moe(k=1, router_act="sigmoid")
    x = torch.randn(1, 8, dtype=F64, generator=torch.Generator().manual_seed(5))
    (moe(x) * torch.ones(8, dtype=F64)).sum().backward()
    chosen = int(moe.last_selection[0, 0])
    for i in range(4):
        grad_a = moe.W_A.grad.view(8, 4, 3)[:, i]
        grad_r = moe.W_R.grad[:, i]
        if i == chosen:
            assert grad_a.abs().max() > 0
        else:
            assert torch.all(grad_a == 0) and torch.all(grad_r == 0)


def test_geometric_moe_bad_input():
    with pytest.raises(ValueError, match="router_act"):
        mg.GeometricMoE(4, 2, 2, 1, router_act="tanh")
    with pytest.raises(ValueError, match="norm must be"):
        mg.GeometricMoE(4, 2, 2, 1, norm="l1")
    with pytest.raises(ValueError, match="k must be an int in"):
        mg.GeometricMoE(4, 2, 2, 3)
    with pytest.raises(ValueError, match="eps"):
        mg.GeometricMoE(4, 2, 2, 1, eps=0.0)
    moe = _moe()
    with pytest.raises(ValueError, match="x must have shape"):
        moe(torch.randn(3, 5, dtype=F64))
    with pytest.raises(TypeError, match="dtype and device"):
        moe(torch.randn(3, 8))
