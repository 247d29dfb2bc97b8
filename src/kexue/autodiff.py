"""Second-order autodiff: Hessian-vector products, per-sample gradients, Hessians.

All functions work on CPU and CUDA tensors and keep the dtype of their inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from . import _checks


def _param_list(params: Sequence[torch.Tensor] | torch.nn.Module, name: str) -> list[torch.Tensor]:
    if isinstance(params, torch.nn.Module):
        params = [p for p in params.parameters() if p.requires_grad]
    if isinstance(params, torch.Tensor):
        params = [params]
    params = list(params)
    if not params:
        raise ValueError(f"{name} must contain at least one tensor")
    for i, p in enumerate(params):
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"{name}[{i}] must be a torch.Tensor, got {type(p).__name__}")
        if not p.requires_grad:
            raise ValueError(f"{name}[{i}] does not require grad")
    return params


def hvp(
    loss_fn: Callable[[], torch.Tensor],
    params: Sequence[torch.Tensor] | torch.nn.Module,
    vec: Sequence[torch.Tensor],
) -> list[torch.Tensor]:
    """Hessian-vector product ``H v`` of ``loss_fn()`` w.r.t. ``params`` by double backward.

    ``vec`` has one tensor per parameter, of the same shape. Returns one tensor per
    parameter. Together with :func:`flatten` this gives ``v^T H v`` as
    ``sum((hv * v).sum() for hv, v in zip(hvp(...), vec))``.
    """
    if not callable(loss_fn):
        raise TypeError("loss_fn must be a callable returning a scalar loss")
    params = _param_list(params, "params")
    vec = list(vec)
    if len(vec) != len(params):
        raise ValueError(f"vec must have one tensor per parameter ({len(params)}), got {len(vec)}")
    for i, (v, p) in enumerate(zip(vec, params, strict=True)):
        _checks.tensor(v, f"vec[{i}]")
        if v.shape != p.shape:
            raise ValueError(f"vec[{i}] has shape {tuple(v.shape)}, expected {tuple(p.shape)}")
    loss = loss_fn()
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
        raise ValueError("loss_fn must return a scalar tensor")
    grads = torch.autograd.grad(loss, params, create_graph=True)
    dot = sum((g * v).sum() for g, v in zip(grads, vec, strict=True))
    return [h.detach() for h in torch.autograd.grad(dot, params)]


def flatten(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate tensors into one flat vector (e.g. a list of per-parameter gradients)."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("tensors must not be empty")
    for i, t in enumerate(tensors):
        _checks.tensor(t, f"tensors[{i}]", floating=False)
    return torch.cat([t.reshape(-1) for t in tensors])


def flat_hessian(loss_of_flat: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor) -> torch.Tensor:
    """The ``P x P`` Hessian of ``loss_of_flat`` at the flat parameter vector ``theta``.

    Reverse-over-reverse (``jacrev(jacrev)``): for the small ``P`` this is meant for it was
    an order of magnitude faster on CPU than ``torch.func.hessian`` (forward-over-reverse).
    """
    if not callable(loss_of_flat):
        raise TypeError("loss_of_flat must be a callable mapping a flat vector to a scalar")
    _checks.tensor(theta, "theta", ndim=1)
    return torch.func.jacrev(torch.func.jacrev(loss_of_flat))(theta.detach())


def per_sample_grads(
    model: torch.nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    targets: torch.Tensor,
) -> torch.Tensor:
    """Per-sample gradients as an ``N x P`` matrix (``torch.func.vmap`` of ``grad``).

    ``loss_fn(output, target)`` is evaluated on one sample at a time (the sample is given
    a batch dimension of 1), so it must reduce to a scalar. Column order is that of
    ``model.parameters()``.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _checks.tensor(inputs, "inputs", floating=False)
    _checks.tensor(targets, "targets", floating=False)
    if inputs.shape[0] != targets.shape[0]:
        raise ValueError(f"inputs ({inputs.shape[0]}) and targets ({targets.shape[0]}) must have the same length")
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}

    def one(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = torch.func.functional_call(model, p, (x.unsqueeze(0),))
        return loss_fn(out, y.unsqueeze(0))

    grads = torch.func.vmap(torch.func.grad(one), in_dims=(None, 0, 0))(params, inputs, targets)
    return torch.cat([grads[n].reshape(inputs.shape[0], -1) for n in names], dim=1)
