"""GAN losses built by the likelihood-ratio recipe: loss triples, pointwise dual maxima, fitted discriminators.

A GAN loss here is a pair ``(phi, psi)``: the discriminator ``t(x)`` maximises
``E_p[phi(t)] + E_q[psi(t)]`` (``p`` the data, ``q`` the generator), and pointwise the maximiser
is ``t = omega(q/p)``. The discriminator's raw output ``s`` passes through an output map
``t = g(s)`` (identity, ``tanh``, ``exp``, ...).

- :func:`gan_triple`: the standard examples (``"gan"``, ``"gan01"``, ``"exp"``, ``"lsgan"``,
  ``"kl"``) as a :class:`GanTriple`.
- :func:`pointwise_dual_max`: ``max_t phi(t) + r psi(t)`` on a grid in ``s``, polished by Newton.
- :func:`fit_discriminator`: damped Newton on the two-parameter discriminator ``t(x) = g(w x + c)``,
  with expectations from samples or from a quadrature rule.
- :func:`gaussian_expectation_operator`: ``f -> E_{N(mean, std^2)}[f(x)]`` by Gauss-Hermite
  quadrature (through :func:`kexue.quadrature.gaussian_expectation`), for :func:`fit_discriminator`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from . import _checks
from .quadrature import gaussian_expectation

__all__ = [
    "GAN_NAMES",
    "DiscriminatorFit",
    "DualMax",
    "GanTriple",
    "GaussHermiteExpectation",
    "fit_discriminator",
    "gan_triple",
    "gaussian_expectation_operator",
    "pointwise_dual_max",
]

TensorFn = Callable[[torch.Tensor], torch.Tensor]
#: An expectation operator: takes ``f`` and returns ``E[f(x)]`` as a 0-d tensor.
Expectation = Callable[[TensorFn], torch.Tensor]

_LOG2 = math.log(2.0)


def _identity(s: torch.Tensor) -> torch.Tensor:
    return s


@dataclass(frozen=True)
class GanTriple:
    """One GAN loss of the likelihood-ratio recipe.

    Attributes:
        name: the key it was built from (see :data:`GAN_NAMES`).
        phi: applied to the discriminator output on real samples (``x ~ p``).
        psi: applied to the discriminator output on fake samples (``x ~ q``).
        omega: the pointwise maximiser ``r -> argmax_t phi(t) + r psi(t)`` with ``r = q/p``.
        g: the output map ``s -> t`` of the discriminator.
        log_ratio_scale: ``k`` with ``g(k log r) = omega(r)``; for ``p = N(0, 1)`` and
            ``q = N(mu, 1)`` the optimal ``t(x) = g(w x + c)`` has ``w = k mu``, ``c = -k mu^2 / 2``.
        shifted: whether ``psi`` carries the constant that makes ``psi(omega(1)) = 0``.
        shift: that constant (already added to ``psi`` when ``shifted``).
    """

    name: str
    phi: TensorFn
    psi: TensorFn
    omega: TensorFn
    g: TensorFn
    log_ratio_scale: float
    shifted: bool
    shift: float

    def d(self, r: torch.Tensor) -> torch.Tensor:
        """``d(r) = phi(omega(r)) + r psi(omega(r))``, the pointwise maximum."""
        _checks.tensor(r, "r")
        t = self.omega(r)
        return self.phi(t) + r * self.psi(t)

    def w_star(self, mu: float) -> float:
        """Optimal slope for ``p = N(0, 1)``, ``q = N(mu, 1)``: ``k mu``."""
        return self.log_ratio_scale * float(mu)

    def c_star(self, mu: float) -> float:
        """Optimal offset for ``p = N(0, 1)``, ``q = N(mu, 1)``: ``-k mu^2 / 2``."""
        return -self.log_ratio_scale * float(mu) ** 2 / 2


def _triples(shifted: bool) -> dict[str, GanTriple]:
    def make(name, phi, psi, omega, g, k, shift):
        psi_used = (lambda t, _psi=psi, _c=shift: _psi(t) + _c) if shifted and shift != 0.0 else psi
        return GanTriple(name, phi, psi_used, omega, g, k, shifted, shift if shifted else 0.0)

    return {
        # Standard GAN, discriminator logit t = log(q/p): phi = -log(1 + e^t), psi = log 2 - log(1 + e^-t).
        "gan": make(
            "gan",
            lambda t: -F.softplus(t),
            lambda t: _LOG2 - F.softplus(-t),
            torch.log,
            _identity,
            1.0,
            0.0,
        ),
        # The same game with a (0, 1)-valued discriminator t = q/(p + q): phi = log(1 - t), psi = log t (+ log 2).
        "gan01": make(
            "gan01",
            lambda t: torch.log1p(-t),
            torch.log,
            lambda r: r / (1 + r),
            torch.sigmoid,
            1.0,
            _LOG2,
        ),
        # Exponential loss: phi = -e^t, psi = -e^-t (+ 1), t = log(q/p) / 2.
        "exp": make(
            "exp",
            lambda t: -torch.exp(t),
            lambda t: -torch.exp(-t),
            lambda r: 0.5 * torch.log(r),
            _identity,
            0.5,
            1.0,
        ),
        # Least squares with a = -1 (real), b = 1 (fake): phi = -(t + 1)^2, psi = -(t - 1)^2 (+ 1).
        "lsgan": make(
            "lsgan",
            lambda t: -((t + 1) ** 2),
            lambda t: -((t - 1) ** 2),
            lambda r: (r - 1) / (r + 1),
            torch.tanh,
            0.5,
            1.0,
        ),
        # KL(p || q) from omega(r) = r, rho(t) = 1/t^2: phi = -log t, psi = 1 - 1/t.
        "kl": make(
            "kl",
            lambda t: -torch.log(t),
            lambda t: 1 - 1 / t,
            torch.clone,  # omega is the identity; a copy, so that it never aliases r
            torch.exp,
            1.0,
            0.0,
        ),
    }


#: The names :func:`gan_triple` accepts.
GAN_NAMES: tuple[str, ...] = ("gan", "gan01", "exp", "lsgan", "kl")


def gan_triple(name: str, *, shifted: bool = True) -> GanTriple:
    """The loss ``name`` (one of :data:`GAN_NAMES`) as a :class:`GanTriple`.

    With ``shifted=True`` (default) ``psi`` includes the constant that makes
    ``psi(omega(1)) = 0``, so ``d(r)`` has its minimum at ``r = 1``; the constant adds
    ``E_q[const] = const`` to the objective and changes neither the discriminator's optimum
    nor the generator's gradient. ``"lsgan"`` uses the labels ``a = -1`` (real) and ``b = 1`` (fake).
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if name not in GAN_NAMES:
        raise ValueError(f"name must be one of {GAN_NAMES}, got {name!r}")
    if not isinstance(shifted, bool):
        raise TypeError(f"shifted must be a bool, got {type(shifted).__name__}")
    return _triples(shifted)[name]


class DualMax(NamedTuple):
    """Result of :func:`pointwise_dual_max`: maximiser ``t = g(s)``, maximum value, and ``s``."""

    t: torch.Tensor
    value: torch.Tensor
    s: torch.Tensor


def pointwise_dual_max(
    phi: TensorFn,
    psi: TensorFn,
    r: torch.Tensor,
    s_grid: torch.Tensor,
    *,
    g: TensorFn | None = None,
    newton_steps: int = 30,
) -> DualMax:
    """``max_t phi(t) + r psi(t)`` for each entry of ``r``, over ``t = g(s)``, ``s`` in ``s_grid``.

    The grid maximum is taken first; for a unimodal objective it lies within one grid
    spacing of the true maximiser. Then ``newton_steps`` Newton steps on the derivative in
    ``s`` (each clipped to two grid spacings, and skipped where the curvature is not
    negative) polish it to round-off. ``newton_steps=0`` returns the plain grid maximum.

    Args:
        phi, psi: elementwise functions of ``t``.
        r: positive likelihood ratios ``q/p``, a 1-D floating tensor.
        s_grid: increasing 1-D grid of raw discriminator outputs, same dtype and device as ``r``.
        g: output map ``s -> t`` (default: identity).
        newton_steps: number of Newton polishing steps (non-negative int).

    Returns:
        :class:`DualMax` ``(t, value, s)``, each shaped like ``r``.
    """
    if not callable(phi) or not callable(psi):
        raise TypeError("phi and psi must be callables on tensors")
    if g is not None and not callable(g):
        raise TypeError("g must be a callable on tensors or None")
    _checks.tensor(r, "r", ndim=1)
    _checks.tensor(s_grid, "s_grid", ndim=1)
    if r.numel() == 0:
        raise ValueError("r must not be empty")
    if s_grid.numel() < 3:
        raise ValueError(f"s_grid must have at least 3 points, got {s_grid.numel()}")
    if s_grid.dtype != r.dtype or s_grid.device != r.device:
        raise ValueError(f"s_grid ({s_grid.dtype}, {s_grid.device}) must match r ({r.dtype}, {r.device})")
    if bool((r <= 0).any()) or not bool(torch.isfinite(r).all()):
        raise ValueError("r must be positive and finite")
    if bool((s_grid[1:] <= s_grid[:-1]).any()):
        raise ValueError("s_grid must be strictly increasing")
    if not isinstance(newton_steps, int) or isinstance(newton_steps, bool) or newton_steps < 0:
        raise ValueError(f"newton_steps must be a non-negative int, got {newton_steps!r}")
    g = g or _identity

    with torch.no_grad():
        t_grid = g(s_grid)
        values = phi(t_grid).unsqueeze(0) + r.unsqueeze(1) * psi(t_grid).unsqueeze(0)
        values = torch.nan_to_num(values, nan=-torch.inf)
        idx = values.argmax(dim=1)
        s = s_grid[idx].clone()
    spacing = float((s_grid[-1] - s_grid[0]) / (s_grid.numel() - 1))

    def objective(s_: torch.Tensor) -> torch.Tensor:
        t_ = g(s_)
        return phi(t_) + r * psi(t_)

    for _ in range(newton_steps):
        s_var = s.detach().requires_grad_(True)
        h = objective(s_var)
        (d1,) = torch.autograd.grad(h.sum(), s_var, create_graph=True)
        (d2,) = torch.autograd.grad(d1.sum(), s_var)
        with torch.no_grad():
            step = torch.where(d2 < 0, -d1 / d2, torch.zeros_like(d1))
            step = step.clamp(-2 * spacing, 2 * spacing)
            s = s + step
        if float(step.abs().max()) == 0.0:
            break
    with torch.no_grad():
        return DualMax(t=g(s), value=objective(s), s=s)


class DiscriminatorFit(NamedTuple):
    """Result of :func:`fit_discriminator`: ``t(x) = g(w x + c)`` and the objective it reaches."""

    w: float
    c: float
    objective: float
    grad_norm: float


class GaussHermiteExpectation:
    """``f -> E[f(x)]`` for ``x ~ N(mean, std^2)`` by a fixed Gauss-Hermite rule (float64).

    Build it with :func:`gaussian_expectation_operator`. ``nodes`` and ``weights`` are the
    rule of :func:`kexue.quadrature.gaussian_expectation`, computed once.
    """

    def __init__(self, nodes: torch.Tensor, weights: torch.Tensor) -> None:
        self.nodes = nodes
        self.weights = weights

    @property
    def device(self) -> torch.device:
        return self.nodes.device

    @property
    def dtype(self) -> torch.dtype:
        return self.nodes.dtype

    def __call__(self, f: TensorFn) -> torch.Tensor:
        return (f(self.nodes) * self.weights).sum(-1)


def gaussian_expectation_operator(
    mean: float, std: float, *, n_nodes: int = 120, device: torch.device | str | None = None
) -> GaussHermiteExpectation:
    """``f -> E[f(x)]`` for ``x ~ N(mean, std^2)`` by ``n_nodes``-point Gauss-Hermite quadrature in float64.

    The rule is that of :func:`kexue.quadrature.gaussian_expectation`; its standard-normal
    nodes and weights are computed once per ``n_nodes`` and device and cached (treat them as
    read-only), so that building many operators, or calling one inside an optimiser loop,
    does not recompute them.
    """
    for name, value in (("mean", mean), ("std", std)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise TypeError(f"{name} must be a finite float, got {value!r}")
    if std <= 0:
        raise ValueError(f"std must be positive, got {std!r}")
    _checks.positive_int(n_nodes, "n_nodes")
    z, weights = _standard_rule(n_nodes, str(torch.device(device) if device is not None else "cpu"))
    return GaussHermiteExpectation(float(mean) + float(std) * z, weights)


@functools.lru_cache(maxsize=16)
def _standard_rule(n_nodes: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes and weights of kexue.quadrature's rule for N(0, 1), computed once per size and device."""
    zero = torch.tensor(0.0, dtype=torch.float64, device=device)
    one = torch.tensor(1.0, dtype=torch.float64, device=device)
    # The nodes are what gaussian_expectation feeds to f; the weights are what it returns
    # for f = the identity matrix (row i picks weight i).
    captured: dict[str, torch.Tensor] = {}

    def record(x: torch.Tensor) -> torch.Tensor:
        captured["x"] = x
        return torch.zeros_like(x)

    gaussian_expectation(record, zero, one, n_nodes=n_nodes)
    weights = gaussian_expectation(
        lambda x: torch.eye(n_nodes, dtype=x.dtype, device=x.device), zero, one, n_nodes=n_nodes
    )
    return captured["x"], weights


def _as_expectation(source: torch.Tensor | Expectation, name: str) -> tuple[Expectation, torch.device, torch.dtype]:
    if isinstance(source, torch.Tensor):
        _checks.tensor(source, name, ndim=1)
        if source.numel() < 2:
            raise ValueError(f"{name} must hold at least 2 samples, got {source.numel()}")
        samples = source

        def expect(f: TensorFn) -> torch.Tensor:
            return f(samples).mean()

        return expect, source.device, source.dtype
    if callable(source):
        device = torch.device(getattr(source, "device", "cpu"))
        return source, device, getattr(source, "dtype", torch.float64)
    raise TypeError(f"{name} must be a 1-D tensor of samples or an expectation callable, got {type(source).__name__}")


def fit_discriminator(
    phi: TensorFn,
    psi: TensorFn,
    g: TensorFn,
    p: torch.Tensor | Expectation,
    q: torch.Tensor | Expectation,
    *,
    init: tuple[float, float] = (0.0, 0.0),
    max_iter: int = 100,
    grad_tol: float = 1e-13,
) -> DiscriminatorFit:
    """Maximise ``E_p[phi(g(w x + c))] + E_q[psi(g(w x + c))]`` over ``(w, c)`` by damped Newton.

    With two parameters the exact Hessian costs two extra backward passes, and Newton's
    method reaches the round-off floor in a handful of steps (LBFGS stalls earlier, and
    importing ``torch.optim`` costs seconds). Where the Hessian is not negative definite
    the step is plain gradient ascent; every step is halved until the objective rises
    (Armijo) or, for a Newton step near round-off, until the gradient shrinks.

    Args:
        phi, psi: the loss pair, elementwise on ``t``.
        g: output map ``s -> t``.
        p, q: real and fake distributions, each either a 1-D tensor of samples (the
            expectation is their mean) or an expectation callable ``f -> E[f(x)]`` such as
            :func:`gaussian_expectation_operator`.
        init: starting ``(w, c)``.
        max_iter: at most this many Newton steps.
        grad_tol: stop when the gradient's Euclidean norm is at most this.

    Returns:
        :class:`DiscriminatorFit` ``(w, c, objective, grad_norm)`` (plain floats; ``grad_norm``
        is the Euclidean norm of the objective's gradient at the result).
    """
    if not (callable(phi) and callable(psi) and callable(g)):
        raise TypeError("phi, psi and g must be callables on tensors")
    exp_p, dev_p, dtype_p = _as_expectation(p, "p")
    exp_q, dev_q, dtype_q = _as_expectation(q, "q")
    if dev_p != dev_q or dtype_p != dtype_q:
        raise ValueError(f"p ({dtype_p}, {dev_p}) and q ({dtype_q}, {dev_q}) must share dtype and device")
    if (
        not isinstance(init, (tuple, list))
        or len(init) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in init)
    ):
        raise TypeError(f"init must be a pair of floats (w, c), got {init!r}")
    _checks.positive_int(max_iter, "max_iter")
    if not isinstance(grad_tol, (int, float)) or isinstance(grad_tol, bool) or grad_tol < 0:
        raise ValueError(f"grad_tol must be a non-negative number, got {grad_tol!r}")

    def objective(theta: torch.Tensor) -> torch.Tensor:
        w, c = theta[0], theta[1]
        return exp_p(lambda x: phi(g(w * x + c))) + exp_q(lambda x: psi(g(w * x + c)))

    def value_grad_hess(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        theta = theta.detach().requires_grad_(True)
        value = objective(theta)
        (grad,) = torch.autograd.grad(value, theta, create_graph=True)
        rows = [torch.autograd.grad(grad[i], theta, retain_graph=True)[0] for i in range(2)]
        return value.detach(), grad.detach(), torch.stack(rows).detach()

    theta = torch.tensor([float(init[0]), float(init[1])], dtype=dtype_p, device=dev_p)
    value, grad, hess = value_grad_hess(theta)
    if not bool(torch.isfinite(value)):
        raise ValueError(f"the objective is not finite at init = {tuple(init)}")
    for _ in range(max_iter):
        if float(grad.norm()) <= grad_tol:
            break
        hess = 0.5 * (hess + hess.T)
        newton = bool((torch.linalg.eigvalsh(hess) < 0).all())
        step = -torch.linalg.solve(hess, grad) if newton else grad / max(1.0, float(hess.abs().max()))
        alpha, accepted = 1.0, False
        while alpha > 1e-12:
            trial = theta + alpha * step
            t_value, t_grad, t_hess = value_grad_hess(trial)
            rises = bool(torch.isfinite(t_value)) and float(t_value) >= float(value) + 1e-4 * alpha * float(grad @ step)
            settles = newton and bool(torch.isfinite(t_grad).all()) and float(t_grad.norm()) < float(grad.norm())
            if rises or settles:
                accepted = True
                break
            alpha *= 0.5
        if not accepted:
            break
        theta, value, grad, hess = trial, t_value, t_grad, t_hess
    w, c = (float(v) for v in theta.cpu())
    return DiscriminatorFit(w=w, c=c, objective=float(value), grad_norm=float(grad.norm()))
