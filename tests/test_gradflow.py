"""Tests of kexue.gradflow: Langevin, Gaussian KL / W2, JKO steps, mixtures, grid operators."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue import gradflow

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
F64 = torch.float64


def spd(entries: list[float], d: int, jitter: float = 0.2) -> torch.Tensor:
    a = torch.tensor(entries, dtype=F64).reshape(d, d)
    return a @ a.T + jitter * torch.eye(d, dtype=F64)


spd_entries = st.lists(st.floats(-2.0, 2.0, allow_nan=False), min_size=9, max_size=9)
mean_entries = st.lists(st.floats(-3.0, 3.0, allow_nan=False), min_size=3, max_size=3)


# ---------------------------------------------------------------------------- langevin


@pytest.mark.parametrize("device", DEVICES)
def test_langevin_matches_exact_moments_of_the_ou_chain(device):
    n_particles, h, n = 40_000, 0.02, 50
    gen = torch.Generator(device=device).manual_seed(0)
    x0 = torch.full((n_particles,), 2.0, dtype=F64, device=device)
    x = gradflow.langevin(lambda y: -y, x0, h, n, generator=gen)
    decay = (1 - h) ** n
    mean = 2.0 * decay
    var = 2 * h * (1 - decay**2) / (1 - (1 - h) ** 2)
    assert x.device.type == device
    assert abs(float(x.mean()) - mean) < 5 * math.sqrt(var / n_particles)
    assert abs(float(x.var()) - var) < 5 * var * math.sqrt(2 / n_particles)


def test_langevin_record_and_reproducibility():
    x0 = torch.linspace(-1, 1, 7, dtype=F64)
    out = gradflow.langevin(lambda y: -y, x0, 0.1, 5, generator=torch.Generator().manual_seed(3), record=[0, 2, 5])
    assert out.shape == (3, 7)
    assert torch.equal(out[0], x0)
    final = gradflow.langevin(lambda y: -y, x0, 0.1, 5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(out[-1], final)
    assert torch.equal(gradflow.langevin(lambda y: -y, x0, 0.1, 0), x0)


def test_langevin_keeps_dtype_and_shape():
    x0 = torch.zeros(4, 3, dtype=torch.float32)
    out = gradflow.langevin(lambda y: -y, x0, 0.01, 3, generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.float32 and out.shape == (4, 3)


def test_langevin_rejects_bad_input():
    x0 = torch.zeros(3, dtype=F64)
    with pytest.raises(TypeError, match="score"):
        gradflow.langevin(3.0, x0, 0.1, 2)
    with pytest.raises(TypeError, match="x0"):
        gradflow.langevin(lambda y: -y, [0.0], 0.1, 2)
    with pytest.raises(ValueError, match="h"):
        gradflow.langevin(lambda y: -y, x0, -0.1, 2)
    with pytest.raises(ValueError, match="n_steps"):
        gradflow.langevin(lambda y: -y, x0, 0.1, -1)
    with pytest.raises(ValueError, match="record"):
        gradflow.langevin(lambda y: -y, x0, 0.1, 3, record=[2, 1])
    with pytest.raises(ValueError, match="record"):
        gradflow.langevin(lambda y: -y, x0, 0.1, 3, record=[4])
    with pytest.raises(ValueError, match="score"):
        gradflow.langevin(lambda y: y.sum(), x0, 0.1, 3)
    with pytest.raises(TypeError, match="generator"):
        gradflow.langevin(lambda y: -y, x0, 0.1, 3, generator=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_langevin_rejects_generator_on_another_device():
    with pytest.raises(ValueError, match="generator"):
        gradflow.langevin(lambda y: -y, torch.zeros(3, device="cuda"), 0.1, 1, generator=torch.Generator())


# ------------------------------------------------------------------------- gaussian_kl


def test_gaussian_kl_1d_closed_form_and_zero():
    kl = gradflow.gaussian_kl(1.0, 4.0, 0.0, 1.0)
    assert float(kl) == pytest.approx(0.5 * (4 + 1 - 1 - math.log(4)))
    assert float(gradflow.gaussian_kl(0.3, 2.0, 0.3, 2.0)) == pytest.approx(0.0, abs=1e-15)


@settings(max_examples=25, deadline=None)
@given(spd_entries, spd_entries, mean_entries, mean_entries)
def test_gaussian_kl_matches_torch_distributions(a, b, m1, m2):
    s1, s2 = spd(a, 3), spd(b, 3)
    mu1, mu2 = torch.tensor(m1, dtype=F64), torch.tensor(m2, dtype=F64)
    ours = gradflow.gaussian_kl(mu1, s1, mu2, s2)
    ref = torch.distributions.kl_divergence(
        torch.distributions.MultivariateNormal(mu1, s1), torch.distributions.MultivariateNormal(mu2, s2)
    )
    assert float(ours) == pytest.approx(float(ref), rel=1e-8, abs=1e-9)
    assert float(ours) >= -1e-12


def test_gaussian_kl_full_with_diagonal_covariance_is_a_sum_of_1d():
    m1, m2 = torch.tensor([0.5, -1.0], dtype=F64), torch.tensor([0.0, 2.0], dtype=F64)
    v1, v2 = torch.tensor([0.3, 2.0], dtype=F64), torch.tensor([1.5, 0.7], dtype=F64)
    full = gradflow.gaussian_kl(m1, torch.diag(v1), m2, torch.diag(v2))
    assert float(full) == pytest.approx(float(gradflow.gaussian_kl(m1, v1, m2, v2).sum()), rel=1e-12)


def test_gaussian_kl_batches_and_rejects_bad_input():
    m = torch.zeros(5, 2, dtype=F64)
    s = torch.eye(2, dtype=F64).expand(5, 2, 2)
    assert gradflow.gaussian_kl(m, s, m, s).shape == (5,)
    with pytest.raises(ValueError, match="v1"):
        gradflow.gaussian_kl(0.0, -1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="v1"):
        gradflow.gaussian_kl(torch.zeros(2, dtype=F64), torch.eye(2, dtype=F64), 0.0, 1.0)
    with pytest.raises(ValueError, match="positive definite"):
        gradflow.gaussian_kl(
            torch.zeros(2, dtype=F64), -torch.eye(2, dtype=F64), torch.zeros(2, dtype=F64), torch.eye(2, dtype=F64)
        )
    with pytest.raises(TypeError, match="m1"):
        gradflow.gaussian_kl("a", 1.0, 0.0, 1.0)


# ------------------------------------------------------------------------- w2_gaussian


def test_w2_1d_and_full_agree_in_one_dimension():
    one = gradflow.w2_gaussian(1.0, 4.0, -0.5, 0.25)
    full = gradflow.w2_gaussian(
        torch.tensor([1.0], dtype=F64), torch.tensor([[4.0]], dtype=F64),
        torch.tensor([-0.5], dtype=F64), torch.tensor([[0.25]], dtype=F64),
    )  # fmt: skip
    assert float(one) == pytest.approx(1.5**2 + 1.5**2)
    assert float(full) == pytest.approx(float(one), rel=1e-12)


def test_w2_commuting_covariances_is_frobenius_distance_of_roots():
    q, _ = torch.linalg.qr(torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 1.0], [2.0, 0.0, 1.0]], dtype=F64))
    d1, d2 = torch.tensor([0.5, 2.0, 3.0], dtype=F64), torch.tensor([1.0, 0.2, 4.0], dtype=F64)
    s1, s2 = q @ torch.diag(d1) @ q.T, q @ torch.diag(d2) @ q.T
    m1, m2 = torch.tensor([1.0, 0.0, -1.0], dtype=F64), torch.zeros(3, dtype=F64)
    expected = 2.0 + float(((d1.sqrt() - d2.sqrt()) ** 2).sum())
    assert float(gradflow.w2_gaussian(m1, s1, m2, s2)) == pytest.approx(expected, rel=1e-10)


@settings(max_examples=25, deadline=None)
@given(spd_entries, spd_entries, mean_entries, mean_entries)
def test_w2_is_symmetric_matches_sqrtm_and_obeys_triangle_inequality(a, b, m1, m2):
    import numpy as np
    from scipy.linalg import sqrtm

    s1, s2 = spd(a, 3), spd(b, 3)
    mu1, mu2 = torch.tensor(m1, dtype=F64), torch.tensor(m2, dtype=F64)
    w12 = float(gradflow.w2_gaussian(mu1, s1, mu2, s2))
    w21 = float(gradflow.w2_gaussian(mu2, s2, mu1, s1))
    r1 = np.real(sqrtm(s1.numpy()))
    ref = float(((mu1 - mu2) ** 2).sum()) + np.trace(s1.numpy() + s2.numpy() - 2 * np.real(sqrtm(r1 @ s2.numpy() @ r1)))
    assert w12 == pytest.approx(w21, rel=1e-8, abs=1e-9)
    assert w12 == pytest.approx(ref, rel=1e-6, abs=1e-8)
    mid, smid = torch.zeros(3, dtype=F64), torch.eye(3, dtype=F64)
    via = math.sqrt(max(float(gradflow.w2_gaussian(mu1, s1, mid, smid)), 0.0)) + math.sqrt(
        max(float(gradflow.w2_gaussian(mid, smid, mu2, s2)), 0.0)
    )
    assert math.sqrt(max(w12, 0.0)) <= via + 1e-7


def test_w2_gradient_is_finite_at_repeated_eigenvalues():
    s = torch.eye(2, dtype=F64).requires_grad_(True)
    value = gradflow.w2_gaussian(torch.zeros(2, dtype=F64), s, torch.zeros(2, dtype=F64), torch.eye(2, dtype=F64))
    (grad,) = torch.autograd.grad(value, s)
    assert float(value.detach()) == pytest.approx(0.0, abs=1e-14)
    assert bool(torch.isfinite(grad).all())
    assert float(grad.abs().max()) < 1e-12  # a minimum


def test_w2_rejects_mismatched_modes():
    with pytest.raises(ValueError, match="S1"):
        gradflow.w2_gaussian(torch.zeros(2, dtype=F64), torch.eye(2, dtype=F64), 0.0, 1.0)
    with pytest.raises(ValueError, match="same dimension"):
        gradflow.w2_gaussian(
            torch.zeros(2, dtype=F64), torch.eye(2, dtype=F64), torch.zeros(3, dtype=F64), torch.eye(3, dtype=F64)
        )


# --------------------------------------------------------------------------- JKO steps


@pytest.mark.parametrize("alpha", [0.01, 0.3, 2.0])
def test_jko_gaussian_step_is_backward_euler(alpha):
    m, s = torch.tensor([3.0, -1.0], dtype=F64), torch.tensor([0.5, 2.0], dtype=F64)
    m1, s1 = gradflow.jko_gaussian_step(m, s, alpha)
    assert torch.allclose((m1 - m) / alpha, -m1, atol=1e-12)
    assert torch.allclose((s1 - s) / alpha, -s1 + 1 / s1, atol=1e-12)
    assert bool((s1 > 0).all())


def test_jko_gaussian_step_matches_lbfgs_in_the_gaussian_family():
    alpha, mk, sk = 0.2, 3.0, 0.5

    def energy(theta):  # KL(N(m, s^2) || N(0, 1)) with s = exp(theta[1])
        return gradflow.gaussian_kl(theta[0], torch.exp(2 * theta[1]), 0.0, 1.0)

    def distance2(theta, anchor):
        return gradflow.w2_gaussian(theta[0], torch.exp(2 * theta[1]), anchor[0], torch.exp(2 * anchor[1]))

    theta = gradflow.jko_step(energy, torch.tensor([mk, math.log(sk)], dtype=F64), alpha, distance2=distance2)
    m1, s1 = gradflow.jko_gaussian_step(mk, sk, alpha)
    assert float(theta[0]) == pytest.approx(float(m1), abs=1e-9)
    assert math.exp(float(theta[1])) == pytest.approx(float(s1), abs=1e-9)


def test_jko_step_on_a_quadratic_is_the_proximal_point():
    c = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    start = torch.zeros(3, dtype=F64)
    alpha = 0.7
    out = gradflow.jko_step(
        lambda t: 0.5 * ((t - c) ** 2).sum(), start, alpha, distance2=lambda t, a: ((t - a) ** 2).sum()
    )
    assert torch.allclose(out, (start + alpha * c) / (1 + alpha), atol=1e-10)
    assert not out.requires_grad


def test_jko_steps_reject_bad_input():
    with pytest.raises(ValueError, match="alpha"):
        gradflow.jko_gaussian_step(1.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="s must be positive"):
        gradflow.jko_gaussian_step(1.0, -1.0, 0.1)
    with pytest.raises(ValueError, match="q_params"):
        gradflow.jko_step(lambda t: t.sum(), torch.zeros(2, 2, dtype=F64), 0.1, distance2=lambda t, a: t.sum())
    with pytest.raises(TypeError, match="distance2"):
        gradflow.jko_step(lambda t: t.sum(), torch.zeros(2, dtype=F64), 0.1, distance2=None)


# ---------------------------------------------------------------------- mixture model


def test_mixture_score_is_the_gradient_of_log_prob_and_stable():
    mix = gradflow.GaussianMixture1D([-2.0, 2.0, 0.5], [0.5, 0.5, 1.0], weights=[1.0, 2.0, 1.0])
    x = torch.linspace(-6, 6, 101, dtype=F64).requires_grad_(True)
    (auto,) = torch.autograd.grad(mix.log_prob(x).sum(), x)
    assert torch.allclose(mix.score(x.detach()), auto, atol=1e-10)
    far = torch.tensor([-80.0, 80.0], dtype=F64)
    s = mix.score(far)
    # Far out the widest component (mean 0.5, std 1) carries all the responsibility.
    assert bool(torch.isfinite(s).all())
    assert torch.allclose(s, 0.5 - far)


def test_mixture_symmetric_score_is_tanh_form():
    a, sig = 1.5, 0.5
    mix = gradflow.GaussianMixture1D([-a, a], [sig, sig])
    x = torch.linspace(-5, 5, 41, dtype=F64)
    assert torch.allclose(mix.score(x), (-x + a * torch.tanh(a * x / sig**2)) / sig**2, atol=1e-12)


def test_mixture_sample_moments():
    mix = gradflow.GaussianMixture1D([-1.0, 3.0], [0.5, 1.0], weights=[0.25, 0.75])
    n = 200_000
    x = mix.sample(n, torch.Generator().manual_seed(0))
    mean = 0.25 * -1 + 0.75 * 3
    second = 0.25 * (0.25 + 1) + 0.75 * (1 + 9)
    var = second - mean**2
    assert x.shape == (n,)
    assert abs(float(x.mean()) - mean) < 5 * math.sqrt(var / n)


def test_mixture_rejects_bad_input():
    with pytest.raises(ValueError, match="stds"):
        gradflow.GaussianMixture1D([0.0, 1.0], [1.0])
    with pytest.raises(ValueError, match="stds"):
        gradflow.GaussianMixture1D([0.0], [0.0])
    with pytest.raises(ValueError, match="weights"):
        gradflow.GaussianMixture1D([0.0, 1.0], [1.0, 1.0], weights=[1.0, -1.0])
    with pytest.raises(TypeError, match="x"):
        gradflow.GaussianMixture1D([0.0], [1.0]).score([0.0])


# ------------------------------------------------------------------------ grid operators


@pytest.mark.parametrize("device", DEVICES)
def test_fokker_planck_generator_conserves_mass_and_fixes_p(device):
    grid = torch.linspace(-6, 6, 241, dtype=F64, device=device)
    mix = gradflow.GaussianMixture1D([-2.0, 2.0], [0.5, 0.5])
    log_p = mix.log_prob(grid)
    dx = float(grid[1] - grid[0])
    L = gradflow.fokker_planck_generator(log_p, dx)
    assert L.device.type == device
    scale = 1 / dx**2
    assert float(L.sum(0).abs().max()) < 1e-12 * scale
    p = torch.exp(log_p)
    assert float((L @ p).abs().max()) < 1e-12 * scale * float(p.max())
    S = gradflow.fokker_planck_generator(log_p, dx, symmetric=True)
    assert torch.allclose(S, S.T)
    sqrt_p = torch.exp(0.5 * log_p)
    assert torch.allclose(L, sqrt_p[:, None] * S / sqrt_p[None, :], atol=1e-9 * scale)


def test_fokker_planck_generator_has_the_ornstein_uhlenbeck_spectrum():
    # The OU operator for p = N(0, 1) has eigenvalues 0, -1, -2, ...; the scheme is second order in dx.
    grid = torch.arange(-8.0, 8.0 + 1e-9, 0.04, dtype=F64)
    S = gradflow.fokker_planck_generator(-0.5 * grid**2, 0.04, symmetric=True)
    eig = torch.linalg.eigvalsh(S).flip(0)[:4]
    assert torch.allclose(eig, -torch.arange(4, dtype=F64), atol=2e-3)


def test_euler_maruyama_kernel_reproduces_the_ou_chain_moments():
    h, n = 0.01, 100
    grid = torch.arange(-8.0, 10.0 + 1e-9, 0.025, dtype=F64)
    K = gradflow.euler_maruyama_kernel(grid, -grid, h)
    dx = 0.025
    q = torch.exp(-((grid - 3) ** 2) / (2 * 0.25)) / math.sqrt(2 * math.pi * 0.25) * dx
    for _ in range(n):
        q = K @ q
    mean, second = float((grid * q).sum()), float((grid**2 * q).sum())
    exact_mean = 3 * (1 - h) ** n
    exact_var = 0.25 * (1 - h) ** (2 * n) + 2 * h * (1 - (1 - h) ** (2 * n)) / (1 - (1 - h) ** 2)
    assert float(q.sum()) == pytest.approx(1.0, abs=1e-10)
    assert mean == pytest.approx(exact_mean, abs=1e-10)
    assert second - mean**2 == pytest.approx(exact_var, abs=1e-10)


def test_grid_operators_reject_bad_input():
    grid = torch.linspace(-1, 1, 11, dtype=F64)
    with pytest.raises(ValueError, match="grid"):
        gradflow.euler_maruyama_kernel(grid**3, grid, 0.1)
    with pytest.raises(ValueError, match="score_values"):
        gradflow.euler_maruyama_kernel(grid, grid[:-1], 0.1)
    with pytest.raises(ValueError, match="spacings"):
        gradflow.euler_maruyama_kernel(grid, grid, 1e-4)
    with pytest.raises(ValueError, match="log_p"):
        gradflow.fokker_planck_generator(torch.tensor([0.0, -math.inf, 0.0], dtype=F64), 0.1)
    with pytest.raises(ValueError, match="dx"):
        gradflow.fokker_planck_generator(torch.zeros(5, dtype=F64), 0.0)
