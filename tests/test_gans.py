"""Tests of kexue.gans: loss triples, pointwise dual maxima, fitted discriminators."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue import gans
from kexue.quadrature import gaussian_expectation

F64 = torch.float64
UNSHIFTED_PSI_AT_OMEGA_1 = {"gan": 0.0, "gan01": -math.log(2.0), "exp": -1.0, "lsgan": -1.0, "kl": 0.0}
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _ratios() -> torch.Tensor:
    return torch.tensor([0.05, 0.3, 1.0, 2.5, 12.0], dtype=F64)


# ----------------------------------------------------------------------------- gan_triple


@pytest.mark.parametrize("name", gans.GAN_NAMES)
def test_shift_makes_psi_vanish_at_omega_one(name: str) -> None:
    one = torch.tensor([1.0], dtype=F64)
    shifted, raw = gans.gan_triple(name), gans.gan_triple(name, shifted=False)
    assert float(shifted.psi(shifted.omega(one))) == pytest.approx(0.0, abs=1e-15)
    assert float(raw.psi(raw.omega(one))) == pytest.approx(UNSHIFTED_PSI_AT_OMEGA_1[name], abs=1e-15)
    assert shifted.shift == pytest.approx(-UNSHIFTED_PSI_AT_OMEGA_1[name], abs=1e-15)
    assert raw.shift == 0.0


@pytest.mark.parametrize("name", gans.GAN_NAMES)
def test_omega_is_a_strict_maximiser(name: str) -> None:
    tr = gans.gan_triple(name)
    r = _ratios()
    t = tr.omega(r).detach().clone().requires_grad_(True)
    h = tr.phi(t) + r * tr.psi(t)
    (d1,) = torch.autograd.grad(h.sum(), t, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), t)
    assert torch.allclose(d1, torch.zeros_like(d1), atol=1e-12)
    assert bool((d2 < 0).all())


@pytest.mark.parametrize("name", gans.GAN_NAMES)
def test_output_map_reaches_omega_at_k_log_r(name: str) -> None:
    tr = gans.gan_triple(name)
    r = _ratios()
    assert torch.allclose(tr.g(tr.log_ratio_scale * torch.log(r)), tr.omega(r), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("name", gans.GAN_NAMES)
def test_d_is_smallest_at_one(name: str) -> None:
    tr = gans.gan_triple(name)
    r = torch.logspace(-2, 2, 401, dtype=F64)
    d1 = tr.d(torch.tensor([1.0], dtype=F64))
    assert bool((tr.d(r) >= d1 - 1e-14).all())


def test_w_and_c_star() -> None:
    tr = gans.gan_triple("exp")
    assert tr.w_star(2.0) == pytest.approx(1.0)
    assert tr.c_star(2.0) == pytest.approx(-1.0)


def test_gan_triple_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="name"):
        gans.gan_triple("wgan")
    with pytest.raises(TypeError, match="name"):
        gans.gan_triple(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="shifted"):
        gans.gan_triple("gan", shifted=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="r"):
        gans.gan_triple("gan").d([1.0])  # type: ignore[arg-type]


# ----------------------------------------------------------------------- pointwise_dual_max


@settings(max_examples=25, deadline=None)
@given(r_value=st.floats(min_value=0.05, max_value=20.0), name=st.sampled_from(gans.GAN_NAMES))
def test_pointwise_max_recovers_omega(r_value: float, name: str) -> None:
    tr = gans.gan_triple(name)
    r = torch.tensor([r_value], dtype=F64)
    s_grid = torch.linspace(-8.0, 8.0, 4001, dtype=F64)
    res = gans.pointwise_dual_max(tr.phi, tr.psi, r, s_grid, g=tr.g)
    assert torch.allclose(res.t, tr.omega(r), rtol=1e-11, atol=1e-11)
    assert torch.allclose(res.value, tr.d(r), rtol=1e-12, atol=1e-12)


def test_grid_maximum_is_within_one_spacing() -> None:
    tr = gans.gan_triple("lsgan")
    r = _ratios()
    s_grid = torch.linspace(-6.0, 6.0, 1201, dtype=F64)
    res = gans.pointwise_dual_max(tr.phi, tr.psi, r, s_grid, g=tr.g, newton_steps=0)
    s_star = tr.log_ratio_scale * torch.log(r)
    assert bool(((res.s - s_star).abs() <= 0.01 + 1e-12).all())
    assert bool(torch.isin(res.s, s_grid).all())


def test_pointwise_max_rejects_bad_input() -> None:
    tr = gans.gan_triple("gan")
    r = _ratios()
    grid = torch.linspace(-5.0, 5.0, 101, dtype=F64)
    with pytest.raises(TypeError, match="r"):
        gans.pointwise_dual_max(tr.phi, tr.psi, [1.0], grid)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="r"):
        gans.pointwise_dual_max(tr.phi, tr.psi, r.reshape(1, -1), grid)
    with pytest.raises(ValueError, match="positive"):
        gans.pointwise_dual_max(tr.phi, tr.psi, -r, grid)
    with pytest.raises(ValueError, match="s_grid"):
        gans.pointwise_dual_max(tr.phi, tr.psi, r, grid.float())
    with pytest.raises(ValueError, match="increasing"):
        gans.pointwise_dual_max(tr.phi, tr.psi, r, grid.flip(0))
    with pytest.raises(ValueError, match="newton_steps"):
        gans.pointwise_dual_max(tr.phi, tr.psi, r, grid, newton_steps=-1)
    with pytest.raises(TypeError, match="phi"):
        gans.pointwise_dual_max(None, tr.psi, r, grid)  # type: ignore[arg-type]


# ---------------------------------------------------------------- quadrature and fitting


def test_operator_matches_kexue_quadrature() -> None:
    op = gans.gaussian_expectation_operator(0.4, 1.7, n_nodes=60)
    ref = gaussian_expectation(torch.cos, 0.4, 1.7, n_nodes=60)
    assert float(op(torch.cos)) == pytest.approx(float(ref), abs=1e-15)
    assert float(op(lambda x: x**2)) == pytest.approx(0.4**2 + 1.7**2, rel=1e-13)
    assert op.dtype == F64
    assert op.device == torch.device("cpu")


def test_operator_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="std"):
        gans.gaussian_expectation_operator(0.0, 0.0)
    with pytest.raises(TypeError, match="mean"):
        gans.gaussian_expectation_operator("0", 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_nodes"):
        gans.gaussian_expectation_operator(0.0, 1.0, n_nodes=0)


@pytest.mark.parametrize("name", ["gan", "exp", "lsgan", "kl"])
def test_fit_by_quadrature_reaches_the_optimum(name: str) -> None:
    mu = 0.7
    tr = gans.gan_triple(name)
    fit = gans.fit_discriminator(
        tr.phi, tr.psi, tr.g, gans.gaussian_expectation_operator(0.0, 1.0), gans.gaussian_expectation_operator(mu, 1.0)
    )
    assert fit.w == pytest.approx(tr.w_star(mu), abs=1e-10)
    assert fit.c == pytest.approx(tr.c_star(mu), abs=1e-10)
    assert fit.grad_norm < 1e-12


def test_fit_on_samples_is_a_stationary_point_near_the_optimum() -> None:
    gen = torch.Generator().manual_seed(0)
    x_p = torch.randn(4096, generator=gen, dtype=F64)
    x_q = 1.0 + torch.randn(4096, generator=gen, dtype=F64)
    tr = gans.gan_triple("gan")
    fit = gans.fit_discriminator(tr.phi, tr.psi, tr.g, x_p, x_q)
    assert fit.grad_norm < 1e-12
    # standard errors at N = 4096 are about 0.03 (w) and 0.02 (c); 0.2 is many of them
    assert abs(fit.w - 1.0) < 0.2
    assert abs(fit.c + 0.5) < 0.2


def test_fit_rejects_bad_input() -> None:
    tr = gans.gan_triple("gan")
    x = torch.randn(16, dtype=F64)
    with pytest.raises(TypeError, match="p"):
        gans.fit_discriminator(tr.phi, tr.psi, tr.g, [1.0, 2.0], x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="share"):
        gans.fit_discriminator(tr.phi, tr.psi, tr.g, x, x.float())
    with pytest.raises(TypeError, match="init"):
        gans.fit_discriminator(tr.phi, tr.psi, tr.g, x, x, init=(0.0,))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_iter"):
        gans.fit_discriminator(tr.phi, tr.psi, tr.g, x, x, max_iter=0)
    with pytest.raises(ValueError, match="q"):
        gans.fit_discriminator(tr.phi, tr.psi, tr.g, x, x.reshape(4, 4))
    with pytest.raises(TypeError, match="phi"):
        gans.fit_discriminator(tr.phi, None, tr.g, x, x)  # type: ignore[arg-type]


@CUDA
def test_cuda() -> None:
    dev = torch.device("cuda")
    tr = gans.gan_triple("kl")
    r = _ratios().to(dev)
    res = gans.pointwise_dual_max(tr.phi, tr.psi, r, torch.linspace(-8.0, 8.0, 2001, dtype=F64, device=dev), g=tr.g)
    assert res.t.device.type == "cuda"
    assert torch.allclose(res.t, tr.omega(r), atol=1e-11)
    fit = gans.fit_discriminator(
        tr.phi,
        tr.psi,
        tr.g,
        gans.gaussian_expectation_operator(0.0, 1.0, device=dev),
        gans.gaussian_expectation_operator(1.0, 1.0, device=dev),
    )
    assert fit.w == pytest.approx(1.0, abs=1e-10)
    gen = torch.Generator(device=dev).manual_seed(0)
    x_p = torch.randn(1024, generator=gen, dtype=F64, device=dev)
    x_q = 1.0 + torch.randn(1024, generator=gen, dtype=F64, device=dev)
    fit = gans.fit_discriminator(tr.phi, tr.psi, tr.g, x_p, x_q)
    assert fit.grad_norm < 1e-10
