"""Tests of kexue.attention: softmax Jacobian, collision probability, optimal scales, cosine scores."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue import attention

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# ----------------------------------------------------------------------- softmax_jacobian


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 12), alpha=st.floats(0.0, 8.0), seed=st.integers(0, 2**31 - 1))
def test_softmax_jacobian_matches_autograd(n: int, alpha: float, seed: int) -> None:
    s = torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    auto = torch.autograd.functional.jacobian(lambda x: torch.softmax(alpha * x, dim=-1), s)
    torch.testing.assert_close(attention.softmax_jacobian(s, alpha), auto, atol=1e-14, rtol=0)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 12), alpha=st.floats(0.01, 8.0), seed=st.integers(0, 2**31 - 1))
def test_softmax_jacobian_structure(n: int, alpha: float, seed: int) -> None:
    """Symmetric, rows and columns sum to 0, half entrywise L1 norm is alpha (1 - sum p^2)."""
    s = torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    jac = attention.softmax_jacobian(s, alpha)
    p = torch.softmax(alpha * s, dim=-1)
    torch.testing.assert_close(jac, jac.T, atol=1e-15, rtol=0)
    torch.testing.assert_close(jac.sum(0), torch.zeros(n, dtype=torch.float64), atol=1e-14, rtol=0)
    torch.testing.assert_close(0.5 * jac.abs().sum(), alpha * (1 - (p**2).sum()), atol=1e-14, rtol=1e-13)


def test_softmax_jacobian_batched_alpha() -> None:
    s = torch.randn(3, 5, dtype=torch.float64)
    alphas = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    batched = attention.softmax_jacobian(s, alphas)
    assert batched.shape == (3, 5, 5)
    for i in range(3):
        torch.testing.assert_close(batched[i], attention.softmax_jacobian(s[i], float(alphas[i])))


@pytest.mark.parametrize("device", DEVICES)
def test_softmax_jacobian_device(device: str) -> None:
    s = torch.randn(4, device=device, dtype=torch.float32)
    assert attention.softmax_jacobian(s, 1.5).device.type == device


def test_softmax_jacobian_bad_input() -> None:
    with pytest.raises(TypeError, match="s must"):
        attention.softmax_jacobian([1.0, 2.0], 1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="s must have a floating dtype"):
        attention.softmax_jacobian(torch.tensor([1, 2]), 1.0)
    with pytest.raises(ValueError, match="s must have a non-empty last dimension"):
        attention.softmax_jacobian(torch.zeros(0), 1.0)
    with pytest.raises(TypeError, match="alpha must"):
        attention.softmax_jacobian(torch.zeros(3), "2")  # type: ignore[arg-type]


# ------------------------------------------------------------------ collision_probability


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 40), alpha=st.floats(0.0, 10.0), seed=st.integers(0, 2**31 - 1))
def test_collision_probability_matches_direct(n: int, alpha: float, seed: int) -> None:
    s = torch.randn(3, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    p = torch.softmax(alpha * s, dim=-1)
    direct = (p**2).sum(-1)
    torch.testing.assert_close(attention.collision_probability(s, alpha), direct, atol=1e-15, rtol=1e-13)
    torch.testing.assert_close(
        attention.collision_probability(s, alpha, complement=True), 1 - direct, atol=1e-15, rtol=1e-12
    )


def test_collision_probability_complement_has_no_cancellation() -> None:
    """Two scores with gap delta: 1 - sum p^2 = 2 e^(-a delta) / (1 + e^(-a delta))^2, even when tiny."""
    delta = 0.5
    s = torch.tensor([0.0, -delta], dtype=torch.float64)
    for a in (10.0, 60.0, 150.0):
        e = math.exp(-a * delta)
        exact = 2 * e / (1 + e) ** 2
        got = float(attention.collision_probability(s, a, complement=True))
        assert abs(got - exact) <= 1e-14 * exact
    # float32 keeps the relative accuracy too
    got32 = float(attention.collision_probability(s.float(), 150.0, complement=True))
    assert got32 == pytest.approx(2 * math.exp(-75.0), rel=1e-5)


def test_collision_probability_limits_and_broadcasting() -> None:
    s = torch.randn(5, 7, dtype=torch.float64)
    torch.testing.assert_close(attention.collision_probability(s, 0.0), torch.full((5,), 1 / 7, dtype=torch.float64))
    grid = torch.tensor([[0.5], [1.0], [3.0]], dtype=torch.float64)
    out = attention.collision_probability(s, grid)
    assert out.shape == (3, 5)
    torch.testing.assert_close(out[2], attention.collision_probability(s, 3.0))
    per_row = torch.linspace(0.1, 2.0, 5, dtype=torch.float64)
    torch.testing.assert_close(
        attention.collision_probability(s, per_row),
        torch.stack([attention.collision_probability(s[i], float(per_row[i])) for i in range(5)]),
    )


def test_collision_probability_autograd() -> None:
    s = torch.randn(6, dtype=torch.float64, requires_grad=True)
    a = torch.tensor(1.7, dtype=torch.float64, requires_grad=True)
    grads = torch.autograd.grad(attention.collision_probability(s, a, complement=True), (s, a))
    p = torch.softmax(a * s, dim=-1)
    expected = torch.autograd.grad(1 - (p**2).sum(), (s, a))
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-14, rtol=1e-12)


def test_collision_probability_bad_input() -> None:
    with pytest.raises(ValueError, match="alpha must be non-negative"):
        attention.collision_probability(torch.zeros(3), -1.0)
    with pytest.raises(ValueError, match="scores must be finite"):
        attention.collision_probability(torch.tensor([0.0, math.inf]), 1.0)
    with pytest.raises(ValueError, match="scores must have a non-empty last dimension"):
        attention.collision_probability(torch.zeros(2, 0), 1.0)
    with pytest.raises(ValueError, match="alpha must be finite"):
        attention.collision_probability(torch.zeros(3), math.nan)


@pytest.mark.parametrize("device", DEVICES)
def test_collision_probability_device(device: str) -> None:
    s = torch.randn(2, 9, device=device)
    assert attention.collision_probability(s, 2.0).device.type == device


# ----------------------------------------------------------------------- gauss_alpha_star


def test_gauss_alpha_star_matches_lambert_w() -> None:
    n = torch.tensor([1.0, 2.0, 40.0, 128.0, 1000.0, 20000.0, 1e8, 1e30], dtype=torch.float64)
    ref = np.sqrt(np.real(scipy.special.lambertw(np.sqrt(np.e) * n.numpy() / 2)) - 0.5)
    np.testing.assert_allclose(attention.gauss_alpha_star(n).numpy(), ref, rtol=1e-13, atol=1e-15)


@settings(max_examples=40, deadline=None)
@given(log_n=st.floats(0.0, 60.0))
def test_gauss_alpha_star_solves_stationarity(log_n: float) -> None:
    n = math.exp(log_n)
    a = float(attention.gauss_alpha_star(n))
    assert (1 + 2 * a * a) * math.exp(a * a) == pytest.approx(n, rel=1e-12)
    # and it maximises alpha (1 - exp(alpha^2)/n)
    f = lambda x: x * (1 - math.exp(x * x) / n)  # noqa: E731
    assert f(a) >= max(f(a * 0.99), f(a * 1.01)) - 1e-15


def test_gauss_alpha_star_known_values() -> None:
    # alpha* = 2 exactly at n = 9 e^4 and 3 at n = 19 e^9
    assert float(attention.gauss_alpha_star(9 * math.e**4)) == pytest.approx(2.0, rel=1e-14)
    assert float(attention.gauss_alpha_star(19 * math.e**9)) == pytest.approx(3.0, rel=1e-14)
    assert float(attention.gauss_alpha_star(1)) == 0.0


def test_gauss_alpha_star_bad_input() -> None:
    with pytest.raises(ValueError, match="n must be finite and >= 1"):
        attention.gauss_alpha_star(0.5)
    with pytest.raises(ValueError, match="n must be finite and >= 1"):
        attention.gauss_alpha_star(torch.tensor([2.0, math.inf]))
    with pytest.raises(TypeError, match="n must be a number or a tensor"):
        attention.gauss_alpha_star("10")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="iterations"):
        attention.gauss_alpha_star(10.0, iterations=0)


@pytest.mark.parametrize("device", DEVICES)
def test_gauss_alpha_star_device(device: str) -> None:
    n = torch.tensor([40, 1024], device=device)
    out = attention.gauss_alpha_star(n)
    assert out.device.type == device and out.dtype == torch.float64


# ------------------------------------------------------------------------ log_mgf_cosine


def _log_mgf_bessel(alpha: float, d: int) -> float:
    nu = mpmath.mpf(d) / 2 - 1
    a = mpmath.mpf(alpha)
    return float(mpmath.log(mpmath.gamma(mpmath.mpf(d) / 2) * (2 / a) ** nu * mpmath.besseli(nu, a)))


@pytest.mark.parametrize("d", [32, 128, 512])
def test_log_mgf_cosine_matches_bessel(d: int) -> None:
    alphas = [0.5, 3.0, 30.0, 100.0, 160.0]
    got = attention.log_mgf_cosine(torch.tensor(alphas, dtype=torch.float64), d)
    ref = torch.tensor([_log_mgf_bessel(a, d) for a in alphas], dtype=torch.float64)
    torch.testing.assert_close(got, ref, atol=1e-12, rtol=1e-12)


def test_log_mgf_cosine_small_d_and_uniform_case() -> None:
    # d = 3: s is uniform on [-1, 1] (Archimedes), E exp(a s) = sinh(a) / a
    for a in (0.5, 2.0, 10.0):
        got = float(attention.log_mgf_cosine(a, 3, nodes=20001))
        assert got == pytest.approx(math.log(math.sinh(a) / a), abs=1e-6)
    # small d converges more slowly but does converge
    assert float(attention.log_mgf_cosine(10.0, 8, nodes=20001)) == pytest.approx(_log_mgf_bessel(10.0, 8), abs=1e-8)


def test_log_mgf_cosine_symmetry_and_zero() -> None:
    a = torch.tensor([-7.0, 0.0, 7.0], dtype=torch.float64)
    out = attention.log_mgf_cosine(a, 64)
    assert abs(float(out[1])) < 1e-15
    assert float(out[0]) == pytest.approx(float(out[2]), abs=1e-14)


def test_log_mgf_cosine_bad_input() -> None:
    with pytest.raises(ValueError, match="d must be an int >= 3"):
        attention.log_mgf_cosine(1.0, 2)
    with pytest.raises(ValueError, match="nodes must be >= 3"):
        attention.log_mgf_cosine(1.0, 16, nodes=2)
    with pytest.raises(TypeError, match="alpha must"):
        attention.log_mgf_cosine("1", 16)  # type: ignore[arg-type]


@pytest.mark.parametrize("device", DEVICES)
def test_log_mgf_cosine_device(device: str) -> None:
    a = torch.tensor([1.0, 2.0], dtype=torch.float64, device=device)
    assert attention.log_mgf_cosine(a, 16).device.type == device


# ------------------------------------------------------------------- sample_cosine_scores


@pytest.mark.parametrize("d", [4, 16, 128])
def test_sample_cosine_scores_moments(d: int) -> None:
    m = 100_000
    s = attention.sample_cosine_scores((m,), d, torch.Generator().manual_seed(d))
    assert s.shape == (m,) and s.dtype == torch.float64
    assert bool((s.abs() <= 1).all())
    # E s^2 = 1/d, E s^4 = 3/(d(d+2)); 5 standard errors from the sample moments
    for power, exact in ((2, 1 / d), (4, 3 / (d * (d + 2)))):
        values = s**power
        se = float(values.std()) / math.sqrt(m)
        assert abs(float(values.mean()) - exact) <= 5 * se
    assert abs(float(s.mean())) <= 5 * float(s.std()) / math.sqrt(m)


def test_sample_cosine_scores_matches_direct_cosines() -> None:
    """Two-sample Kolmogorov-Smirnov test against cosines of normalised Gaussian vectors (d = 5)."""
    gen = torch.Generator().manual_seed(7)
    q, k = (
        torch.randn(20_000, 5, generator=gen, dtype=torch.float64),
        torch.randn(20_000, 5, generator=gen, dtype=torch.float64),
    )
    direct = (q * k).sum(-1) / (q.norm(dim=-1) * k.norm(dim=-1))
    sampled = attention.sample_cosine_scores((20_000,), 5, gen)
    assert scipy.stats.ks_2samp(direct.numpy(), sampled.numpy()).pvalue > 1e-4


def test_sample_cosine_scores_uniform_and_arcsine() -> None:
    gen = torch.Generator().manual_seed(3)
    uniform = attention.sample_cosine_scores((50_000,), 3, gen)  # d = 3: uniform on [-1, 1]
    assert scipy.stats.kstest(uniform.numpy(), "uniform", args=(-1, 2)).pvalue > 1e-4
    arcsine = attention.sample_cosine_scores((50_000,), 2, gen)  # d = 2: Beta(1/2, 1/2) via the boost
    assert scipy.stats.kstest(((arcsine + 1) / 2).numpy(), "arcsine").pvalue > 1e-4


def test_sample_cosine_scores_reproducible_and_shaped() -> None:
    a = attention.sample_cosine_scores((3, 4), 64, torch.Generator().manual_seed(1))
    b = attention.sample_cosine_scores((3, 4), 64, torch.Generator().manual_seed(1))
    assert a.shape == (3, 4)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert attention.sample_cosine_scores(5, 64, torch.Generator()).shape == (5,)
    assert attention.sample_cosine_scores((2, 3), 64, dtype=torch.float32).dtype == torch.float32


def test_sample_cosine_scores_bad_input() -> None:
    with pytest.raises(ValueError, match="d must be an int >= 2"):
        attention.sample_cosine_scores((3,), 1)
    with pytest.raises(ValueError, match="shape must be"):
        attention.sample_cosine_scores((3, -1), 8)
    with pytest.raises(TypeError, match="generator must be"):
        attention.sample_cosine_scores((3,), 8, generator=0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="dtype must be"):
        attention.sample_cosine_scores((3,), 8, dtype=torch.int64)


@pytest.mark.parametrize("device", DEVICES)
def test_sample_cosine_scores_device(device: str) -> None:
    gen = torch.Generator(device=device).manual_seed(0)
    assert attention.sample_cosine_scores((10,), 32, gen).device.type == device


# ------------------------------------------------------------------------------ grid_argmax


def test_grid_argmax_parabola_and_batch() -> None:
    grid = torch.linspace(-2, 2, 401, dtype=torch.float64)
    arg, best = attention.grid_argmax(lambda g: -((g - 0.37) ** 2), grid)
    assert float(arg) == pytest.approx(0.37, abs=0.005) and float(best) <= 0
    centres = torch.tensor([-1.0, 0.0, 1.5], dtype=torch.float64)
    args, _ = attention.grid_argmax(lambda g: -((g[:, None] - centres[None, :]) ** 2), grid)
    torch.testing.assert_close(args, centres, atol=0.005, rtol=0)


def test_grid_argmax_ties_go_to_first() -> None:
    grid = torch.tensor([0.0, 1.0, 2.0])
    arg, best = attention.grid_argmax(lambda g: torch.tensor([1.0, 3.0, 3.0]), grid)
    assert float(arg) == 1.0 and float(best) == 3.0


def test_grid_argmax_bad_input() -> None:
    grid = torch.linspace(0, 1, 5)
    with pytest.raises(TypeError, match="f must be a callable"):
        attention.grid_argmax(3, grid)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="grid must have 1 dimensions"):
        attention.grid_argmax(lambda g: g, grid[None])
    with pytest.raises(ValueError, match="leading dimension 5"):
        attention.grid_argmax(lambda g: g[:3], grid)
    with pytest.raises(ValueError, match="NaN"):
        attention.grid_argmax(lambda g: g * math.nan, grid)
    with pytest.raises(TypeError, match="f must return a tensor"):
        attention.grid_argmax(lambda g: [0.0] * 5, grid)
