"""Tests of kexue.optim: the global gradient norm and the predicted-decrease learning-rate clip."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue import optim, toys

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


def _model_with_grads(device: str = "cpu", dtype: torch.dtype = torch.float64) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(0)
    model = toys.mlp([5, 7, 3]).to(dtype=dtype)
    x = torch.randn(11, 5, generator=gen, dtype=dtype)
    model = model.to(device)
    model(x.to(device)).pow(2).mean().backward()
    return model


# ----------------------------------------------------------------------------- global_grad_norm


@pytest.mark.parametrize("device", DEVICES)
def test_global_grad_norm_matches_clip_grad_norm_with_infinite_threshold(device):
    model = _model_with_grads(device)
    before = [p.grad.clone() for p in model.parameters()]
    reference = torch.nn.utils.clip_grad_norm_(model.parameters(), math.inf)
    ours = optim.global_grad_norm(model)
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=0)
    # global_grad_norm does not touch the gradients
    for p, g in zip(model.parameters(), before, strict=True):
        assert torch.equal(p.grad, g)


def test_global_grad_norm_is_the_norm_of_the_stacked_vector():
    model = _model_with_grads()
    flat = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    for order in (1.0, 2.0, 3.0, math.inf):
        expected = torch.linalg.vector_norm(flat, ord=order)
        torch.testing.assert_close(optim.global_grad_norm(model.parameters(), order), expected)


def test_global_grad_norm_scales_with_the_loss():
    model = _model_with_grads()
    base = optim.global_grad_norm(model)
    for p in model.parameters():
        p.grad.mul_(10.0)
    torch.testing.assert_close(optim.global_grad_norm(model), 10 * base, rtol=1e-14, atol=0)


def test_global_grad_norm_skips_missing_gradients_and_accepts_a_tensor():
    a = torch.zeros(3, requires_grad=True)
    b = torch.zeros(2, requires_grad=True)
    a.grad = torch.tensor([3.0, 0.0, 4.0])
    assert float(optim.global_grad_norm([a, b])) == pytest.approx(5.0)
    assert float(optim.global_grad_norm(a)) == pytest.approx(5.0)
    assert float(optim.global_grad_norm([b])) == 0.0


def test_global_grad_norm_rejects_bad_input():
    with pytest.raises(TypeError, match="params"):
        optim.global_grad_norm([torch.zeros(2), "not a tensor"])
    with pytest.raises(ValueError, match="norm_type"):
        optim.global_grad_norm([torch.zeros(2)], norm_type=0)


# ------------------------------------------------------------------------ predicted_decrease_lr


def test_predicted_decrease_lr_has_three_branches():
    g = torch.tensor([3.0, 4.0], dtype=torch.float64)  # |g|^2 = 25
    # u.g = 25 > T = 5: the learning rate is cut so that lr_t * (u.g) = lr * T
    assert optim.predicted_decrease_lr(0.1, g, g, 5.0) == pytest.approx(0.1 * 5.0 / 25.0, rel=1e-15)
    # 0 < u.g = 25 <= T = 30: unchanged
    assert optim.predicted_decrease_lr(0.1, g, g, 30.0) == 0.1
    # u.g = -25 <= 0: no decrease predicted, nothing to cap; the post's formula leaves lr unchanged
    assert optim.predicted_decrease_lr(0.1, -g, g, 5.0) == 0.1
    # u.g = 0 (orthogonal update)
    assert optim.predicted_decrease_lr(0.1, torch.tensor([4.0, -3.0], dtype=torch.float64), g, 5.0) == 0.1


def test_predicted_decrease_lr_is_continuous_at_the_threshold():
    g = torch.tensor([1.0, 2.0], dtype=torch.float64)  # u.g = 5
    below = optim.predicted_decrease_lr(1.0, g, g, 5.0 * (1 + 1e-12))
    above = optim.predicted_decrease_lr(1.0, g, g, 5.0 * (1 - 1e-12))
    assert below == 1.0
    assert above == pytest.approx(1.0, abs=1e-11)


@settings(max_examples=60, deadline=None)
@given(
    st.floats(min_value=1e-4, max_value=10.0),
    st.floats(min_value=1e-3, max_value=100.0),
    st.integers(min_value=1, max_value=20),
    st.integers(min_value=0, max_value=10_000),
)
def test_predicted_decrease_is_capped_and_never_increased(lr, T, n, seed):
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(n, generator=gen, dtype=torch.float64) * 3
    g = torch.randn(n, generator=gen, dtype=torch.float64) * 3
    s = float(u @ g)
    lr_t = optim.predicted_decrease_lr(lr, u, g, T)
    assert 0 < lr_t <= lr
    assert lr_t * s <= lr * T * (1 + 1e-12)  # the predicted decrease is capped at lr * T
    if s <= T:
        assert lr_t == lr
    else:
        assert lr_t * s == pytest.approx(lr * T, rel=1e-12)


def test_predicted_decrease_lr_sums_over_parameters():
    gen = torch.Generator().manual_seed(1)
    shapes = [(3, 4), (4,), (2, 3)]
    us = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    gs = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    flat_u = torch.cat([u.reshape(-1) for u in us])
    flat_g = torch.cat([g.reshape(-1) for g in gs])
    T = 0.01 * abs(float(flat_u @ flat_g))
    assert optim.predicted_decrease_lr(0.5, us, gs, T) == pytest.approx(
        optim.predicted_decrease_lr(0.5, flat_u, flat_g, T), rel=1e-14
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_predicted_decrease_lr_on_devices_and_dtypes(device, dtype):
    g = torch.tensor([3.0, 4.0], dtype=dtype, device=device)
    lr_t = optim.predicted_decrease_lr(1.0, [g], [g], 5.0)
    assert isinstance(lr_t, float)
    assert lr_t == pytest.approx(0.2, rel=1e-7)


def test_predicted_decrease_lr_rejects_bad_input():
    g = torch.ones(3)
    with pytest.raises(ValueError, match="lr"):
        optim.predicted_decrease_lr(0.0, g, g, 1.0)
    with pytest.raises(ValueError, match="lr"):
        optim.predicted_decrease_lr(math.nan, g, g, 1.0)
    with pytest.raises(ValueError, match="T"):
        optim.predicted_decrease_lr(0.1, g, g, 0.0)
    with pytest.raises(ValueError, match="T"):
        optim.predicted_decrease_lr(0.1, g, g, math.inf)
    with pytest.raises(ValueError, match="shape"):
        optim.predicted_decrease_lr(0.1, torch.ones(3), torch.ones(4), 1.0)
    with pytest.raises(ValueError, match="tensors"):
        optim.predicted_decrease_lr(0.1, [g, g], [g], 1.0)
    with pytest.raises(ValueError, match="update"):
        optim.predicted_decrease_lr(0.1, [], [], 1.0)
    with pytest.raises(TypeError, match="update"):
        optim.predicted_decrease_lr(0.1, "u", g, 1.0)
    with pytest.raises(TypeError, match=r"grad\[0\]"):
        optim.predicted_decrease_lr(0.1, g, torch.ones(3, dtype=torch.int64), 1.0)
    with pytest.raises(ValueError, match="not finite"):
        optim.predicted_decrease_lr(0.1, torch.tensor([math.inf, 1.0]), torch.ones(2), 1.0)
