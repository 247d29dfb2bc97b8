"""The softmax of attention: its Jacobian, collision probability and the scale that maximises it.

Helpers for the chapter on the attention scale (kexue.fm/archives/9812):

- :func:`softmax_jacobian`: ``d softmax(alpha s) / d s = alpha (diag p - p p^T)``.
- :func:`collision_probability`: ``sum_i p_i^2`` (or ``1 - sum_i p_i^2``) without cancellation.
- :func:`gauss_alpha_star`: the root of ``(1 + 2 a^2) exp(a^2) = n``, the optimum of the
  approximate objective ``a (1 - exp(a^2) / n)`` for Gaussian scores.
- :func:`log_mgf_cosine`: ``log E[exp(alpha s)]`` for the cosine of two random directions in ``R^d``.
- :func:`sample_cosine_scores`: such cosines, as ``2 B - 1`` with ``B ~ Beta((d-1)/2, (d-1)/2)``.
- :func:`grid_argmax`: the maximiser of a (batched) function on a grid.

Everything works on CPU and CUDA tensors; randomness comes only from the generator passed in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from . import _checks

__all__ = [
    "collision_probability",
    "gauss_alpha_star",
    "grid_argmax",
    "log_mgf_cosine",
    "sample_cosine_scores",
    "softmax_jacobian",
]


def _alpha_tensor(alpha: float | torch.Tensor, like: torch.Tensor, name: str = "alpha") -> torch.Tensor:
    if isinstance(alpha, torch.Tensor):
        _checks.tensor(alpha, name)
        return alpha.to(device=like.device, dtype=like.dtype)
    if isinstance(alpha, (int, float)) and not isinstance(alpha, bool):
        if not math.isfinite(alpha):
            raise ValueError(f"{name} must be finite, got {alpha!r}")
        return torch.tensor(float(alpha), dtype=like.dtype, device=like.device)
    raise TypeError(f"{name} must be a float or a tensor, got {type(alpha).__name__}")


def softmax_jacobian(s: torch.Tensor, alpha: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Jacobian of ``p = softmax(alpha * s)`` with respect to ``s``: ``alpha (diag(p) - p p^T)``.

    ``s`` has shape ``(..., n)``; ``alpha`` is a number or a tensor broadcastable to
    ``s.shape[:-1]``. Returns a tensor of shape ``(..., n, n)`` whose entry ``[..., i, j]``
    is ``d p_i / d s_j``.
    """
    _checks.tensor(s, "s")
    if s.ndim < 1 or s.shape[-1] == 0:
        raise ValueError(f"s must have a non-empty last dimension, got shape {tuple(s.shape)}")
    a = _alpha_tensor(alpha, s)
    p = torch.softmax(a.unsqueeze(-1) * s, dim=-1)
    jac = torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)
    return a.unsqueeze(-1).unsqueeze(-1) * jac


def collision_probability(
    scores: torch.Tensor, alpha: float | torch.Tensor = 1.0, *, complement: bool = False
) -> torch.Tensor:
    """``sum_i p_i^2`` for ``p = softmax(alpha * scores)`` along the last dimension.

    With ``complement=True`` returns ``1 - sum_i p_i^2`` computed without cancellation:
    writing ``u_j = exp(alpha (s_j - max s))`` for the entries other than the largest one,
    ``r = sum u_j`` and ``q = sum u_j^2``, one has ``sum p^2 = (1 + q) / (1 + r)^2`` and
    ``1 - sum p^2 = (2 r + r^2 - q) / (1 + r)^2`` with ``r^2 >= q``, so both stay accurate
    when the softmax is nearly one-hot (large ``alpha``). ``scores`` must be finite;
    ``alpha`` must be non-negative, and ``alpha.unsqueeze(-1)`` broadcastable against
    ``scores`` (e.g. shape ``(G, 1)`` against ``(m, n)`` gives a ``(G, m)`` result).
    """
    _checks.tensor(scores, "scores")
    if scores.ndim < 1 or scores.shape[-1] == 0:
        raise ValueError(f"scores must have a non-empty last dimension, got shape {tuple(scores.shape)}")
    a = _alpha_tensor(alpha, scores)
    if bool((a < 0).any()):
        raise ValueError("alpha must be non-negative")
    if not bool(torch.isfinite(scores).all()):
        raise ValueError("scores must be finite")
    top, idx = scores.max(dim=-1, keepdim=True)
    # weights of the entries other than (one copy of) the largest, relative to it
    u = a.unsqueeze(-1) * (scores - top)
    index = idx.expand(*u.shape[:-1], 1)
    if torch.is_grad_enabled() and u.requires_grad:
        u = torch.exp(u).scatter(-1, index, 0.0)
        r, q = u.sum(-1), (u * u).sum(-1)
    else:  # in place: u is a fresh tensor, and this is the hot loop of Monte-Carlo scans
        u.exp_().scatter_(-1, index, 0.0)
        r = u.sum(-1)
        q = u.square_().sum(-1)
    denom = (1 + r) ** 2
    return (2 * r + r * r - q) / denom if complement else (1 + q) / denom


def gauss_alpha_star(n: float | torch.Tensor, *, iterations: int = 60) -> torch.Tensor:
    """The maximiser ``alpha* > 0`` of ``alpha (1 - exp(alpha^2) / n)``, for ``n >= 1``.

    It solves ``(1 + 2 x) e^x = n`` for ``x = alpha^2`` by Newton's method on the concave,
    increasing function ``h(x) = log(1 + 2x) + x - log n`` started at ``x = 0``; from the
    left of the root the iterates increase monotonically to it. The root equals
    ``W(sqrt(e) n / 2) - 1/2`` with ``W`` the principal Lambert W function. Returns a
    float64 tensor (on ``n``'s device when ``n`` is a tensor).
    """
    _checks.positive_int(iterations, "iterations")
    if isinstance(n, torch.Tensor):
        n_t = n.to(torch.float64)
    elif isinstance(n, (int, float)) and not isinstance(n, bool):
        n_t = torch.tensor(float(n), dtype=torch.float64)
    else:
        raise TypeError(f"n must be a number or a tensor, got {type(n).__name__}")
    if not bool(torch.isfinite(n_t).all()) or bool((n_t < 1).any()):
        raise ValueError("n must be finite and >= 1")
    log_n = torch.log(n_t)
    x = torch.zeros_like(n_t)
    for _ in range(iterations):
        h = torch.log1p(2 * x) + x - log_n
        x = x - h / (2 / (1 + 2 * x) + 1)
    return torch.sqrt(x.clamp_min(0.0))


def log_mgf_cosine(alpha: float | torch.Tensor, d: int, *, nodes: int = 1001) -> torch.Tensor:
    """``log E[exp(alpha s)]`` where ``s`` is the cosine of two independent random directions in ``R^d``.

    The density of ``s`` on ``[-1, 1]`` is proportional to ``(1 - s^2)^((d-3)/2)`` (``d >= 3``).
    The expectation is the trapezoid rule on ``nodes`` equally spaced points, evaluated in
    log space (``logsumexp``) so that large ``alpha * d`` does not overflow, and normalised by
    the same rule. For ``d > 3`` the endpoints carry weight 0 and are dropped (there
    ``log(1 - s^2) = -inf``); the density then vanishes at the endpoints with its first
    ``(d-3)/2`` derivatives, so by Euler-Maclaurin the error falls very fast with ``nodes``
    (about 1e-15 for ``d >= 32``, ``|alpha| <= 160`` with the default 1001 nodes). Small
    ``d`` needs more nodes. ``alpha`` may be a tensor of any shape; returns float64 unless
    ``alpha`` is a tensor of another floating dtype.
    """
    if not isinstance(d, int) or isinstance(d, bool) or d < 3:
        raise ValueError(f"d must be an int >= 3, got {d!r}")
    _checks.positive_int(nodes, "nodes")
    if nodes < 3:
        raise ValueError(f"nodes must be >= 3, got {nodes}")
    if isinstance(alpha, torch.Tensor):
        _checks.tensor(alpha, "alpha")
        a = alpha
    elif isinstance(alpha, (int, float)) and not isinstance(alpha, bool):
        a = torch.tensor(float(alpha), dtype=torch.float64)
    else:
        raise TypeError(f"alpha must be a float or a tensor, got {type(alpha).__name__}")
    s = torch.linspace(-1.0, 1.0, nodes, dtype=a.dtype, device=a.device)
    power = (d - 3) / 2
    if power > 0:
        s = s[1:-1]
        log_w = power * (torch.log1p(-s) + torch.log1p(s))
    else:  # d == 3: uniform density, endpoints get the trapezoid's half weights
        log_w = torch.zeros_like(s)
        log_w[0] = log_w[-1] = math.log(0.5)
    log_norm = torch.logsumexp(log_w, dim=0)
    return torch.logsumexp(a.unsqueeze(-1) * s + log_w, dim=-1) - log_norm


def _standard_gamma(
    count: int, shape: float, generator: torch.Generator | None, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """``count`` draws of Gamma(shape, 1) by Marsaglia and Tsang's method, vectorised.

    Each candidate needs one normal and one uniform from ``generator``; rejected
    candidates (under 5% for shape >= 1) are redrawn. Shape < 1 uses the boost
    ``Gamma(a) = Gamma(a + 1) U^(1/a)``.
    """
    boost = shape < 1
    a = shape + 1 if boost else shape
    dd = a - 1 / 3
    c = 1 / math.sqrt(9 * dd)
    out = torch.empty(count, dtype=dtype, device=device)
    todo = torch.arange(count, device=device)
    while todo.numel() > 0:
        m = todo.numel()
        x = torch.randn(m, generator=generator, dtype=dtype, device=device)
        u = torch.rand(m, generator=generator, dtype=dtype, device=device)
        v = (1 + c * x) ** 3
        positive = v > 0
        log_v = torch.log(torch.where(positive, v, torch.ones_like(v)))
        accept = positive & (torch.log(u) < 0.5 * x * x + dd - dd * v + dd * log_v)
        out[todo[accept]] = dd * v[accept]
        todo = todo[~accept]
    if boost:
        out = out * torch.rand(count, generator=generator, dtype=dtype, device=device) ** (1 / shape)
    return out


def sample_cosine_scores(
    shape: Sequence[int] | torch.Size,
    d: int,
    generator: torch.Generator | None = None,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Cosines of independent pairs of random directions in ``R^d``, ``d >= 2``.

    Samples ``s = 2B - 1`` with ``B ~ Beta((d-1)/2, (d-1)/2)`` (computed as
    ``(X - Y) / (X + Y)`` with ``X, Y`` independent Gamma((d-1)/2)), which has the density
    proportional to ``(1 - s^2)^((d-3)/2)`` of the cosine, mean 0 and variance ``1/d``.
    This costs two Gamma draws per score instead of ``2d`` normals. The device is
    ``generator``'s device unless ``device`` is given (they must then agree).
    """
    if not isinstance(d, int) or isinstance(d, bool) or d < 2:
        raise ValueError(f"d must be an int >= 2, got {d!r}")
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, (tuple, list, torch.Size)) or not all(
        isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in shape
    ):
        raise ValueError(f"shape must be a sequence of non-negative ints, got {shape!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    if device is None:
        dev = generator.device if generator is not None else torch.device("cpu")
    else:
        dev = torch.device(device)
        if generator is not None and generator.device.type != dev.type:
            raise ValueError(f"device {dev} does not match the generator's device {generator.device}")
    count = math.prod(shape)
    half = (d - 1) / 2
    x = _standard_gamma(count, half, generator, dtype, dev)
    y = _standard_gamma(count, half, generator, dtype, dev)
    return ((x - y) / (x + y)).reshape(tuple(shape))


def grid_argmax(f: Callable[[torch.Tensor], torch.Tensor], grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Maximise ``f`` over the points of a 1-D ``grid``: returns ``(argmax, max)``.

    ``f(grid)`` must return a tensor of shape ``(G, *batch)`` (``G = len(grid)``): one
    value per grid point, for each of a batch of independent problems. The results have
    shape ``batch``; ties go to the first (smallest-index) grid point. NaN values raise.
    """
    if not callable(f):
        raise TypeError("f must be a callable taking the grid and returning values")
    _checks.tensor(grid, "grid", ndim=1)
    if grid.numel() == 0:
        raise ValueError("grid must not be empty")
    values = f(grid)
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"f must return a tensor, got {type(values).__name__}")
    if values.ndim < 1 or values.shape[0] != grid.shape[0]:
        raise ValueError(f"f(grid) must have leading dimension {grid.shape[0]}, got shape {tuple(values.shape)}")
    if bool(torch.isnan(values).any()):
        raise ValueError("f(grid) contains NaN")
    idx = torch.argmax(values, dim=0)
    best = values.gather(0, idx.unsqueeze(0)).squeeze(0)
    return grid.to(values.device)[idx], best
