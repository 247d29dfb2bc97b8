"""Small statistics helpers: log-log slopes, exponential moving averages, standard errors."""

from __future__ import annotations

import torch

from . import _checks


def loglog_slope(x: torch.Tensor, y: torch.Tensor) -> float:
    """Least-squares slope of ``log y`` against ``log x`` (both must be positive)."""
    x = _checks.tensor(torch.as_tensor(x, dtype=torch.float64) if not isinstance(x, torch.Tensor) else x, "x", ndim=1)
    y = _checks.tensor(torch.as_tensor(y, dtype=torch.float64) if not isinstance(y, torch.Tensor) else y, "y", ndim=1)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.numel() < 2:
        raise ValueError("need at least two points")
    if bool((x <= 0).any()) or bool((y <= 0).any()):
        raise ValueError("x and y must be positive for a log-log fit")
    lx, ly = x.double().log(), y.double().log()
    lx_c = lx - lx.mean()
    denom = (lx_c * lx_c).sum()
    if float(denom) == 0.0:
        raise ValueError("x must not be constant")
    return float((lx_c * (ly - ly.mean())).sum() / denom)


def ema(xs: torch.Tensor, beta: float, *, bias_correct: bool = True) -> torch.Tensor:
    """Exponential moving average along dim 0: ``m_t = beta m_{t-1} + (1 - beta) x_t``, ``m_0 = 0``.

    With ``bias_correct`` the result is divided by ``1 - beta^t`` as in Adam.
    """
    _checks.tensor(xs, "xs")
    if xs.ndim < 1 or xs.shape[0] == 0:
        raise ValueError("xs must have a non-empty leading (time) dimension")
    _checks.probability(beta, "beta")
    out = torch.empty_like(xs)
    m = torch.zeros_like(xs[0])
    for t in range(xs.shape[0]):
        m = beta * m + (1 - beta) * xs[t]
        out[t] = m / (1 - beta ** (t + 1)) if bias_correct else m
    return out


def mean_and_se(samples: torch.Tensor, dim: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample mean and its standard error ``std / sqrt(n)`` along ``dim``."""
    _checks.tensor(samples, "samples")
    n = samples.shape[dim]
    if n < 2:
        raise ValueError(f"need at least 2 samples along dim {dim}, got {n}")
    return samples.mean(dim), samples.std(dim) / n**0.5
