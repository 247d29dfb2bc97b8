"""Gradient flows of densities: Langevin sampling, JKO steps, Gaussian divergences and 1-D grids.

The Wasserstein gradient flow of ``KL(q || p)`` is the Fokker-Planck equation
``dq/dt = -d/dx (q d/dx log p) + d^2 q/dx^2``, whose particles follow the Langevin SDE
``dx = grad log p(x) dt + sqrt(2) dW``. This module holds what chapters need to check that
statement numerically:

- :func:`langevin`: Euler-Maruyama for the Langevin SDE (particles).
- :func:`gaussian_kl`, :func:`w2_gaussian`: KL divergence and squared 2-Wasserstein
  distance between Gaussians (1-D or full covariance), differentiable.
- :func:`jko_gaussian_step`: the exact JKO (minimising-movement) step for ``p = N(0, 1)``
  inside the Gaussian family; :func:`jko_step`: a generic JKO step by L-BFGS.
- :class:`GaussianMixture1D`: a 1-D mixture with an exact, underflow-free score.
- :func:`fokker_planck_generator`, :func:`euler_maruyama_kernel`: the Fokker-Planck
  operator and the Euler-Maruyama transition kernel as matrices on a uniform 1-D grid, so
  that the exact law of the continuous flow or of the discrete chain can be computed.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch

from . import _checks

__all__ = [
    "GaussianMixture1D",
    "euler_maruyama_kernel",
    "fokker_planck_generator",
    "gaussian_kl",
    "jko_gaussian_step",
    "jko_step",
    "langevin",
    "w2_gaussian",
]

Tensorish = torch.Tensor | float


# ----------------------------------------------------------------------------- helpers


def _positive_float(value: object, name: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _as_tensor(value: object, name: str, like: torch.Tensor | None = None) -> torch.Tensor:
    """A floating tensor from a tensor or a Python number (float64 unless ``like`` says otherwise)."""
    if isinstance(value, torch.Tensor):
        return _checks.tensor(value, name)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if like is not None:
            return torch.tensor(float(value), dtype=like.dtype, device=like.device)
        return torch.tensor(float(value), dtype=torch.float64)
    raise TypeError(f"{name} must be a float or a torch.Tensor, got {type(value).__name__}")


def _first_tensor(*values: object) -> torch.Tensor | None:
    for v in values:
        if isinstance(v, torch.Tensor):
            return v
    return None


def _is_full_covariance(m: torch.Tensor, cov: torch.Tensor) -> bool:
    """Full-covariance mode: ``m`` has shape ``(..., d)`` and ``cov`` has shape ``(..., d, d)``."""
    return m.ndim >= 1 and cov.ndim == m.ndim + 1 and cov.shape[-2:] == (m.shape[-1], m.shape[-1])


def _gaussian_args(
    m1: Tensorish, c1: Tensorish, m2: Tensorish, c2: Tensorish, cov_names: tuple[str, str]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, bool]:
    like = _first_tensor(m1, c1, m2, c2)
    names = ("m1", cov_names[0], "m2", cov_names[1])
    t = [_as_tensor(v, n, like) for v, n in zip((m1, c1, m2, c2), names, strict=True)]
    devices = {x.device for x in t}
    if len(devices) > 1:
        raise ValueError(f"all arguments must be on one device, got {sorted(map(str, devices))}")
    dtype = torch.promote_types(
        torch.promote_types(t[0].dtype, t[1].dtype), torch.promote_types(t[2].dtype, t[3].dtype)
    )
    t = [x.to(dtype) for x in t]
    full1, full2 = _is_full_covariance(t[0], t[1]), _is_full_covariance(t[2], t[3])
    if full1 != full2:
        raise ValueError(
            f"{cov_names[0]} and {cov_names[1]} must both be variances (1-D) or both be (d, d) covariance "
            f"matrices matching m1 and m2; got shapes {tuple(t[1].shape)} and {tuple(t[3].shape)}"
        )
    if full1 and t[0].shape[-1] != t[2].shape[-1]:
        raise ValueError(f"m1 and m2 must have the same dimension, got {t[0].shape[-1]} and {t[2].shape[-1]}")
    if not full1:
        for x, n in ((t[1], cov_names[0]), (t[3], cov_names[1])):
            if bool((x <= 0).any()):
                raise ValueError(f"{n} must be positive (a variance)")
    return t[0], t[1], t[2], t[3], full1


# ---------------------------------------------------------------------------- Langevin


def langevin(
    score: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    h: float,
    n_steps: int,
    generator: torch.Generator | None = None,
    record: Sequence[int] | None = None,
) -> torch.Tensor:
    """Euler-Maruyama for the Langevin SDE ``dx = score(x) dt + sqrt(2) dW``.

    One step is ``x <- x + h * score(x) + sqrt(2 h) * xi`` with ``xi ~ N(0, I)`` drawn from
    ``generator`` (in the dtype and on the device of ``x0``). ``score`` is the gradient of
    ``log p`` applied elementwise-or-rowwise to a tensor shaped like ``x0``; the chain's
    stationary law tends to ``p`` as ``h -> 0`` (for finite ``h`` it is biased by ``O(h)``).

    Returns the state after ``n_steps`` steps, or, when ``record`` lists step counts
    (strictly increasing integers in ``[0, n_steps]``; 0 is the initial state), the states
    at those counts stacked along a new leading dimension.
    """
    if not callable(score):
        raise TypeError(f"score must be callable, got {type(score).__name__}")
    _checks.tensor(x0, "x0")
    h = _positive_float(h, "h")
    if not isinstance(n_steps, int) or isinstance(n_steps, bool) or n_steps < 0:
        raise ValueError(f"n_steps must be a non-negative int, got {n_steps!r}")
    _checks.generator_for(generator, x0, "x0")
    wanted: list[int] = []
    if record is not None:
        wanted = list(record)
        for i, k in enumerate(wanted):
            if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k <= n_steps:
                raise ValueError(f"record[{i}] must be an int in [0, n_steps={n_steps}], got {k!r}")
        if any(b <= a for a, b in itertools.pairwise(wanted)):
            raise ValueError("record must be strictly increasing")
        if not wanted:
            raise ValueError("record must list at least one step (or be None)")
    noise_scale = math.sqrt(2.0 * h)
    x = x0.detach().clone()
    kept: list[torch.Tensor] = []
    next_i = 0
    for k in range(n_steps + 1):
        if next_i < len(wanted) and wanted[next_i] == k:
            kept.append(x)  # x is rebound, never modified in place
            next_i += 1
        if k == n_steps:
            break
        drift = score(x)
        if not isinstance(drift, torch.Tensor) or drift.shape != x.shape:
            raise ValueError(f"score(x) must return a tensor of shape {tuple(x.shape)}")
        xi = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        x = x + h * drift + noise_scale * xi
    return torch.stack(kept) if record is not None else x


# --------------------------------------------------------------------- Gaussian geometry


def gaussian_kl(m1: Tensorish, v1: Tensorish, m2: Tensorish, v2: Tensorish) -> torch.Tensor:
    """``KL(N(m1, v1) || N(m2, v2))``, differentiable.

    1-D mode: ``m`` and ``v`` (variances) are numbers or tensors that broadcast elementwise.
    Full-covariance mode: ``m`` has shape ``(..., d)`` and ``v`` shape ``(..., d, d)``
    (symmetric positive definite); the result has shape ``(...)``.
    """
    m1, v1, m2, v2, full = _gaussian_args(m1, v1, m2, v2, ("v1", "v2"))
    if not full:
        ratio = v1 / v2
        return 0.5 * (ratio + (m1 - m2) ** 2 / v2 - 1.0 - torch.log(ratio))
    d = m1.shape[-1]
    l1 = _cholesky(v1, "v1")
    l2 = _cholesky(v2, "v2")
    # tr(S2^-1 S1) = ||L2^-1 L1||_F^2 and the Mahalanobis term through one triangular solve.
    a = torch.linalg.solve_triangular(l2, l1, upper=False)
    diff = (m2 - m1).unsqueeze(-1)
    b = torch.linalg.solve_triangular(l2, diff, upper=False)
    logdet1 = 2.0 * torch.log(torch.diagonal(l1, dim1=-2, dim2=-1)).sum(-1)
    logdet2 = 2.0 * torch.log(torch.diagonal(l2, dim1=-2, dim2=-1)).sum(-1)
    return 0.5 * ((a**2).sum((-2, -1)) + (b**2).sum((-2, -1)) - d + logdet2 - logdet1)


def _cholesky(cov: torch.Tensor, name: str) -> torch.Tensor:
    chol, info = torch.linalg.cholesky_ex(cov)
    if bool((info != 0).any()):
        raise ValueError(f"{name} must be symmetric positive definite")
    return chol


def w2_gaussian(m1: Tensorish, S1: Tensorish, m2: Tensorish, S2: Tensorish) -> torch.Tensor:
    """The *squared* 2-Wasserstein distance between ``N(m1, S1)`` and ``N(m2, S2)``, differentiable.

    ``W2^2 = |m1 - m2|^2 + tr(S1 + S2 - 2 (S1^{1/2} S2 S1^{1/2})^{1/2})`` (Dowson-Landau,
    Givens-Shortt). 1-D mode (``S`` are variances, broadcasting elementwise):
    ``(m1 - m2)^2 + (sqrt(S1) - sqrt(S2))^2``. Full-covariance mode as in :func:`gaussian_kl`.
    The cross term is computed from the eigenvalues of ``L1^T S2 L1`` (``S1 = L1 L1^T``),
    which equal those of ``S1 S2``; this keeps gradients finite when eigenvalues repeat.
    """
    m1, S1, m2, S2, full = _gaussian_args(m1, S1, m2, S2, ("S1", "S2"))
    if not full:
        return (m1 - m2) ** 2 + (torch.sqrt(S1) - torch.sqrt(S2)) ** 2
    l1 = _cholesky(S1, "S1")
    _cholesky(S2, "S2")
    cross = l1.transpose(-2, -1) @ S2 @ l1
    cross = 0.5 * (cross + cross.transpose(-2, -1))
    root_eigs = torch.sqrt(torch.linalg.eigvalsh(cross).clamp_min(0.0))
    trace = torch.diagonal(S1, dim1=-2, dim2=-1).sum(-1) + torch.diagonal(S2, dim1=-2, dim2=-1).sum(-1)
    return ((m1 - m2) ** 2).sum(-1) + trace - 2.0 * root_eigs.sum(-1)


# ---------------------------------------------------------------------------- JKO steps


def jko_gaussian_step(m: Tensorish, s: Tensorish, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One exact JKO step for ``F[q] = KL(q || N(0, 1))`` inside the family ``q = N(m, s^2)``.

    Minimises ``W2^2(q, N(m_k, s_k^2)) / (2 alpha) + KL(q || N(0, 1))`` with
    ``W2^2 = (m - m_k)^2 + (s - s_k)^2``; the stationarity conditions give

    ``m_{k+1} = m_k / (1 + alpha)``,
    ``s_{k+1} = (s_k + sqrt(s_k^2 + 4 alpha (1 + alpha))) / (2 (1 + alpha))``,

    i.e. one backward-Euler step of ``m' = -m``, ``s' = -s + 1/s``. ``m`` and ``s`` (the
    standard deviation, positive) broadcast elementwise.
    """
    alpha = _positive_float(alpha, "alpha")
    like = _first_tensor(m, s)
    m_t = _as_tensor(m, "m", like)
    s_t = _as_tensor(s, "s", like)
    if bool((s_t <= 0).any()):
        raise ValueError("s must be positive (a standard deviation)")
    m_next = m_t / (1.0 + alpha)
    s_next = (s_t + torch.sqrt(s_t**2 + 4.0 * alpha * (1.0 + alpha))) / (2.0 * (1.0 + alpha))
    return m_next, s_next


def jko_step(
    energy: Callable[[torch.Tensor], torch.Tensor],
    q_params: torch.Tensor,
    alpha: float,
    *,
    distance2: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    max_iter: int = 200,
    tolerance: float = 1e-12,
) -> torch.Tensor:
    """One JKO (minimising-movement) step in a parametrised family, by L-BFGS.

    Returns ``argmin_theta distance2(theta, q_params) / (2 alpha) + energy(theta)``, started
    at ``theta = q_params``. ``distance2(theta, theta_k)`` is the squared Wasserstein
    distance between the two members (e.g. via :func:`w2_gaussian`) and ``energy(theta)``
    the functional (e.g. ``KL(q_theta || p)`` via :func:`gaussian_kl`); both must be
    differentiable scalars. ``q_params`` is a 1-D floating tensor (use float64 for tight
    answers). L-BFGS uses a strong-Wolfe line search and stops when the gradient's largest
    entry is below ``tolerance`` or after ``max_iter`` iterations.
    """
    if not callable(energy):
        raise TypeError(f"energy must be callable, got {type(energy).__name__}")
    if not callable(distance2):
        raise TypeError(f"distance2 must be callable, got {type(distance2).__name__}")
    _checks.tensor(q_params, "q_params", ndim=1)
    alpha = _positive_float(alpha, "alpha")
    _checks.positive_int(max_iter, "max_iter")
    tolerance = _positive_float(tolerance, "tolerance")
    anchor = q_params.detach().clone()
    theta = anchor.clone().requires_grad_(True)
    optimiser = torch.optim.LBFGS(
        [theta],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=tolerance,
        tolerance_change=1e-30,  # stop on the gradient (or on no progress at all), not on small loss changes
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        value = distance2(theta, anchor) / (2.0 * alpha) + energy(theta)
        if not isinstance(value, torch.Tensor) or value.ndim != 0:
            raise ValueError("distance2(...) / (2 alpha) + energy(...) must be a scalar tensor")
        value.backward()
        return value

    optimiser.step(closure)
    return theta.detach()


# ------------------------------------------------------------------- 1-D Gaussian mixture


class GaussianMixture1D:
    """``sum_i w_i N(mu_i, sigma_i^2)`` on the real line, with an exact and stable score.

    The score ``d/dx log p(x) = sum_i r_i(x) (mu_i - x) / sigma_i^2`` uses the
    responsibilities ``r_i = softmax_i(log w_i + log N(x; mu_i, sigma_i^2))``, so it does
    not underflow far from the components (a ratio of densities would).
    """

    def __init__(
        self,
        means: Sequence[float] | torch.Tensor,
        stds: Sequence[float] | torch.Tensor,
        weights: Sequence[float] | torch.Tensor | None = None,
    ):
        means_t = torch.as_tensor(means, dtype=torch.float64)
        stds_t = torch.as_tensor(stds, dtype=torch.float64)
        if means_t.ndim != 1 or means_t.numel() == 0:
            raise ValueError(f"means must be a non-empty 1-D sequence, got shape {tuple(means_t.shape)}")
        if stds_t.shape != means_t.shape:
            raise ValueError(f"stds must have the shape of means {tuple(means_t.shape)}, got {tuple(stds_t.shape)}")
        if bool((stds_t <= 0).any()):
            raise ValueError("stds must be positive")
        if weights is None:
            weights_t = torch.full_like(means_t, 1.0 / means_t.numel())
        else:
            weights_t = torch.as_tensor(weights, dtype=torch.float64)
            if weights_t.shape != means_t.shape:
                raise ValueError(f"weights must have the shape of means {tuple(means_t.shape)}")
            if bool((weights_t <= 0).any()):
                raise ValueError("weights must be positive")
            weights_t = weights_t / weights_t.sum()
        self.means, self.stds, self.weights = means_t, stds_t, weights_t

    def _params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # components along a new leading dimension: reductions over it are elementwise and fast
        shape = (-1,) + (1,) * x.ndim
        return tuple(p.to(dtype=x.dtype, device=x.device).view(shape) for p in (self.means, self.stds, self.weights))

    def _component_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        mu, sd, w = self._params(x)
        z = (x - mu) / sd
        return torch.log(w) - 0.5 * z**2 - torch.log(sd) - 0.5 * math.log(2 * math.pi)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(x)``, elementwise."""
        _checks.tensor(x, "x")
        return torch.logsumexp(self._component_log_probs(x), dim=0)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """``d/dx log p(x)``, elementwise, via softmax responsibilities."""
        _checks.tensor(x, "x")
        mu, sd, _ = self._params(x)
        resp = torch.softmax(self._component_log_probs(x), dim=0)
        return (resp * (mu - x) / sd**2).sum(0)

    def sample(
        self, n: int, generator: torch.Generator | None = None, *, dtype: torch.dtype = torch.float64, device=None
    ) -> torch.Tensor:
        """``n`` independent draws (shape ``(n,)``)."""
        _checks.positive_int(n, "n")
        if device is None:
            device = generator.device if generator is not None else "cpu"
        mu, sd, w = (p.to(dtype=dtype, device=device) for p in (self.means, self.stds, self.weights))
        idx = torch.multinomial(w, n, replacement=True, generator=generator)
        return mu[idx] + sd[idx] * torch.randn(n, generator=generator, dtype=dtype, device=device)


# ------------------------------------------------------------------------- 1-D grids


def _uniform_grid(grid: torch.Tensor, name: str = "grid") -> float:
    _checks.tensor(grid, name, ndim=1)
    if grid.numel() < 3:
        raise ValueError(f"{name} must have at least 3 points, got {grid.numel()}")
    steps = grid[1:] - grid[:-1]
    dx = float(steps.mean())
    if dx <= 0 or float((steps - dx).abs().max()) > 1e-9 * max(1.0, dx):
        raise ValueError(f"{name} must be uniform and increasing")
    return dx


def fokker_planck_generator(log_p: torch.Tensor, dx: float, *, symmetric: bool = False) -> torch.Tensor:
    """The Fokker-Planck operator of the Langevin SDE for ``p`` as a matrix on a uniform grid.

    ``log_p`` holds ``log p`` (up to a constant) at the grid points, ``dx`` is the spacing.
    The equation ``dq/dt = d/dx (p d/dx (q / p))`` is discretised in conservation form with
    face values ``p_{i+1/2} = sqrt(p_i p_{i+1})`` and no flux through the ends:

    ``dq_i/dt = [p_{i+1/2} (r_{i+1} - r_i) - p_{i-1/2} (r_i - r_{i-1})] / dx^2``, ``r = q / p``.

    The returned ``L`` (``dq/dt = L q``, ``q`` the density values) conserves mass
    (columns sum to zero), has ``p`` as its null vector and is self-adjoint in
    ``L^2(1/p)``. With ``symmetric=True`` returns ``P^{-1/2} L P^{1/2}`` instead: a
    symmetric matrix with the same (real, non-positive) eigenvalues, for ``eigh``. Only
    ratios ``p_{i+1} / p_i`` enter, so deep wells do not underflow.
    """
    _checks.tensor(log_p, "log_p", ndim=1)
    dx = _positive_float(dx, "dx")
    n = log_p.numel()
    if n < 3:
        raise ValueError(f"log_p must have at least 3 grid points, got {n}")
    if not bool(torch.isfinite(log_p).all()):
        raise ValueError("log_p must be finite at every grid point")
    half_diff = 0.5 * (log_p[1:] - log_p[:-1])  # log sqrt(p_{i+1} / p_i)
    zero = torch.zeros(1, dtype=log_p.dtype, device=log_p.device)
    # sqrt(p_{i+1}/p_i) from the right face and sqrt(p_{i-1}/p_i) from the left face.
    right = torch.cat([torch.exp(half_diff), zero])
    left = torch.cat([zero, torch.exp(-half_diff)])
    inv_dx2 = 1.0 / dx**2
    if symmetric:
        off = torch.full((n - 1,), inv_dx2, dtype=log_p.dtype, device=log_p.device)
        return torch.diag(-(right + left) * inv_dx2) + torch.diag(off, 1) + torch.diag(off, -1)
    # L = P^{1/2} S P^{-1/2}: L[i, j] = S[i, j] sqrt(p_i / p_j).
    upper = torch.exp(-half_diff) * inv_dx2  # L[i, i+1] = sqrt(p_i / p_{i+1}) / dx^2
    lower = torch.exp(half_diff) * inv_dx2  # L[i+1, i] = sqrt(p_{i+1} / p_i) / dx^2
    return torch.diag(-(right + left) * inv_dx2) + torch.diag(upper, 1) + torch.diag(lower, -1)


def euler_maruyama_kernel(grid: torch.Tensor, score_values: torch.Tensor, h: float) -> torch.Tensor:
    """Transition matrix of the Euler-Maruyama Langevin chain on a uniform grid.

    ``K[i, j] = dx * N(grid[i]; grid[j] + h * score_values[j], 2 h)``: the probability mass
    that one step of ``x <- x + h s(x) + sqrt(2 h) xi`` moves from node ``j`` to node ``i``.
    If ``q`` holds the masses ``p(x_j) dx`` of the chain's law at the nodes, ``K @ q`` holds
    those after one step (quadrature of the Chapman-Kolmogorov integral, spectrally accurate
    when ``sqrt(2 h)`` spans several grid spacings). Columns sum to 1 except for the mass a
    step carries off the grid, so keep the grid wide enough for the law to be negligible
    at its ends.
    """
    dx = _uniform_grid(grid)
    _checks.tensor(score_values, "score_values", ndim=1)
    if score_values.shape != grid.shape:
        raise ValueError(
            f"score_values must have the shape of grid {tuple(grid.shape)}, got {tuple(score_values.shape)}"
        )
    h = _positive_float(h, "h")
    if math.sqrt(2 * h) < 2 * dx:
        raise ValueError(
            f"the step's noise sqrt(2 h) = {math.sqrt(2 * h):.3g} must span at least 2 grid spacings "
            f"(dx = {dx:.3g}) for the quadrature to be accurate"
        )
    mean_next = grid + h * score_values
    z2 = (grid.unsqueeze(1) - mean_next.unsqueeze(0)) ** 2 / (4.0 * h)
    return torch.exp(-z2) * (dx / math.sqrt(4.0 * math.pi * h))
