import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue import adaptive, autodiff, toys

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_adam_matches_torch_optim_adam_without_noise(device):
    h = torch.tensor([0.5, 2.0, -0.3, 10.0], dtype=torch.float64, device=device)
    start = torch.tensor([1.0, -2.0, 0.5, 0.1], dtype=torch.float64, device=device)
    steps, lr, betas, eps = 40, 0.05, (0.8, 0.99), 1e-8
    out = adaptive.adam_on_noisy_quadratic(h, 0.0, steps, lr, betas=betas, eps=eps, reps=1, start=start, burn_frac=0.0)
    theta = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=lr, betas=betas, eps=eps)
    sqrt_vhat = torch.zeros_like(h)
    for t in range(1, steps + 1):
        opt.zero_grad()
        (0.5 * (h * theta**2).sum()).backward()
        opt.step()
        v = opt.state[theta]["exp_avg_sq"]
        sqrt_vhat += (v / (1 - betas[1] ** t)).sqrt()
    torch.testing.assert_close(out["theta"][0], theta.detach(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(out["m"][0], opt.state[theta]["exp_avg"], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(out["v"][0], opt.state[theta]["exp_avg_sq"], rtol=1e-12, atol=1e-16)
    torch.testing.assert_close(out["sqrt_vhat_mean"][0], sqrt_vhat / steps, rtol=1e-12, atol=1e-14)


def test_adam_noise_drives_sqrt_vhat_to_noise_std_when_curvature_is_negligible():
    # h ~ 0: the gradient is pure noise, so v_hat estimates noise_std^2.
    h = torch.full((4,), 1e-9, dtype=torch.float64)
    noise = torch.tensor([0.1, 1.0, 3.0, 10.0], dtype=torch.float64)
    out = adaptive.adam_on_noisy_quadratic(h, noise, 4000, 1e-3, reps=16, generator=torch.Generator().manual_seed(0))
    ratio = out["sqrt_vhat_mean"] / noise
    assert float((ratio.mean() - 1).abs()) < 0.02
    torch.testing.assert_close(
        out["grad_sq_mean"].mean(0) / noise**2, torch.ones(4, dtype=torch.float64), atol=0.05, rtol=0
    )
    # time averages are consistent: mean(v_hat) >= mean(sqrt(v_hat))^2 (Jensen)
    assert bool((out["vhat_mean"] >= out["sqrt_vhat_mean"] ** 2 * (1 - 1e-12)).all())


def test_adam_shapes_broadcast_and_shared_noise():
    h = torch.logspace(-1, 1, 5)
    noise = torch.tensor([[1.0], [1.0]])  # two identical rows
    gen = torch.Generator().manual_seed(1)
    out = adaptive.adam_on_noisy_quadratic(h, noise, 50, 1e-2, reps=3, shared_noise_dims=(0,), generator=gen)
    assert out["sqrt_vhat_mean"].shape == (3, 2, 5)
    # same noise in both rows and the same parameters: identical trajectories
    torch.testing.assert_close(out["theta"][:, 0], out["theta"][:, 1])
    out = adaptive.adam_on_noisy_quadratic(h, noise, 50, 1e-2, reps=3, generator=gen)
    assert not torch.equal(out["theta"][:, 0], out["theta"][:, 1])


def test_adam_is_reproducible_with_a_generator():
    h = torch.logspace(-1, 1, 4)
    a = adaptive.adam_on_noisy_quadratic(h, 0.5, 30, 1e-2, generator=torch.Generator().manual_seed(7))
    b = adaptive.adam_on_noisy_quadratic(h, 0.5, 30, 1e-2, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(a["theta"], b["theta"], rtol=0, atol=0)


def test_adam_bad_inputs():
    h = torch.ones(3)
    with pytest.raises(TypeError, match="h"):
        adaptive.adam_on_noisy_quadratic([1.0, 2.0], 1.0, 10, 1e-3)
    with pytest.raises(ValueError, match="h must have"):
        adaptive.adam_on_noisy_quadratic(torch.tensor(1.0), 1.0, 10, 1e-3)
    with pytest.raises(ValueError, match="noise_std"):
        adaptive.adam_on_noisy_quadratic(h, -1.0, 10, 1e-3)
    with pytest.raises(ValueError, match="noise_std"):
        adaptive.adam_on_noisy_quadratic(h, torch.ones(4), 10, 1e-3)
    with pytest.raises(ValueError, match="steps"):
        adaptive.adam_on_noisy_quadratic(h, 1.0, 0, 1e-3)
    with pytest.raises(ValueError, match="lr"):
        adaptive.adam_on_noisy_quadratic(h, 1.0, 10, 0.0)
    with pytest.raises(ValueError, match="betas"):
        adaptive.adam_on_noisy_quadratic(h, 1.0, 10, 1e-3, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="burn_frac"):
        adaptive.adam_on_noisy_quadratic(h, 1.0, 10, 1e-3, burn_frac=1.0)
    with pytest.raises(ValueError, match="0 by 0"):
        adaptive.adam_on_noisy_quadratic(h, 0.0, 10, 1e-3)
    with pytest.raises(ValueError, match="shared_noise_dims"):
        adaptive.adam_on_noisy_quadratic(h, 1.0, 10, 1e-3, shared_noise_dims=(1,))
    with pytest.raises(TypeError, match="generator"):
        adaptive.adam_on_noisy_quadratic(h, 1.0, 10, 1e-3, generator=0)


def _linear_model(w: torch.Tensor) -> torch.nn.Module:
    model = torch.nn.Linear(w.shape[0], 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(w.unsqueeze(0))
    return model


@settings(max_examples=20, deadline=None)
@given(st.integers(min_value=1, max_value=5), st.integers(min_value=1, max_value=40), st.integers(0, 10_000))
def test_gauss_newton_of_a_linear_model_is_the_input_second_moment(d, n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    model = _linear_model(torch.randn(d, generator=g, dtype=torch.float64))
    torch.testing.assert_close(adaptive.gauss_newton(model, x), x.T @ x / n, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_gauss_newton_equals_the_hessian_of_squared_loss_at_zero_residual(device):
    torch.manual_seed(0)
    model = toys.mlp([3, 4, 1], act="tanh").double().to(device)
    x = torch.randn(50, 3, dtype=torch.float64, device=device)
    with torch.no_grad():
        y = model(x)  # zero residuals: the Hessian is exactly J^T J / N
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    theta = autodiff.flatten([p.detach() for p in model.parameters()])

    def loss_of_flat(th):
        params, i = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            k = math.prod(shape)
            params[name] = th[i : i + k].view(shape)
            i += k
        return 0.5 * ((y - torch.func.functional_call(model, params, (x,))) ** 2).mean()

    hess = autodiff.flat_hessian(loss_of_flat, theta)
    gn = adaptive.gauss_newton(model, x, chunk_size=16)
    torch.testing.assert_close(gn, hess, rtol=1e-10, atol=1e-12)
    # J^T J / N also equals the mean outer product of per-sample output gradients
    grads = autodiff.per_sample_grads(model, lambda out, _t: out.sum(), x, y)
    torch.testing.assert_close(gn, grads.T @ grads / x.shape[0], rtol=1e-10, atol=1e-12)
    assert gn.device.type == device and gn.dtype == torch.float64


def test_gauss_newton_bad_inputs():
    model = toys.mlp([3, 2], act="tanh")
    with pytest.raises(TypeError, match="model"):
        adaptive.gauss_newton(lambda x: x, torch.randn(4, 3))
    with pytest.raises(TypeError, match="inputs"):
        adaptive.gauss_newton(model, [[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match="inputs"):
        adaptive.gauss_newton(model, torch.randn(0, 3))
    with pytest.raises(ValueError, match="scalar output"):
        adaptive.gauss_newton(model, torch.randn(4, 3))
    with pytest.raises(ValueError, match="chunk_size"):
        adaptive.gauss_newton(toys.mlp([3, 1]), torch.randn(4, 3), chunk_size=0)
