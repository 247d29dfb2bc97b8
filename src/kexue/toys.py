"""Toy data sets and models with known answers."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch

from . import _checks


def gaussian_mixture_classification(
    n: int,
    d: int,
    k: int,
    *,
    generator: torch.Generator | None = None,
    noise: float = 1.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points in ``R^d`` from ``k`` classes: class means ``N(0, I)``, points = mean + ``noise`` * ``N(0, I)``.

    Labels are uniform over the classes. Returns ``(X, y)`` with ``X`` of shape ``(n, d)``
    and integer labels ``y`` of shape ``(n,)``. Pass a ``generator`` for reproducibility.
    """
    _checks.positive_int(n, "n")
    _checks.positive_int(d, "d")
    _checks.positive_int(k, "k")
    if k < 2:
        raise ValueError(f"k must be at least 2 classes, got {k}")
    if not isinstance(noise, (int, float)) or noise <= 0:
        raise ValueError(f"noise must be a positive number, got {noise!r}")
    if device is None:
        device = generator.device if generator is not None else "cpu"
    means = torch.randn(k, d, generator=generator, device=device, dtype=dtype)
    y = torch.randint(0, k, (n,), generator=generator, device=device)
    X = means[y] + noise * torch.randn(n, d, generator=generator, device=device, dtype=dtype)
    return X, y


_ACTIVATIONS = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "gelu": torch.nn.GELU, "silu": torch.nn.SiLU}


def mlp(widths: Sequence[int], act: str = "relu", *, bias: bool = True) -> torch.nn.Sequential:
    """A plain MLP ``widths[0] -> ... -> widths[-1]`` with ``act`` between layers and PyTorch's default init."""
    widths = list(widths)
    if len(widths) < 2:
        raise ValueError(f"widths must list at least an input and an output size, got {widths}")
    for i, w in enumerate(widths):
        _checks.positive_int(w, f"widths[{i}]")
    if act not in _ACTIVATIONS:
        raise ValueError(f"act must be one of {sorted(_ACTIVATIONS)}, got {act!r}")
    layers: list[torch.nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        layers.append(torch.nn.Linear(a, b, bias=bias))
        if i < len(widths) - 2:
            layers.append(_ACTIVATIONS[act]())
    return torch.nn.Sequential(*layers)
