"""One-step optimal learning rates under gradient noise, and how they scale with batch size.

The common model (kexue.fm/archives/10542 and 10563): a mini-batch gradient ``g_B`` has mean
``g`` and covariance ``Sigma / B``; the loss is locally quadratic with Hessian ``H``; an
optimizer moves by ``-eta * u`` where the update ``u`` is a function of ``g_B`` (``u = g_B``
for SGD, ``sign(g_B)`` for SignSGD, ``softsign(g_B, eps)`` for an Adam-like update). The
expected loss after one step is ``L - eta E[u].g + eta^2 E[u^T H u] / 2``, minimised by

    eta* = E[u].g / E[u^T H u].

This module holds the pieces both chapters use: the closed forms for SGD and SignSGD, the
Adam-like SoftSign update and its moments (exact by quadrature, or the clip closed forms),
the elementary erf surrogate, the delta-method standard error of a ratio of Monte-Carlo
means, and the steps-examples fit. Everything works on CPU and CUDA tensors; results keep
the dtype and device of the inputs.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from . import _checks

__all__ = [
    "SGDOptimum",
    "StepsExamplesFit",
    "clip_moments_closed_form",
    "erf_softsign_approx",
    "fit_steps_examples",
    "mean_field_beta",
    "one_step_optimal_lr",
    "per_sample_grads_linreg",
    "ratio_with_se",
    "sgd_optimal_lr",
    "sign_mean",
    "signsgd_optimal_lr_exact",
    "softsign",
    "softsign_moments",
    "softsign_sgd_optimal_lr",
]


# ----------------------------------------------------------------------------- input checks


def _batch_sizes(B: float | torch.Tensor, like: torch.Tensor, name: str = "B") -> torch.Tensor:
    """``B`` as a tensor (0-d or 1-d) of positive batch sizes on ``like``'s device and dtype."""
    if isinstance(B, bool):
        raise TypeError(f"{name} must be a positive number or a 1-d tensor of them, got a bool")
    if isinstance(B, (int, float)):
        out = torch.tensor(float(B), dtype=like.dtype, device=like.device)
    elif isinstance(B, torch.Tensor):
        if B.ndim > 1:
            raise ValueError(f"{name} must be a number or a 1-d tensor, got shape {tuple(B.shape)}")
        out = B.to(dtype=like.dtype, device=like.device)
    else:
        raise TypeError(f"{name} must be a positive number or a 1-d tensor of them, got {type(B).__name__}")
    if not bool(torch.isfinite(out).all()) or bool((out <= 0).any()):
        raise ValueError(f"{name} must be positive and finite")
    return out


def _vector(x: torch.Tensor, name: str) -> torch.Tensor:
    return _checks.tensor(x, name, ndim=1)


def _square(H: torch.Tensor, n: int, name: str = "H") -> torch.Tensor:
    _checks.tensor(H, name, ndim=2)
    if H.shape != (n, n):
        raise ValueError(f"{name} must have shape ({n}, {n}), got {tuple(H.shape)}")
    return H


def _same_shape(x: torch.Tensor, ref: torch.Tensor, name: str, ref_name: str) -> None:
    if x.shape != ref.shape:
        raise ValueError(f"{name} must have the shape of {ref_name} {tuple(ref.shape)}, got {tuple(x.shape)}")


def _nonnegative_float(x: float, name: str) -> float:
    if not isinstance(x, (int, float)) or isinstance(x, bool):
        raise TypeError(f"{name} must be a number, got {type(x).__name__}")
    if not math.isfinite(x) or x < 0:
        raise ValueError(f"{name} must be finite and non-negative, got {x!r}")
    return float(x)


# ----------------------------------------------------------------------------- SGD


class SGDOptimum(NamedTuple):
    """One-step optimal SGD learning rate and the constants of ``eta* = eta_max / (1 + B_noise / B)``."""

    eta: torch.Tensor  #: the optimal learning rate at each batch size
    eta_max: float  #: g.g / g^T H g, the limit B -> infinity
    b_noise: float  #: Tr(Sigma H) / g^T H g
    b_simple: float  #: Tr(Sigma) / g.g, the "H proportional to I" shortcut


def sgd_optimal_lr(g: torch.Tensor, H: torch.Tensor, Sigma: torch.Tensor, B: float | torch.Tensor) -> SGDOptimum:
    """The learning rate minimising the expected quadratic-model loss after one SGD step.

    With ``E[g_B] = g`` and ``Cov[g_B] = Sigma / B``,
    ``eta*(B) = g.g / (g^T H g + Tr(Sigma H) / B) = eta_max / (1 + B_noise / B)``.
    ``B`` is a number or a 1-d tensor of batch sizes; ``eta`` has its shape.
    """
    g = _vector(g, "g")
    n = g.shape[0]
    H = _square(H, n, "H")
    Sigma = _square(Sigma, n, "Sigma")
    Bt = _batch_sizes(B, g)
    gg = g @ g
    gHg = g @ H @ g
    if float(gHg) <= 0:
        raise ValueError("g^T H g must be positive (H must curve upwards along g)")
    tr_sh = torch.trace(Sigma @ H)
    eta = gg / (gHg + tr_sh / Bt)
    return SGDOptimum(eta, float(gg / gHg), float(tr_sh / gHg), float(torch.trace(Sigma) / gg))


def one_step_optimal_lr(
    mean: torch.Tensor, second_moment: torch.Tensor, g: torch.Tensor, H: torch.Tensor
) -> torch.Tensor:
    """``eta* = E[u].g / E[u^T H u]`` for an update ``u`` with independent coordinates.

    ``mean`` = ``E[u_i]`` and ``second_moment`` = ``E[u_i^2]`` have shape ``(..., n)`` (a
    leading dimension per batch size, say). Independence gives
    ``E[u^T H u] = m^T H m + sum_i H_ii (E[u_i^2] - m_i^2)``. Returns shape ``(...)``.
    """
    g = _vector(g, "g")
    n = g.shape[0]
    H = _square(H, n, "H")
    _checks.tensor(mean, "mean")
    _checks.tensor(second_moment, "second_moment")
    if mean.shape[-1:] != (n,):
        raise ValueError(f"mean must have last dimension {n}, got shape {tuple(mean.shape)}")
    _same_shape(second_moment, mean, "second_moment", "mean")
    numerator = mean @ g
    quad = ((mean @ H) * mean).sum(-1)
    variance_part = ((second_moment - mean**2) * torch.diagonal(H)).sum(-1)
    return numerator / (quad + variance_part)


# ----------------------------------------------------------------------------- SignSGD


def sign_mean(g: torch.Tensor, sigma: torch.Tensor, B: float | torch.Tensor) -> torch.Tensor:
    """``E[sign(g + sigma z / sqrt(B))] = erf(g sqrt(B / 2) / sigma)`` for ``z ~ N(0, 1)``.

    ``g`` and ``sigma`` have shape ``(n,)``; with a 1-d ``B`` the result has shape ``(len(B), n)``.
    """
    g = _vector(g, "g")
    sigma = _vector(sigma, "sigma")
    _same_shape(sigma, g, "sigma", "g")
    if bool((sigma <= 0).any()):
        raise ValueError("sigma must be positive")
    Bt = _batch_sizes(B, g)
    return torch.erf(g * torch.sqrt(Bt.unsqueeze(-1) / 2) / sigma)


def signsgd_optimal_lr_exact(
    g: torch.Tensor, sigma: torch.Tensor, H: torch.Tensor, B: float | torch.Tensor
) -> torch.Tensor:
    """Exact one-step optimum of SignSGD under independent Gaussian noise ``sigma_i^2 / B``.

    ``eta*(B) = sum_i e_i g_i / (sum_i H_ii + sum_{i != j} e_i e_j H_ij)`` with
    ``e_i = erf(g_i sqrt(B / 2) / sigma_i)`` (``E[sign^2] = 1``). Shape of ``B``.
    """
    e = sign_mean(g, sigma, B)
    return one_step_optimal_lr(e, torch.ones_like(e), g, H)


def mean_field_beta(B: float | torch.Tensor, kappa: float) -> torch.Tensor:
    """``beta(B) = (1 + pi kappa^2 / (2 B))^(-1/2)``: the mean-field shrink factor of ``E[sign(g_B)]``."""
    kappa = _nonnegative_float(kappa, "kappa")
    like = B if isinstance(B, torch.Tensor) and B.is_floating_point() else torch.zeros((), dtype=torch.float64)
    Bt = _batch_sizes(B, like)
    return (1 + math.pi * kappa**2 / (2 * Bt)).rsqrt()


def erf_softsign_approx(x: torch.Tensor, c: float = math.pi / 4) -> torch.Tensor:
    """The elementary surrogate ``x / sqrt(x^2 + c)`` of ``erf(x)``; ``c = pi / 4`` matches the slope at 0."""
    _checks.tensor(x, "x")
    c = _nonnegative_float(c, "c")
    if c == 0:
        raise ValueError("c must be positive")
    return x / torch.sqrt(x**2 + c)


# ----------------------------------------------------------------------------- SoftSign (Adam with epsilon)


def softsign(x: torch.Tensor, eps: float) -> torch.Tensor:
    """``x / sqrt(x^2 + eps^2)``, the Adam-like update with epsilon; ``eps = 0`` gives ``sign(x)``."""
    _checks.tensor(x, "x")
    eps = _nonnegative_float(eps, "eps")
    if eps == 0:
        return torch.sign(x)
    return x / torch.sqrt(x**2 + eps**2)


def softsign_moments(
    g: torch.Tensor,
    sigma: torch.Tensor,
    B: float | torch.Tensor,
    eps: float,
    *,
    n_nodes: int = 4001,
    zmax: float = 8.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``E[u_i]`` and ``E[u_i^2]`` for ``u = softsign(g + sigma z / sqrt(B), eps)``, ``z ~ N(0, I)``.

    By the trapezoid rule on ``[-zmax, zmax]`` (``eps = 0`` uses the exact ``erf`` and
    ``E[sign^2] = 1``). The integrand is analytic with poles at imaginary distance
    ``eps sqrt(B) / sigma`` from the real ``z`` axis, so the trapezoid error decays like
    ``exp(-2 pi d / h)`` with node spacing ``h``; Gauss-Hermite, in contrast, fails when that
    distance is small (a near step). Shapes as in :func:`sign_mean`. Both moments come from
    one pass, in chunks of batch sizes that keep about 2^23 values in memory.
    """
    eps = _nonnegative_float(eps, "eps")
    if eps == 0:
        m = sign_mean(g, sigma, B)
        return m, torch.ones_like(m)
    g = _vector(g, "g")
    sigma = _vector(sigma, "sigma")
    _same_shape(sigma, g, "sigma", "g")
    if bool((sigma <= 0).any()):
        raise ValueError("sigma must be positive")
    _checks.positive_int(n_nodes, "n_nodes")
    if n_nodes < 3:
        raise ValueError(f"n_nodes must be at least 3, got {n_nodes}")
    zmax = _nonnegative_float(zmax, "zmax")
    if zmax == 0:
        raise ValueError("zmax must be positive")
    Bt = _batch_sizes(B, g)
    flat_B = Bt.reshape(-1)
    z = torch.linspace(-zmax, zmax, n_nodes, dtype=g.dtype, device=g.device)
    weights = torch.exp(-(z**2) / 2) * (z[1] - z[0]) / math.sqrt(2 * math.pi)
    weights[0] *= 0.5
    weights[-1] *= 0.5
    std = sigma / torch.sqrt(flat_B.unsqueeze(-1))
    chunk = max(1, 2**23 // (g.shape[0] * n_nodes))
    m1_parts, m2_parts = [], []
    for k in range(0, std.shape[0], chunk):
        x = std[k : k + chunk].unsqueeze(-1) * z
        x += g.unsqueeze(-1)
        u = x.square().add_(eps**2).rsqrt_().mul_(x)
        m1_parts.append(u @ weights)
        m2_parts.append(u.square_() @ weights)
    shape = (*Bt.shape, g.shape[0])
    return torch.cat(m1_parts).reshape(shape), torch.cat(m2_parts).reshape(shape)


def clip_moments_closed_form(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``E[c]`` and ``E[c^2]`` for ``c = clip((a + z) / b, -1, 1)``, ``z ~ N(0, 1)``, in closed form.

    ``a = g sqrt(B) / sigma`` and ``b = eps sqrt(B) / sigma > 0`` (broadcast). With
    ``l = -(a + b)``, ``r = b - a``, ``Phi`` the normal CDF and ``phi`` its density:
    ``E[c] = (erf((a+b)/sqrt2) + erf((a-b)/sqrt2)) / 2 + a (erf((a+b)/sqrt2) - erf((a-b)/sqrt2)) / (2 b)
    + (exp(-(a+b)^2/2) - exp(-(a-b)^2/2)) / (b sqrt(2 pi))`` and
    ``E[c^2] = Phi(l) + 1 - Phi(r) + [(a^2 + 1)(Phi(r) - Phi(l)) + 2 a (phi(l) - phi(r)) - (r phi(r) - l phi(l))] / b^2``.

    For ``b < 0.5`` those forms lose digits to cancellation (terms of order 1 cancel to order
    ``b^2``), so there the part of the integral with ``|a + z| < b`` is evaluated as
    ``b int_{-1}^{1} t^k phi(b t - a) dt`` by 32-point Gauss-Legendre quadrature (the
    integrand is then a smooth, slowly varying function of ``t``).
    """
    _checks.tensor(a, "a")
    _checks.tensor(b, "b")
    if bool((b <= 0).any()):
        raise ValueError("b must be positive")
    a, b = torch.broadcast_tensors(a, b)
    s2 = math.sqrt(2.0)

    def cdf(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * torch.erfc(-x / s2)

    def pdf(x: torch.Tensor) -> torch.Tensor:
        return torch.exp(-(x**2) / 2) / math.sqrt(2 * math.pi)

    ep, em = torch.erf((a + b) / s2), torch.erf((a - b) / s2)
    m1 = (ep + em) / 2 + a * (ep - em) / (2 * b)
    m1 = m1 + (torch.exp(-((a + b) ** 2) / 2) - torch.exp(-((a - b) ** 2) / 2)) / (b * math.sqrt(2 * math.pi))
    left, right = -(a + b), b - a
    inner = (a**2 + 1) * (cdf(right) - cdf(left)) + 2 * a * (pdf(left) - pdf(right))
    inner = inner - (right * pdf(right) - left * pdf(left))
    tails = cdf(left) + cdf(-right)
    m2 = tails + inner / b**2

    small = b < 0.5
    if bool(small.any()):
        t_np, w_np = np.polynomial.legendre.leggauss(32)
        t = torch.as_tensor(t_np, dtype=a.dtype, device=a.device)
        w = torch.as_tensor(w_np, dtype=a.dtype, device=a.device)
        density = pdf(b.unsqueeze(-1) * t - a.unsqueeze(-1))
        middle1 = b * (w * t * density).sum(-1)
        middle2 = b * (w * t**2 * density).sum(-1)
        m1 = torch.where(small, cdf(-right) - cdf(left) + middle1, m1)
        m2 = torch.where(small, tails + middle2, m2)
    return m1, m2


def softsign_sgd_optimal_lr(
    g: torch.Tensor,
    sigma: torch.Tensor,
    H: torch.Tensor,
    B: float | torch.Tensor,
    eps: float,
    *,
    exact: bool = True,
    n_nodes: int = 4001,
    zmax: float = 8.0,
) -> torch.Tensor:
    """One-step optimal learning rate of SoftSignSGD, ``u = softsign(g_B, eps)``.

    ``exact=True``: the moments of ``u`` by quadrature (:func:`softsign_moments`).
    ``exact=False``: the approximate formula of kexue.fm/archives/10563,
    ``E[u_i] ~ (g_i / sigma_i) / sqrt((g_i^2 + eps^2) / sigma_i^2 + pi / (2B))`` and
    ``E[u_i^2] ~ 1 - b_i^2 / (a_i^2 + b_i^2 + pi / 2)`` with ``a = g sqrt(B) / sigma``,
    ``b = eps sqrt(B) / sigma`` (before the mean-field step). Shape of ``B``.
    """
    if not isinstance(exact, bool):
        raise TypeError(f"exact must be a bool, got {type(exact).__name__}")
    if exact:
        m1, m2 = softsign_moments(g, sigma, B, eps, n_nodes=n_nodes, zmax=zmax)
    else:
        eps = _nonnegative_float(eps, "eps")
        g = _vector(g, "g")
        sigma = _vector(sigma, "sigma")
        _same_shape(sigma, g, "sigma", "g")
        if bool((sigma <= 0).any()):
            raise ValueError("sigma must be positive")
        root_b = torch.sqrt(_batch_sizes(B, g)).unsqueeze(-1)
        a, b = g * root_b / sigma, eps * root_b / sigma
        denom = a**2 + b**2 + math.pi / 2
        m1 = a / torch.sqrt(denom)
        m2 = 1 - b**2 / denom
    return one_step_optimal_lr(m1, m2, g, H)


# ----------------------------------------------------------------------------- Monte Carlo and fits


def ratio_with_se(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """``mean(a) / mean(b)`` and its delta-method standard error, covariance term included.

    For paired samples ``(a_k, b_k)``, ``r = abar / bbar`` and
    ``se^2 = (Var a - 2 r Cov(a, b) + r^2 Var b) / (n bbar^2)``. Ignoring the covariance
    can overstate the error several-fold when ``a`` and ``b`` move together.
    """
    _checks.tensor(a, "a", ndim=1)
    _checks.tensor(b, "b", ndim=1)
    _same_shape(b, a, "b", "a")
    n = a.shape[0]
    if n < 2:
        raise ValueError(f"a and b need at least 2 samples, got {n}")
    a64, b64 = a.double(), b.double()
    abar, bbar = a64.mean(), b64.mean()
    if float(bbar) == 0:
        raise ValueError("mean(b) must not be zero")
    r = abar / bbar
    da, db = a64 - abar, b64 - bbar
    var_a, var_b = (da @ da) / (n - 1), (db @ db) / (n - 1)
    cov = (da @ db) / (n - 1)
    var_r = (var_a - 2 * r * cov + r**2 * var_b) / (n * bbar**2)
    return float(r), float(torch.sqrt(torch.clamp(var_r, min=0)))


class StepsExamplesFit(NamedTuple):
    """Least-squares fit of ``log S = log S_min + log(1 + B_crit / B)``."""

    s_min: float  #: the fitted number of steps at infinite batch
    b_crit: float  #: the fitted critical batch size, E_min / S_min
    residuals: torch.Tensor  #: S_fit / S - 1 at each batch size


def fit_steps_examples(B: torch.Tensor, S: torch.Tensor) -> StepsExamplesFit:
    """Fit ``S(B) = S_min (1 + B_crit / B)`` in log space (McCandlish et al., 2018).

    For fixed ``B_crit`` the best ``log S_min`` is a mean, so the fit is a one-dimensional
    minimisation over ``log B_crit`` (golden-section search on a bracket found by a grid).
    """
    _checks.tensor(B, "B", ndim=1)
    _checks.tensor(S, "S", ndim=1)
    _same_shape(S, B, "S", "B")
    if B.shape[0] < 3:
        raise ValueError(f"B and S need at least 3 points to fit 2 parameters, got {B.shape[0]}")
    if bool((B <= 0).any()) or bool((S <= 0).any()):
        raise ValueError("B and S must be positive")
    b, log_s = B.double().cpu(), S.double().cpu().log()

    def profile(log_bc: float) -> tuple[float, float]:
        shape = torch.log1p(math.exp(log_bc) / b)
        log_smin = float((log_s - shape).mean())
        return float(((log_s - log_smin - shape) ** 2).sum()), log_smin

    lo, hi = math.log(float(b.min())) - 8, math.log(float(b.max())) + 8
    grid = [lo + (hi - lo) * k / 400 for k in range(401)]
    losses = [profile(x)[0] for x in grid]
    k = min(range(len(grid)), key=losses.__getitem__)
    left, right = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(100):
        x1, x2 = right - ratio * (right - left), left + ratio * (right - left)
        if profile(x1)[0] < profile(x2)[0]:
            right = x2
        else:
            left = x1
    log_bc = (left + right) / 2
    log_smin = profile(log_bc)[1]
    s_min, b_crit = math.exp(log_smin), math.exp(log_bc)
    fitted = s_min * (1 + b_crit / b)
    residuals = (fitted / S.double().cpu() - 1).to(device=S.device)
    return StepsExamplesFit(s_min, b_crit, residuals)


def per_sample_grads_linreg(X: torch.Tensor, y: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Per-sample gradients ``(x_n . theta - y_n) x_n`` of the loss ``(x . theta - y)^2 / 2``; shape ``(N, d)``."""
    _checks.tensor(X, "X", ndim=2)
    _checks.tensor(y, "y", ndim=1)
    _checks.tensor(theta, "theta", ndim=1)
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"y must have length {X.shape[0]} (rows of X), got {y.shape[0]}")
    if theta.shape[0] != X.shape[1]:
        raise ValueError(f"theta must have length {X.shape[1]} (columns of X), got {theta.shape[0]}")
    return (X @ theta - y).unsqueeze(-1) * X
