"""Optimizer utilities shared by chapters."""

from __future__ import annotations

from collections.abc import Iterable

import torch


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
