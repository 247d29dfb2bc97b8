import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue import lora

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
F64 = torch.float64


def _factors(n, m, r, seed, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    G = torch.randn(n, m, generator=g, dtype=F64).to(device)
    A = torch.randn(n, r, generator=g, dtype=F64).to(device)
    B = torch.randn(r, m, generator=g, dtype=F64).to(device)
    return G, A, B


# ---------------------------------------------------------------------- lora_grads


@pytest.mark.parametrize("device", DEVICES)
def test_lora_grads_match_autograd_through_the_merged_weight(device):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(7, 5, generator=g, dtype=F64).to(device)
    W0 = torch.randn(5, 4, generator=g, dtype=F64).to(device)
    C = torch.randn(7, 4, generator=g, dtype=F64).to(device)
    A = torch.randn(5, 2, generator=g, dtype=F64).to(device).requires_grad_(True)
    B = torch.randn(2, 4, generator=g, dtype=F64).to(device).requires_grad_(True)
    (C * (X @ W0 + (X @ A) @ B)).sum().backward()
    G = X.T @ C  # gradient of the linear loss <C, X W> with respect to W
    grad_A, grad_B = lora.lora_grads(G, A.detach(), B.detach())
    torch.testing.assert_close(grad_A, A.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad_B, B.grad, rtol=1e-12, atol=1e-12)
    assert grad_A.device.type == device and grad_A.dtype == F64


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 7), m=st.integers(1, 7), r=st.integers(1, 4), seed=st.integers(0, 10_000), c=st.floats(-3, 3))
def test_lora_grads_are_linear_in_g_and_have_the_factor_shapes(n, m, r, seed, c):
    G, A, B = _factors(n, m, r, seed)
    ga, gb = lora.lora_grads(G, A, B)
    assert ga.shape == A.shape and gb.shape == B.shape
    ca, cb = lora.lora_grads(c * G, A, B)
    torch.testing.assert_close(ca, c * ga, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(cb, c * gb, rtol=1e-12, atol=1e-12)


def test_lora_grads_bad_inputs():
    G, A, B = _factors(4, 3, 2, 0)
    with pytest.raises(TypeError, match="G"):
        lora.lora_grads(G.numpy(), A, B)
    with pytest.raises(ValueError, match="A must have 4 rows"):
        lora.lora_grads(G, A[:3], B)
    with pytest.raises(ValueError, match="B must have 3 columns"):
        lora.lora_grads(G, A, B[:, :2])
    with pytest.raises(ValueError, match="share the rank"):
        lora.lora_grads(G, A, B[:1])
    with pytest.raises(TypeError, match="B has dtype"):
        lora.lora_grads(G, A, B.float())
    with pytest.raises(ValueError, match="G must have 2 dimensions"):
        lora.lora_grads(G[0], A, B)
    with pytest.raises(TypeError, match="floating"):
        lora.lora_grads(G.long(), A, B)


# ------------------------------------------------------------------- lora_sgd_step


@pytest.mark.parametrize("device", DEVICES)
def test_sgd_step_reproduces_backprop_training_of_the_factors(device):
    g = torch.Generator().manual_seed(1)
    X = torch.randn(20, 6, generator=g, dtype=F64).to(device)
    T = torch.randn(20, 5, generator=g, dtype=F64).to(device)
    W0 = torch.randn(6, 5, generator=g, dtype=F64).to(device)
    A = torch.randn(6, 2, generator=g, dtype=F64).to(device)
    B = torch.randn(2, 5, generator=g, dtype=F64).to(device)
    W = W0 + A @ B  # merged weight seen by the optimizer
    A_opt, B_opt, lr = A.clone(), B.clone(), 0.05
    for _ in range(5):
        a, b = A.clone().requires_grad_(True), B.clone().requires_grad_(True)
        ((X @ W0 + (X @ a) @ b - T) ** 2).mean().backward()
        A, B = A - lr * a.grad, B - lr * b.grad
        w = W.clone().requires_grad_(True)
        ((X @ w - T) ** 2).mean().backward()
        A_opt, B_opt, delta = lora.lora_sgd_step(w.grad, A_opt, B_opt, lr)
        W = W + delta
    torch.testing.assert_close(A_opt, A, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(B_opt, B, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(W, W0 + A @ B, rtol=1e-10, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 6), m=st.integers(1, 6), r=st.integers(1, 3), seed=st.integers(0, 10_000))
def test_sgd_step_expansion(n, m, r, seed):
    G, A, B = _factors(n, m, r, seed)
    lr = 0.1
    _, _, delta = lora.lora_sgd_step(G, A, B, lr)
    expansion = -lr * (G @ B.T @ B + A @ A.T @ G) + lr**2 * G @ B.T @ A.T @ G
    scale = 1 + float((G.abs().sum() * (A.abs().sum() + B.abs().sum())) ** 2)
    assert float((delta - expansion).abs().max()) <= 1e-13 * scale


def test_sgd_step_bad_lr():
    G, A, B = _factors(3, 3, 1, 0)
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="lr"):
            lora.lora_sgd_step(G, A, B, bad)
    with pytest.raises(TypeError, match="lr"):
        lora.lora_sgd_step(G, A, B, "0.1")


# ---------------------------------------------------------------------- count_flops


def _impls(b, n, m, r, device):
    X = torch.randn(b, n, device=device)
    W0 = torch.randn(n, m, device=device)
    A = torch.randn(n, r, device=device, requires_grad=True)
    B = torch.randn(r, m, device=device, requires_grad=True)
    return X, W0, A, B


@pytest.mark.parametrize("device", ["meta", *DEVICES])
def test_count_flops_of_the_two_lora_orders(device):
    b, n, m, r = 8, 6, 5, 2
    X, W0, A, B = _impls(b, n, m, r, device)
    merged = lora.count_flops(lambda x, w, a, bb: x @ (w + a @ bb), X, W0, A, B)
    split = lora.count_flops(lambda x, w, a, bb: x @ w + (x @ a) @ bb, X, W0, A, B)
    assert merged == 4 * b * n * m + 6 * n * m * r
    assert split == 2 * b * n * m + 4 * b * n * r + 6 * b * m * r
    forward = lora.count_flops(lambda x, w: x @ w, X, W0, backward=False)
    assert forward == 2 * b * n * m


def test_count_flops_custom_loss_and_no_grad():
    X = torch.randn(3, 4)
    W = torch.randn(4, 2, requires_grad=True)
    assert lora.count_flops(lambda x, w: x @ w, X, W, loss=lambda y: (y**2).mean()) == 2 * 2 * 3 * 4 * 2
    with pytest.raises(ValueError, match="requires grad"):
        lora.count_flops(lambda x, w: x @ w, X, W.detach())
    with pytest.raises(TypeError, match="fn"):
        lora.count_flops(3, X)
    with pytest.raises(TypeError, match="loss"):
        lora.count_flops(lambda x: x, X, loss="sum")
    with pytest.raises(ValueError, match="scalar"):
        lora.count_flops(lambda x, w: x @ w, X, W, loss=lambda y: y)


def test_materialized_shapes_sees_the_merged_buffers():
    b, n, m, r = 8, 6, 5, 2
    X, W0, A, B = _impls(b, n, m, r, "meta")
    merged = lora.materialized_shapes(lambda x, w, a, bb: x @ (w + a @ bb), X, W0, A, B)
    split = lora.materialized_shapes(lambda x, w, a, bb: x @ w + (x @ a) @ bb, X, W0, A, B)
    assert (n, m) in [s for _, s in merged]
    assert (n, m) not in [s for _, s in split]
    # forward only: A B and W0 + A B are the two n x m buffers
    fwd = lora.materialized_shapes(lambda x, w, a, bb: x @ (w + a @ bb), X, W0, A, B, backward=False)
    assert [s for _, s in fwd if s == (n, m)] == [(n, m), (n, m)]
    assert all(op not in ("t", "expand", "detach") for op, _ in merged)


# --------------------------------------------------------------- reduced rank regression


@pytest.mark.parametrize("device", DEVICES)
def test_rrr_with_orthonormal_design_is_truncated_svd(device):
    g = torch.Generator().manual_seed(2)
    Q, _ = torch.linalg.qr(torch.randn(30, 6, generator=g, dtype=F64))
    Y = torch.randn(30, 4, generator=g, dtype=F64)
    Q, Y = Q.to(device), Y.to(device)
    W = lora.reduced_rank_regression(Q, Y, 2)
    U, S, Vh = torch.linalg.svd(Q.T @ Y)
    torch.testing.assert_close(W, (U[:, :2] * S[:2]) @ Vh[:2], rtol=1e-10, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 6), m=st.integers(2, 5), seed=st.integers(0, 10_000))
def test_rrr_rank_optimality_and_full_rank_limit(n, m, seed):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(3 * n + 2, n, generator=g, dtype=F64)
    Y = torch.randn(3 * n + 2, m, generator=g, dtype=F64)

    def loss(W):
        return float(((X @ W - Y) ** 2).sum())

    full = min(n, m)
    losses = [loss(lora.reduced_rank_regression(X, Y, r)) for r in range(1, full + 1)]
    assert all(a >= b - 1e-9 for a, b in itertools.pairwise(losses))  # more rank, lower loss
    W_ls = torch.linalg.lstsq(X, Y).solution
    assert math.isclose(losses[-1], loss(W_ls), rel_tol=1e-9, abs_tol=1e-9)
    W1 = lora.reduced_rank_regression(X, Y, 1)
    assert int(torch.linalg.matrix_rank(W1)) <= 1
    # better than other rank-1 candidates: the truncated SVD of W_ls and a random one
    U, S, Vh = torch.linalg.svd(W_ls)
    assert losses[0] <= loss(S[0] * torch.outer(U[:, 0], Vh[0])) + 1e-9
    assert losses[0] <= loss(torch.outer(torch.randn(n, generator=g, dtype=F64), W1.sum(0))) + 1e-9


def test_rrr_bad_inputs():
    X, Y = torch.randn(5, 3), torch.randn(5, 2)
    with pytest.raises(ValueError, match="rank"):
        lora.reduced_rank_regression(X, Y, 3)
    with pytest.raises(ValueError, match="rank"):
        lora.reduced_rank_regression(X, Y, 0)
    with pytest.raises(ValueError, match="same number of rows"):
        lora.reduced_rank_regression(X, Y[:4], 1)
    with pytest.raises(TypeError, match="Y"):
        lora.reduced_rank_regression(X, Y.double(), 1)


# ---------------------------------------------------------------- additive variant


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 7), m=st.integers(1, 7), seed=st.integers(0, 10_000))
def test_additive_projection_is_the_orthogonal_projection(n, m, seed):
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(n, m, generator=g, dtype=F64)
    P = lora.additive_projection(D)
    R = D - P
    # the residual is orthogonal to every a 1^T + 1 b: zero row and column sums
    torch.testing.assert_close(R.sum(1), torch.zeros(n, dtype=F64), atol=1e-12, rtol=0)
    torch.testing.assert_close(R.sum(0), torch.zeros(m, dtype=F64), atol=1e-12, rtol=0)
    torch.testing.assert_close(lora.additive_projection(P), P, atol=1e-12, rtol=0)
    a, b = torch.randn(n, 1, generator=g, dtype=F64), torch.randn(1, m, generator=g, dtype=F64)
    torch.testing.assert_close(lora.additive_projection(a + b), a + b, atol=1e-12, rtol=0)
    # against least squares on an explicit basis of the subspace
    basis = torch.stack(
        [torch.zeros(n, m, dtype=F64).index_fill_(0, torch.tensor([i]), 1.0).flatten() for i in range(n)]
        + [torch.zeros(n, m, dtype=F64).index_fill_(1, torch.tensor([j]), 1.0).flatten() for j in range(m)],
        dim=1,
    )
    coef = torch.linalg.lstsq(basis, D.flatten()[:, None], driver="gelsd").solution
    torch.testing.assert_close(P.flatten(), (basis @ coef).flatten(), atol=1e-10, rtol=0)


def test_tiled_identity():
    E = lora.tiled_identity(2, 6, dtype=F64)
    assert E.shape == (2, 6) and E.dtype == F64
    j = torch.arange(6)
    torch.testing.assert_close(E, (j[None, :] % 2 == torch.arange(2)[:, None]).to(F64))
    with pytest.raises(ValueError, match="divide"):
        lora.tiled_identity(4, 6)
    with pytest.raises(ValueError, match="r must be"):
        lora.tiled_identity(0, 6)
    if torch.cuda.is_available():
        assert lora.tiled_identity(3, 9, device="cuda").device.type == "cuda"
