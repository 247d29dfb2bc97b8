"""LoRA seen from the gradient: projected gradients, costs of the two evaluation orders, baselines.

A LoRA layer keeps a frozen weight ``W0`` (``n x m``) and trains ``A`` (``n x r``) and
``B`` (``r x m``), so that the layer computes ``Y = X (W0 + A B)`` for inputs ``X``
(``b x n``). With ``G = dL/dW`` the gradient of the merged weight, the factors' gradients
are the projections ``G B^T`` and ``A^T G`` (:func:`lora_grads`), which is what lets an
optimizer that only sees ``G`` run LoRA (:func:`lora_sgd_step`).

- :func:`lora_grads`, :func:`lora_sgd_step`: the gradient-side view of LoRA.
- :func:`count_flops`: forward (and backward) FLOPs of a computation, counted by
  ``torch.utils.flop_counter.FlopCounterMode``.
- :func:`materialized_shapes`: the shapes of the tensors a computation creates (views
  excluded), to see which evaluation order builds an ``n x m`` buffer.
- :func:`reduced_rank_regression`: the best rank-``r`` least-squares fit, the floor of a
  fixed-rank LoRA on a linear model.
- :func:`additive_projection`, :func:`tiled_identity`: the additive ("``u_i + v_j``")
  variant of the post: its best fit, and the block matrices of its rank-``r`` version.

All functions take torch tensors on CPU or CUDA (or the ``meta`` device where noted) and
keep their dtype and device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from . import _checks

__all__ = [
    "additive_projection",
    "count_flops",
    "lora_grads",
    "lora_sgd_step",
    "materialized_shapes",
    "reduced_rank_regression",
    "tiled_identity",
]


# ----------------------------------------------------------------------------- checks


def _matrix(M: Any, name: str) -> torch.Tensor:
    M = _checks.tensor(M, name, ndim=2)
    if M.is_complex():
        raise TypeError(f"{name} must be real, got {M.dtype}")
    if M.shape[0] == 0 or M.shape[1] == 0:
        raise ValueError(f"{name} must be non-empty, got shape {tuple(M.shape)}")
    return M


def _same_place(tensors: dict[str, torch.Tensor]) -> None:
    names = list(tensors)
    first = tensors[names[0]]
    for name in names[1:]:
        t = tensors[name]
        if t.device != first.device:
            raise ValueError(f"{name} is on {t.device} but {names[0]} is on {first.device}")
        if t.dtype != first.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but {names[0]} has dtype {first.dtype}")


def _factors(G: Any, A: Any, B: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    G, A, B = _matrix(G, "G"), _matrix(A, "A"), _matrix(B, "B")
    n, m = G.shape
    if A.shape[0] != n:
        raise ValueError(f"A must have {n} rows (as many as G), got shape {tuple(A.shape)}")
    if B.shape[1] != m:
        raise ValueError(f"B must have {m} columns (as many as G), got shape {tuple(B.shape)}")
    if A.shape[1] != B.shape[0]:
        raise ValueError(f"A has {A.shape[1]} columns but B has {B.shape[0]} rows: they must share the rank r")
    _same_place({"G": G, "A": A, "B": B})
    return G, A, B


def _run(fn: Any, args: tuple[Any, ...], loss: Any, backward: bool) -> None:
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    if loss is not None and not callable(loss):
        raise TypeError(f"loss must be callable or None, got {type(loss).__name__}")
    if not isinstance(backward, bool):
        raise TypeError(f"backward must be a bool, got {type(backward).__name__}")
    out = fn(*args)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"fn must return a tensor, got {type(out).__name__}")
    value = loss(out) if loss is not None else out.sum()
    if not isinstance(value, torch.Tensor) or value.ndim != 0:
        raise ValueError("loss must map fn's output to a scalar tensor")
    if backward:
        if not value.requires_grad:
            raise ValueError("backward=True but no argument of fn requires grad")
        value.backward()


# ------------------------------------------------------------------- gradient view


def lora_grads(G: torch.Tensor, A: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The gradients of LoRA's factors from the gradient ``G`` of the merged weight.

    For ``W = W0 + A B`` and any loss, ``dL/dA = G B^T`` and ``dL/dB = A^T G`` with
    ``G = dL/dW`` (``n x m``), ``A`` (``n x r``), ``B`` (``r x m``). Returns
    ``(G @ B.T, A.T @ G)``.
    """
    G, A, B = _factors(G, A, B)
    return G @ B.T, A.T @ G


def lora_sgd_step(
    G: torch.Tensor, A: torch.Tensor, B: torch.Tensor, lr: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One SGD step of LoRA done by an optimizer that only receives ``G = dL/dW``.

    Returns ``(A_new, B_new, delta_W)`` with ``A_new = A - lr G B^T``,
    ``B_new = B - lr A^T G`` (both from the *old* factors) and
    ``delta_W = A_new B_new - A B``, the change of the merged weight: adding ``delta_W``
    to ``W`` reproduces training ``A`` and ``B`` by backpropagation.
    """
    G, A, B = _factors(G, A, B)
    if not isinstance(lr, (int, float)) or isinstance(lr, bool):
        raise TypeError(f"lr must be a number, got {type(lr).__name__}")
    if not lr > 0 or lr == float("inf"):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    grad_A, grad_B = lora_grads(G, A, B)
    A_new, B_new = A - lr * grad_A, B - lr * grad_B
    return A_new, B_new, A_new @ B_new - A @ B


# ------------------------------------------------------------------------- costs


def count_flops(
    fn: Callable[..., torch.Tensor],
    *args: Any,
    loss: Callable[[torch.Tensor], torch.Tensor] | None = None,
    backward: bool = True,
) -> int:
    """FLOPs of ``fn(*args)`` and (by default) of the backward pass of ``loss(fn(*args))``.

    Counted by ``torch.utils.flop_counter.FlopCounterMode``, which counts matrix products
    (``mm``, ``addmm``, ``bmm``, convolutions, attention) at 2 FLOPs per multiply-add and
    ignores elementwise work. ``loss`` defaults to ``.sum()``. Gradients are computed
    for the arguments that require grad (and accumulate in their ``.grad``). Works on any
    device, including ``meta`` tensors, since the count depends on shapes only.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        _run(fn, args, loss, backward)
    return int(counter.get_total_flops())


def materialized_shapes(
    fn: Callable[..., torch.Tensor],
    *args: Any,
    loss: Callable[[torch.Tensor], torch.Tensor] | None = None,
    backward: bool = True,
) -> list[tuple[str, tuple[int, ...]]]:
    """The (operator, shape) of every tensor that ``fn(*args)`` and its backward create.

    Recorded with a ``TorchDispatchMode`` at the ATen level; outputs of view operators
    (transpose, expand, detach, ...) share storage and are left out, so the list is the
    buffers the computation allocates, in order. ``loss`` and ``backward`` as in
    :func:`count_flops`. Works on ``meta`` tensors (nothing is computed).
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    created: list[tuple[str, tuple[int, ...]]] = []

    class _Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if not getattr(func, "is_view", False):
                outs = out if isinstance(out, (tuple, list)) else (out,)
                for o in outs:
                    if isinstance(o, torch.Tensor):
                        created.append((str(func.overloadpacket.__name__), tuple(o.shape)))
            return out

    with _Recorder():
        _run(fn, args, loss, backward)
    return created


# ------------------------------------------------------------------------ baselines


def reduced_rank_regression(X: torch.Tensor, Y: torch.Tensor, rank: int) -> torch.Tensor:
    """The ``n x m`` matrix of rank at most ``rank`` that minimises ``||X W - Y||_F``.

    Classical reduced-rank regression: with the least-squares solution
    ``W_LS = pinv(X) Y`` and ``V_r`` the top ``rank`` right singular vectors of the fitted
    values ``X W_LS``, the optimum is ``W_LS V_r V_r^T`` (Eckart-Young applied to the
    fitted values). ``X`` is ``N x n``, ``Y`` is ``N x m``.
    """
    X, Y = _matrix(X, "X"), _matrix(Y, "Y")
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X and Y must have the same number of rows, got {X.shape[0]} and {Y.shape[0]}")
    _same_place({"X": X, "Y": Y})
    _checks.positive_int(rank, "rank")
    if rank > min(X.shape[1], Y.shape[1]):
        raise ValueError(f"rank must be at most min(n, m) = {min(X.shape[1], Y.shape[1])}, got {rank}")
    W_ls = torch.linalg.pinv(X) @ Y
    _, _, Vh = torch.linalg.svd(X @ W_ls, full_matrices=False)
    V = Vh[:rank].T
    return (W_ls @ V) @ V.T


def additive_projection(D: torch.Tensor) -> torch.Tensor:
    """The best Frobenius fit of ``D`` (``n x m``) by ``a 1^T + 1 b`` (the additive variant).

    It is the two-way-ANOVA projection: row means plus column means minus the grand mean.
    The set of such matrices is a linear subspace of dimension ``n + m - 1``.
    """
    D = _matrix(D, "D")
    row = D.mean(dim=1, keepdim=True)
    col = D.mean(dim=0, keepdim=True)
    return row + col - D.mean()


def tiled_identity(r: int, size: int, *, dtype: torch.dtype | None = None, device: Any = None) -> torch.Tensor:
    """The ``r x size`` block row ``[I_r I_r ... I_r]`` (needs ``r`` to divide ``size``).

    Entry ``(i, j)`` is 1 when ``j mod r == i`` and 0 otherwise. In the post's rank-``r``
    additive variant ``Delta W = A E + F B`` with ``E = tiled_identity(r, m)`` and
    ``F = tiled_identity(r, n).T``.
    """
    _checks.positive_int(r, "r")
    _checks.positive_int(size, "size")
    if size % r:
        raise ValueError(f"r must divide size, got r = {r} and size = {size}")
    eye = torch.eye(r, dtype=dtype or torch.get_default_dtype(), device=device)
    return eye.repeat(1, size // r)
