import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue import lrscaling
from kexue.quadrature import gaussian_expectation

F64 = torch.float64
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _random_problem(n: int, seed: int, device: str = "cpu"):
    gen = torch.Generator(device=device).manual_seed(seed)
    g = torch.randn(n, generator=gen, dtype=F64, device=device)
    a = torch.randn(n, n, generator=gen, dtype=F64, device=device)
    H = a @ a.T / n + 0.1 * torch.eye(n, dtype=F64, device=device)
    b = torch.randn(n, n, generator=gen, dtype=F64, device=device)
    Sigma = b @ b.T / n
    return g, H, Sigma


# ----------------------------------------------------------------------------- SGD


@pytest.mark.parametrize("device", DEVICES)
def test_sgd_optimal_lr_minimises_the_expected_quadratic(device):
    g, H, Sigma = _random_problem(5, 0, device)
    B = torch.tensor([1.0, 3.0, 50.0], dtype=F64, device=device)
    res = lrscaling.sgd_optimal_lr(g, H, Sigma, B)
    assert res.eta.shape == (3,) and res.eta.device.type == device
    for b, eta in zip(B.tolist(), res.eta.tolist(), strict=True):
        quad = float(g @ H @ g + torch.trace(Sigma @ H) / b)

        def expected_loss(e, quad=quad):
            return -e * float(g @ g) + e**2 * quad / 2

        assert expected_loss(eta) <= min(expected_loss(eta * (1 + t)) for t in (-1e-3, 1e-3))
    torch.testing.assert_close(res.eta, res.eta_max / (1 + res.b_noise / B))


def test_sgd_optimal_lr_limits_and_scalar_batch():
    g, H, Sigma = _random_problem(4, 1)
    small = lrscaling.sgd_optimal_lr(g, H, Sigma, 1e-9)
    large = lrscaling.sgd_optimal_lr(g, H, Sigma, 1e12)
    assert small.eta.ndim == 0
    assert math.isclose(float(large.eta), large.eta_max, rel_tol=1e-9)
    assert math.isclose(float(small.eta) / 1e-9, large.eta_max / large.b_noise, rel_tol=1e-6)


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=2, max_value=6), st.integers(min_value=0, max_value=10_000), st.floats(0.1, 10.0))
def test_b_simple_equals_b_noise_when_h_is_a_multiple_of_identity(n, seed, c):
    g, _, Sigma = _random_problem(n, seed)
    res = lrscaling.sgd_optimal_lr(g, c * torch.eye(n, dtype=F64), Sigma, 1.0)
    assert math.isclose(res.b_simple, res.b_noise, rel_tol=1e-10)


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=2, max_value=6), st.integers(min_value=0, max_value=10_000))
def test_b_simple_over_b_noise_is_bounded_by_the_condition_number(n, seed):
    g, H, Sigma = _random_problem(n, seed)
    res = lrscaling.sgd_optimal_lr(g, H, Sigma, 1.0)
    eig = torch.linalg.eigvalsh(H)
    cond = float(eig[-1] / eig[0])
    assert 1 / cond * (1 - 1e-12) <= res.b_simple / res.b_noise <= cond * (1 + 1e-12)


def test_sgd_optimal_lr_bad_inputs():
    g, H, Sigma = _random_problem(3, 2)
    with pytest.raises(ValueError, match="H must have shape"):
        lrscaling.sgd_optimal_lr(g, H[:2, :2], Sigma, 1.0)
    with pytest.raises(ValueError, match="Sigma must have shape"):
        lrscaling.sgd_optimal_lr(g, H, Sigma[:2], 1.0)
    with pytest.raises(ValueError, match="B must be positive"):
        lrscaling.sgd_optimal_lr(g, H, Sigma, 0.0)
    with pytest.raises(TypeError, match="B must be"):
        lrscaling.sgd_optimal_lr(g, H, Sigma, "4")
    with pytest.raises(TypeError, match=r"g must be a torch\.Tensor"):
        lrscaling.sgd_optimal_lr([1.0, 2.0, 3.0], H, Sigma, 1.0)
    with pytest.raises(ValueError, match="g must have 1 dimensions"):
        lrscaling.sgd_optimal_lr(H, H, Sigma, 1.0)
    with pytest.raises(ValueError, match="g\\^T H g must be positive"):
        lrscaling.sgd_optimal_lr(g, -H, Sigma, 1.0)


def test_one_step_optimal_lr_general_update():
    g, H, _ = _random_problem(4, 3)
    # a deterministic update u = g: E[u] = g, E[u^2] = g^2 gives the steepest-descent step g.g / g^T H g
    eta = lrscaling.one_step_optimal_lr(g, g**2, g, H)
    assert math.isclose(float(eta), float(g @ g / (g @ H @ g)), rel_tol=1e-12)
    with pytest.raises(ValueError, match="second_moment must have the shape"):
        lrscaling.one_step_optimal_lr(g, g[:3], g, H)
    with pytest.raises(ValueError, match="mean must have last dimension"):
        lrscaling.one_step_optimal_lr(g[:3], g[:3], g, H)


# ----------------------------------------------------------------------------- SignSGD


def test_sign_mean_matches_quadrature():
    g = torch.tensor([0.3, -1.0, 2.0], dtype=F64)
    sigma = torch.tensor([1.0, 0.5, 3.0], dtype=F64)
    for B in (1.0, 7.0):
        exact = lrscaling.sign_mean(g, sigma, B)
        quad = gaussian_expectation(torch.sign, g, sigma / math.sqrt(B), method="trapezoid", n_nodes=40001)
        torch.testing.assert_close(exact, quad, atol=2e-4, rtol=0)  # O(h) error at the jump
    assert lrscaling.sign_mean(g, sigma, torch.tensor([1.0, 2.0, 4.0])).shape == (3, 3)
    with pytest.raises(ValueError, match="sigma must be positive"):
        lrscaling.sign_mean(g, torch.zeros(3, dtype=F64), 1.0)
    with pytest.raises(ValueError, match="sigma must have the shape of g"):
        lrscaling.sign_mean(g, sigma[:2], 1.0)


def test_signsgd_optimal_lr_exact_against_monte_carlo():
    gen = torch.Generator().manual_seed(0)
    n, M, B = 6, 200_000, 3.0
    g = torch.randn(n, generator=gen, dtype=F64)
    sigma = 0.5 + torch.rand(n, generator=gen, dtype=F64)
    H = torch.eye(n, dtype=F64) + 0.2 * torch.ones(n, n, dtype=F64)
    u = torch.sign(g + sigma * torch.randn(M, n, generator=gen, dtype=F64) / math.sqrt(B))
    ratio, se = lrscaling.ratio_with_se(u @ g, ((u @ H) * u).sum(1))
    exact = float(lrscaling.signsgd_optimal_lr_exact(g, sigma, H, B))
    assert abs(ratio - exact) < 5 * se


@settings(max_examples=20, deadline=None)
@given(st.integers(min_value=1, max_value=6), st.integers(min_value=0, max_value=10_000), st.floats(0.01, 1e4))
def test_signsgd_with_diagonal_hessian(n, seed, B):
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(n, generator=gen, dtype=F64)
    sigma = 0.1 + torch.rand(n, generator=gen, dtype=F64)
    h = 0.1 + torch.rand(n, generator=gen, dtype=F64)
    eta = lrscaling.signsgd_optimal_lr_exact(g, sigma, torch.diag(h), B)
    e = lrscaling.sign_mean(g, sigma, B)
    assert math.isclose(float(eta), float((e * g).sum() / h.sum()), rel_tol=1e-10)


def test_mean_field_beta_and_erf_surrogate():
    B = torch.tensor([1e-8, 1.0, 1e12], dtype=F64)
    beta = lrscaling.mean_field_beta(B, 2.0)
    assert float(beta[-1]) == pytest.approx(1.0, abs=1e-10)
    assert float(beta[0]) / math.sqrt(1e-8) == pytest.approx(math.sqrt(2 / (math.pi * 4.0)), rel=1e-6)
    assert float(lrscaling.mean_field_beta(3.0, 0.0)) == 1.0
    x = torch.zeros(1, dtype=F64, requires_grad=True)
    (slope,) = torch.autograd.grad(lrscaling.erf_softsign_approx(x).sum(), x)
    assert float(slope) == pytest.approx(2 / math.sqrt(math.pi), rel=1e-12)
    xs = torch.linspace(0, 6, 60001, dtype=F64)
    assert float((torch.erf(xs) - lrscaling.erf_softsign_approx(xs)).abs().max()) == pytest.approx(0.10784, abs=1e-4)
    with pytest.raises(ValueError, match="kappa"):
        lrscaling.mean_field_beta(1.0, -1.0)
    with pytest.raises(ValueError, match="c must be positive"):
        lrscaling.erf_softsign_approx(xs, c=0.0)


# ----------------------------------------------------------------------------- SoftSign


def test_softsign_limits():
    x = torch.tensor([-2.0, -0.1, 0.0, 0.3, 5.0], dtype=F64)
    torch.testing.assert_close(lrscaling.softsign(x, 0.0), torch.sign(x))
    torch.testing.assert_close(1e8 * lrscaling.softsign(x, 1e8), x, rtol=1e-12, atol=1e-14)
    assert float(lrscaling.softsign(torch.tensor(1e-3, dtype=F64), 1e-9)) == pytest.approx(1.0, abs=1e-9)
    with pytest.raises(ValueError, match="eps must be finite and non-negative"):
        lrscaling.softsign(x, -1.0)
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor"):
        lrscaling.softsign(1.0, 1.0)


def test_softsign_moments():
    g = torch.tensor([0.5, -1.5, 2.0], dtype=F64)
    sigma = torch.tensor([1.0, 2.0, 0.5], dtype=F64)
    m1, m2 = lrscaling.softsign_moments(g, sigma, 2.0, 0.0)
    torch.testing.assert_close(m1, lrscaling.sign_mean(g, sigma, 2.0))
    torch.testing.assert_close(m2, torch.ones(3, dtype=F64))
    # a smooth integrand (eps comparable to the noise): Gauss-Hermite is an independent reference
    eps = 0.7
    m1, m2 = lrscaling.softsign_moments(g, sigma, 2.0, eps)
    std = sigma / math.sqrt(2.0)
    ref1 = gaussian_expectation(lambda t: lrscaling.softsign(t, eps), g, std, n_nodes=200)
    ref2 = gaussian_expectation(lambda t: lrscaling.softsign(t, eps) ** 2, g, std, n_nodes=200)
    # Gauss-Hermite with 200 nodes is good to about 1e-7 for this integrand; the trapezoid rule to far better
    torch.testing.assert_close(m1, ref1, atol=1e-6, rtol=0)
    torch.testing.assert_close(m2, ref2, atol=1e-6, rtol=0)
    m1b, _ = lrscaling.softsign_moments(g, sigma, torch.tensor([1.0, 4.0]), eps)
    assert m1b.shape == (2, 3)


def test_clip_moments_closed_form_against_quadrature():
    a = torch.tensor([0.0, 0.5, -1.2, 2.0, 7.0, 0.3, 1.0], dtype=F64)
    b = torch.tensor([0.3, 1.0, 2.0, 0.05, 7.0, 0.49, 0.51], dtype=F64)

    def clip(t):
        return torch.clamp(t / b.unsqueeze(-1), -1, 1)

    m1, m2 = lrscaling.clip_moments_closed_form(a, b)
    ref1 = gaussian_expectation(clip, a, torch.ones_like(a), method="trapezoid", n_nodes=200_001, zmax=12)
    ref2 = gaussian_expectation(
        lambda t: clip(t) ** 2, a, torch.ones_like(a), method="trapezoid", n_nodes=200_001, zmax=12
    )
    torch.testing.assert_close(m1, ref1, atol=1e-7, rtol=0)
    torch.testing.assert_close(m2, ref2, atol=1e-7, rtol=0)
    # b -> 0: the clip becomes a sign; b -> infinity: b m1 -> a and b^2 m2 -> a^2 + 1
    s1, s2 = lrscaling.clip_moments_closed_form(a, torch.full_like(a, 1e-7))
    torch.testing.assert_close(s1, torch.erf(a / math.sqrt(2)), atol=1e-6, rtol=0)
    torch.testing.assert_close(s2, torch.ones_like(a), atol=1e-6, rtol=0)
    big = torch.full_like(a, 1e4)
    l1, l2 = lrscaling.clip_moments_closed_form(a, big)
    torch.testing.assert_close(big * l1, a, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(big**2 * l2, a**2 + 1, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="b must be positive"):
        lrscaling.clip_moments_closed_form(a, torch.zeros_like(a))


def test_softsign_sgd_optimal_lr_exact_and_approximate():
    gen = torch.Generator().manual_seed(4)
    n = 5
    g = torch.randn(n, generator=gen, dtype=F64)
    sigma = 0.5 + torch.rand(n, generator=gen, dtype=F64)
    H = torch.eye(n, dtype=F64) + 0.1 * torch.ones(n, n, dtype=F64)
    B = torch.tensor([1.0, 16.0], dtype=F64)
    torch.testing.assert_close(
        lrscaling.softsign_sgd_optimal_lr(g, sigma, H, B, 0.0), lrscaling.signsgd_optimal_lr_exact(g, sigma, H, B)
    )
    # huge eps: eta* / eps tends to the SGD optimum with covariance diag(sigma^2) / B
    eps = 1e4
    sgd = lrscaling.sgd_optimal_lr(g, H, torch.diag(sigma**2), B).eta
    torch.testing.assert_close(lrscaling.softsign_sgd_optimal_lr(g, sigma, H, B, eps) / eps, sgd, rtol=1e-6, atol=0)
    # ... while the post's formula tends to the covariance pi sigma^2 / (2B)
    post = lrscaling.sgd_optimal_lr(g, H, torch.diag(math.pi / 2 * sigma**2), B).eta
    approx = lrscaling.softsign_sgd_optimal_lr(g, sigma, H, B, eps, exact=False)
    torch.testing.assert_close(approx / eps, post, rtol=1e-6, atol=0)
    with pytest.raises(TypeError, match="exact must be a bool"):
        lrscaling.softsign_sgd_optimal_lr(g, sigma, H, B, 1.0, exact="yes")


# ----------------------------------------------------------------------------- Monte Carlo and fits


def test_ratio_with_se_is_calibrated():
    gen = torch.Generator().manual_seed(5)
    n, repeats = 400, 2000
    common = torch.randn(repeats, n, generator=gen, dtype=F64)
    a = 2.0 + common + 0.3 * torch.randn(repeats, n, generator=gen, dtype=F64)
    b = 4.0 + common + 0.3 * torch.randn(repeats, n, generator=gen, dtype=F64)
    ratios, ses = zip(*(lrscaling.ratio_with_se(a[k], b[k]) for k in range(repeats)), strict=True)
    spread = float(torch.tensor(ratios).std())
    mean_se = float(torch.tensor(ses).mean())
    # the delta-method SE matches the spread of repeated estimates (to a few percent)
    assert mean_se == pytest.approx(spread, rel=0.08)
    # an exactly proportional pair has no uncertainty in its ratio
    r, se = lrscaling.ratio_with_se(3 * b[0], b[0])
    assert r == pytest.approx(3.0) and se < 1e-12
    with pytest.raises(ValueError, match="at least 2 samples"):
        lrscaling.ratio_with_se(a[0, :1], b[0, :1])
    with pytest.raises(ValueError, match="b must have the shape of a"):
        lrscaling.ratio_with_se(a[0], b[0, :5])


@settings(max_examples=20, deadline=None)
@given(st.floats(1.0, 100.0), st.floats(0.5, 2000.0))
def test_fit_steps_examples_recovers_an_exact_hyperbola(s_min, b_crit):
    B = torch.tensor([2.0**k for k in range(12)], dtype=F64)
    fit = lrscaling.fit_steps_examples(B, s_min * (1 + b_crit / B))
    assert fit.s_min == pytest.approx(s_min, rel=1e-6)
    assert fit.b_crit == pytest.approx(b_crit, rel=1e-6)
    assert float(fit.residuals.abs().max()) < 1e-6


def test_fit_steps_examples_bad_inputs():
    B = torch.tensor([1.0, 2.0, 4.0], dtype=F64)
    with pytest.raises(ValueError, match="at least 3 points"):
        lrscaling.fit_steps_examples(B[:2], B[:2])
    with pytest.raises(ValueError, match="positive"):
        lrscaling.fit_steps_examples(B, -B)
    with pytest.raises(ValueError, match="S must have the shape of B"):
        lrscaling.fit_steps_examples(B, B[:2])


@pytest.mark.parametrize("device", DEVICES)
def test_per_sample_grads_linreg_matches_autograd(device):
    gen = torch.Generator(device=device).manual_seed(6)
    X = torch.randn(7, 3, generator=gen, dtype=F64, device=device)
    y = torch.randn(7, generator=gen, dtype=F64, device=device)
    theta = torch.randn(3, generator=gen, dtype=F64, device=device)
    grads = lrscaling.per_sample_grads_linreg(X, y, theta)
    for i in range(7):
        t = theta.clone().requires_grad_(True)
        ((X[i] @ t - y[i]) ** 2 / 2).backward()
        torch.testing.assert_close(grads[i], t.grad)
    with pytest.raises(ValueError, match="theta must have length 3"):
        lrscaling.per_sample_grads_linreg(X, y, theta[:2])
    with pytest.raises(ValueError, match="y must have length 7"):
        lrscaling.per_sample_grads_linreg(X, y[:5], theta)


def test_softsign_moments_trapezoid_converges_spectrally():
    # the integrand is analytic with poles at distance eps sqrt(B) / sigma from the real axis:
    # modest grids are already accurate to ~1e-12 even for a near-step integrand
    a = torch.linspace(0, 8, 41, dtype=F64)
    coarse = lrscaling.softsign_moments(a, torch.ones_like(a), 1.0, 0.02, n_nodes=4001, zmax=12.0)
    fine = lrscaling.softsign_moments(a, torch.ones_like(a), 1.0, 0.02, n_nodes=48001, zmax=12.0)
    for c, f in zip(coarse, fine, strict=True):
        torch.testing.assert_close(c, f, atol=1e-10, rtol=0)
    g = torch.linspace(-1.5, 1.5, 13, dtype=F64)
    sigma = 4 * g.abs() + 0.01
    B = torch.tensor([1.0, 9.4, 16384.0], dtype=F64)
    coarse = lrscaling.softsign_moments(g, sigma, B, 0.25, n_nodes=2001)
    fine = lrscaling.softsign_moments(g, sigma, B, 0.25, n_nodes=40001)
    for c, f in zip(coarse, fine, strict=True):
        torch.testing.assert_close(c, f, atol=1e-11, rtol=0)
    with pytest.raises(ValueError, match="n_nodes must be at least 3"):
        lrscaling.softsign_moments(g, sigma, B, 0.25, n_nodes=2)
