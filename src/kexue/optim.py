"""Optimizer utilities shared by chapters."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch

from . import _checks


def global_grad_norm(params: Iterable[torch.Tensor] | torch.nn.Module, norm_type: float = 2.0) -> torch.Tensor:
    """The norm of all parameters' gradients stacked into one vector, without clipping.

    This is the quantity ``torch.nn.utils.clip_grad_norm_`` compares with its threshold.
    Parameters whose ``.grad`` is ``None`` are skipped; if none has a gradient the result is 0.
    """
    if isinstance(params, torch.nn.Module):
        params = params.parameters()
    if isinstance(params, torch.Tensor):
        params = [params]
    if not isinstance(norm_type, (int, float)) or isinstance(norm_type, bool) or norm_type <= 0:
        raise ValueError(f"norm_type must be a positive number (or inf), got {norm_type!r}")
    grads = []
    for i, p in enumerate(params):
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"params[{i}] must be a torch.Tensor, got {type(p).__name__}")
        if p.grad is not None:
            grads.append(p.grad.detach().reshape(-1))
    if not grads:
        return torch.tensor(0.0)
    return torch.linalg.vector_norm(torch.cat(grads), ord=norm_type)


def _flat_vectors(value: torch.Tensor | Sequence[torch.Tensor], name: str) -> list[torch.Tensor]:
    """``value`` as a list of tensors (one tensor, or one per parameter), checked to be floating."""
    tensors = [value] if isinstance(value, torch.Tensor) else value
    if not isinstance(tensors, (list, tuple)):
        raise TypeError(f"{name} must be a tensor or a list/tuple of tensors, got {type(value).__name__}")
    if len(tensors) == 0:
        raise ValueError(f"{name} must contain at least one tensor")
    for i, t in enumerate(tensors):
        _checks.tensor(t, f"{name}[{i}]")
    return list(tensors)


def predicted_decrease_lr(
    lr: float,
    update: torch.Tensor | Sequence[torch.Tensor],
    grad: torch.Tensor | Sequence[torch.Tensor],
    T: float,
) -> float:
    """The learning rate clipped by the predicted loss decrease (Su, kexue.fm/archives/10657).

    For the step ``theta <- theta - lr * update`` the first-order loss change is
    ``-lr * s`` with ``s = update . grad`` (summed over all parameters). The rule caps the
    predicted decrease at ``lr * T``::

        s <= T  ->  lr            (this includes s <= 0: no decrease is predicted, nothing to cap)
        s >  T  ->  lr * T / s    (so that lr_t * s = lr * T)

    ``update`` and ``grad`` are one tensor or one tensor per parameter, of matching shapes
    (CPU or CUDA). ``s`` is accumulated in float64. Returns a Python float.
    """
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    if not isinstance(T, (int, float)) or isinstance(T, bool) or not math.isfinite(T) or T <= 0:
        raise ValueError(f"T must be a positive finite number (the cap on u.g), got {T!r}")
    updates = _flat_vectors(update, "update")
    grads = _flat_vectors(grad, "grad")
    if len(updates) != len(grads):
        raise ValueError(f"update has {len(updates)} tensors but grad has {len(grads)}")
    s = 0.0
    for i, (u, g) in enumerate(zip(updates, grads, strict=True)):
        if u.shape != g.shape:
            raise ValueError(f"update[{i}] has shape {tuple(u.shape)} but grad[{i}] has shape {tuple(g.shape)}")
        s += float((u.detach().to(torch.float64) * g.detach().to(torch.float64)).sum())
    if not math.isfinite(s):
        raise ValueError(f"update . grad is not finite ({s}); check update and grad for inf/NaN")
    if s <= T:  # includes s <= 0, where the post's formula leaves the learning rate unchanged
        return float(lr)
    return float(lr) * T / s
