import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue import autodiff, toys


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=1, max_value=6), st.integers(min_value=0, max_value=10_000))
def test_hvp_matches_explicit_hessian_of_a_quadratic(n, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=g, dtype=torch.float64)
    h = a @ a.T + torch.eye(n, dtype=torch.float64)
    x = torch.randn(n, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(n, generator=g, dtype=torch.float64)
    (hv,) = autodiff.hvp(lambda: 0.5 * x @ h @ x + x.sum() ** 3, [x], [v])
    exact = (h + 6 * x.sum().detach() * torch.ones(n, n, dtype=torch.float64)) @ v
    torch.testing.assert_close(hv, exact, rtol=1e-12, atol=1e-12)


def test_hvp_agrees_with_flat_hessian_on_an_mlp():
    torch.manual_seed(0)
    model = toys.mlp([3, 4, 2], act="tanh").double()
    x = torch.randn(5, 3, dtype=torch.float64)
    params = list(model.parameters())
    shapes = [p.shape for p in params]
    flat = autodiff.flatten([p.detach() for p in params])

    def loss_of_flat(theta):
        chunks, i = {}, 0
        for (name, p), shape in zip(model.named_parameters(), shapes, strict=True):
            chunks[name] = theta[i : i + p.numel()].view(shape)
            i += p.numel()
        return torch.func.functional_call(model, chunks, (x,)).pow(2).mean()

    hess = autodiff.flat_hessian(loss_of_flat, flat)
    v = torch.randn(flat.numel(), dtype=torch.float64)
    vs, i = [], 0
    for p in params:
        vs.append(v[i : i + p.numel()].view(p.shape))
        i += p.numel()
    hv = autodiff.flatten(autodiff.hvp(lambda: model(x).pow(2).mean(), model, vs))
    torch.testing.assert_close(hv, hess @ v, rtol=1e-10, atol=1e-12)


def test_per_sample_grads_sum_to_batch_gradient():
    torch.manual_seed(1)
    model = toys.mlp([4, 8, 3]).double()
    x = torch.randn(7, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (7,))
    loss_fn = torch.nn.functional.cross_entropy
    per = autodiff.per_sample_grads(model, loss_fn, x, y)
    assert per.shape == (7, sum(p.numel() for p in model.parameters()))
    model.zero_grad()
    loss_fn(model(x), y).backward()
    full = autodiff.flatten([p.grad for p in model.parameters()])
    torch.testing.assert_close(per.mean(0), full, rtol=1e-10, atol=1e-12)


def test_bad_inputs():
    x = torch.zeros(3, requires_grad=True)
    with pytest.raises(ValueError, match="vec"):
        autodiff.hvp(lambda: x.sum(), [x], [])
    with pytest.raises(ValueError, match=r"vec\[0\]"):
        autodiff.hvp(lambda: x.sum(), [x], [torch.zeros(2)])
    with pytest.raises(ValueError, match="does not require grad"):
        autodiff.hvp(lambda: x.sum(), [torch.zeros(3)], [torch.zeros(3)])
    with pytest.raises(TypeError, match="loss_fn"):
        autodiff.hvp(3, [x], [torch.zeros(3)])
    with pytest.raises(ValueError, match="theta"):
        autodiff.flat_hessian(lambda t: t.sum(), torch.zeros(2, 2))
    with pytest.raises(TypeError, match="model"):
        autodiff.per_sample_grads("model", torch.nn.functional.mse_loss, torch.zeros(2, 1), torch.zeros(2, 1))
    with pytest.raises(ValueError, match="same length"):
        autodiff.per_sample_grads(toys.mlp([1, 1]), torch.nn.functional.mse_loss, torch.zeros(2, 1), torch.zeros(3, 1))
