"""The geometry of Mixture-of-Experts: an FFN as a sum of experts, and top-k by norm.

A feed-forward layer ``y = f(x W_A) W_B`` (row vectors, ``W_A`` of shape ``(d, D)``,
``W_B`` of shape ``(D, d_out)``, ``f`` elementwise) splits exactly into ``n`` blocks of
``c = D / n`` hidden units, ``y = sum_i v_i`` with ``v_i = f(x W_A[:, i c:(i+1) c]) W_B[i c:(i+1) c, :]``.
This module holds the pieces of the chapter "MoE tour 1: the geometric meaning":

- :func:`expert_outputs`: the per-expert terms ``v_i`` of a block-split FFN.
- :func:`topk_mask`: a 0/1 mask of the ``k`` largest scores per row.
- :func:`subset_residual`: ``|sum_i m_i v_i - sum_i v_i| / |sum_i v_i|`` per token.
- :func:`best_subset_bruteforce`: the exact best ``k``-subset, by enumeration over the Gram matrix.
- :class:`GeometricMoE`: ``y = sum_{i in top-k(p)} p_i normalize(v_i)`` with a router ``p = h(x W_R)``.

Conventions: tokens are rows (shape ``(N, d)``); expert terms have shape ``(N, n, d_out)``.
All functions work on CPU and CUDA tensors.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from . import _checks

__all__ = [
    "NORMS",
    "ROUTER_ACTIVATIONS",
    "GeometricMoE",
    "best_subset_bruteforce",
    "expert_outputs",
    "subset_residual",
    "topk_mask",
]

#: Router activations ``h`` accepted by :class:`GeometricMoE`.
ROUTER_ACTIVATIONS = ("sigmoid", "softmax", "relu", "softplus")
#: Normalisations of the expert outputs accepted by :class:`GeometricMoE`.
NORMS = ("l2", "rms")


def _check_k(k: object, n: int, name: str = "k") -> int:
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= n:
        raise ValueError(f"{name} must be an int in [1, {n}], got {k!r}")
    return k


def expert_outputs(
    x: torch.Tensor,
    W_A: torch.Tensor,
    W_B: torch.Tensor,
    n: int,
    act: Callable[[torch.Tensor], torch.Tensor] = torch.relu,
) -> torch.Tensor:
    """Per-expert terms ``v_i = act(x W_A_i) W_B_i`` of a block-split FFN, shape ``(N, n, d_out)``.

    ``x`` has shape ``(N, d)``, ``W_A`` shape ``(d, D)`` and ``W_B`` shape ``(D, d_out)`` with
    ``D`` divisible by ``n``. Expert ``i`` owns hidden units ``i c, ..., (i+1) c - 1`` (``c = D/n``),
    the column block of ``W_A`` and the row block of ``W_B`` of the post's slicing, so that
    ``expert_outputs(...).sum(1) == act(x @ W_A) @ W_B`` up to round-off.
    """
    x = _checks.tensor(x, "x", ndim=2)
    W_A = _checks.tensor(W_A, "W_A", ndim=2)
    W_B = _checks.tensor(W_B, "W_B", ndim=2)
    n = _checks.positive_int(n, "n")
    if not callable(act):
        raise TypeError(f"act must be callable, got {type(act).__name__}")
    d, D = W_A.shape
    if x.shape[1] != d:
        raise ValueError(f"x must have {d} columns (the rows of W_A), got shape {tuple(x.shape)}")
    if W_B.shape[0] != D:
        raise ValueError(f"W_B must have {D} rows (the columns of W_A), got shape {tuple(W_B.shape)}")
    if D % n:
        raise ValueError(f"n must divide the hidden width D = {D}, got n = {n}")
    if x.dtype != W_A.dtype or W_B.dtype != W_A.dtype:
        raise TypeError(f"x, W_A and W_B must share a dtype, got {x.dtype}, {W_A.dtype}, {W_B.dtype}")
    c = D // n
    hidden = act(x @ W_A).reshape(x.shape[0], n, c)  # column i*c + j -> (i, j)
    return torch.einsum("tic,icd->tid", hidden, W_B.reshape(n, c, W_B.shape[1]))


def topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """A 0/1 mask (dtype of ``scores``) marking the ``k`` largest entries of each row of ``scores``.

    Ties are broken by :func:`torch.topk` (implementation-defined order): break them
    yourself if they matter.
    """
    scores = _checks.tensor(scores, "scores", ndim=2)
    k = _check_k(k, scores.shape[1])
    idx = scores.topk(k, dim=1).indices
    return torch.zeros_like(scores).scatter_(1, idx, 1.0)


def _check_terms(V: object, name: str = "V") -> torch.Tensor:
    return _checks.tensor(V, name, ndim=3)


def subset_residual(V: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Relative residual ``|sum_i m_i v_i - sum_i v_i| / |sum_i v_i|`` per token, shape ``(N,)``.

    ``V`` holds the expert terms, shape ``(N, n, d)``; ``mask`` has shape ``(N, n)`` (any
    weights; a 0/1 mask selects a subset). A token whose full sum is zero gives ``inf`` or ``nan``.
    """
    V = _check_terms(V)
    mask = _checks.tensor(mask, "mask", ndim=2)
    if mask.shape != V.shape[:2]:
        raise ValueError(f"mask must have shape {tuple(V.shape[:2])} (tokens, experts), got {tuple(mask.shape)}")
    total = V.sum(1)
    dropped = ((1 - mask.to(V.dtype)).unsqueeze(-1) * V).sum(1)
    return dropped.norm(dim=-1) / total.norm(dim=-1)


def best_subset_bruteforce(V: torch.Tensor, k: int, max_subsets: int = 20000) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k``-subset minimising ``|sum_{i in S} v_i - sum_i v_i|`` for each token, by enumeration.

    Uses the Gram matrix ``G = V V^T`` of each token: for a kept-mask ``m`` the squared
    residual is ``(1 - m)^T G (1 - m)``. Returns ``(mask, residual)``: the optimal 0/1 mask,
    shape ``(N, n)``, and its relative residual (as :func:`subset_residual`), shape ``(N,)``.
    Raises ``ValueError`` when ``C(n, k)`` exceeds ``max_subsets`` (the cost grows as ``C(n, k)``).
    """
    V = _check_terms(V)
    N, n, _ = V.shape
    k = _check_k(k, n)
    max_subsets = _checks.positive_int(max_subsets, "max_subsets")
    count = math.comb(n, k)
    if count > max_subsets:
        raise ValueError(f"C(n, k) = C({n}, {k}) = {count} subsets exceeds max_subsets = {max_subsets}")
    kept = torch.zeros(count, n, dtype=V.dtype, device=V.device)
    for row, subset in enumerate(itertools.combinations(range(n), k)):
        kept[row, list(subset)] = 1.0
    dropped = 1 - kept
    gram = V @ V.transpose(1, 2)  # (N, n, n)
    best_sq = torch.empty(N, dtype=V.dtype, device=V.device)
    best_idx = torch.empty(N, dtype=torch.long, device=V.device)
    chunk = max(1, 2**22 // (count * n))
    for start in range(0, N, chunk):
        g = gram[start : start + chunk]
        sq = ((dropped @ g) * dropped).sum(-1)  # (chunk, count): (1-m)^T G (1-m)
        best_sq[start : start + chunk], best_idx[start : start + chunk] = sq.min(dim=1)
    total_sq = gram.sum(dim=(1, 2))
    return kept[best_idx], (best_sq.clamp_min(0) / total_sq).sqrt()


class GeometricMoE(torch.nn.Module):
    """``y = sum_{i in top-k(p)} p_i normalize(v_i)``: the MoE of the post, magnitude times direction.

    Expert ``i`` is the block ``v_i(x) = act(x W_A_i) W_B_i`` of an FFN of width ``D = n c``
    (``W_A`` of shape ``(d, D)``, ``W_B`` of shape ``(D, d)``, the post's slicing); the router
    gives ``p = h(x W_R)`` with ``W_R`` of shape ``(d, n)`` and ``h`` one of
    :data:`ROUTER_ACTIVATIONS`. Only the ``k`` selected experts of each token are evaluated.
    ``norm='l2'`` divides ``v_i`` by ``max(|v_i|, eps)``, so ``|p_i e_i| = p_i``; ``norm='rms'``
    is RMSNorm without gain, ``v_i / sqrt(mean(v_i^2) + eps)``, i.e. ``sqrt(d)`` times the
    unit vector (a constant the router can absorb).

    After a forward pass, ``last_scores`` (the router outputs ``p``, shape ``(N, n)``) and
    ``last_selection`` (the selected expert indices, shape ``(N, k)``) hold the routing.
    """

    def __init__(
        self,
        d: int,
        n: int,
        c: int,
        k: int,
        router_act: str = "sigmoid",
        norm: str = "l2",
        eps: float = 1e-6,
        act: Callable[[torch.Tensor], torch.Tensor] = torch.relu,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.d = _checks.positive_int(d, "d")
        self.n = _checks.positive_int(n, "n")
        self.c = _checks.positive_int(c, "c")
        self.k = _check_k(k, n)
        if router_act not in ROUTER_ACTIVATIONS:
            raise ValueError(f"router_act must be one of {ROUTER_ACTIVATIONS}, got {router_act!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps > 0:
            raise ValueError(f"eps must be a positive number, got {eps!r}")
        if not callable(act):
            raise TypeError(f"act must be callable, got {type(act).__name__}")
        self.router_act, self.norm, self.eps, self.act = router_act, norm, float(eps), act
        D = n * c
        opts = {"dtype": dtype or torch.get_default_dtype(), "device": device}

        def gaussian(rows: int, cols: int) -> torch.nn.Parameter:
            w = torch.randn(rows, cols, generator=generator, dtype=opts["dtype"], device="cpu")
            return torch.nn.Parameter((w / math.sqrt(rows)).to(device=device))

        # N(0, 1/fan-in) initialisation; the generator lives on the CPU so any device works.
        if generator is not None and generator.device.type != "cpu":
            raise ValueError("generator must be a CPU torch.Generator (weights are drawn on the CPU)")
        self.W_A = gaussian(d, D)
        self.W_B = gaussian(D, d)
        self.W_R = gaussian(d, n)

    # ------------------------------------------------------------------ pieces
    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Router outputs ``p = h(x W_R)``, shape ``(N, n)``, all non-negative."""
        logits = self._input(x) @ self.W_R
        if self.router_act == "sigmoid":
            return torch.sigmoid(logits)
        if self.router_act == "softmax":
            return torch.softmax(logits, dim=-1)
        if self.router_act == "relu":
            return torch.relu(logits)
        return F.softplus(logits)

    def normalize(self, v: torch.Tensor) -> torch.Tensor:
        """The direction ``e`` of expert outputs ``v`` (last dimension), as set by ``norm``."""
        if self.norm == "l2":
            return F.normalize(v, dim=-1, eps=self.eps)
        return v * torch.rsqrt(v.square().mean(-1, keepdim=True) + self.eps)

    def expert_terms(self, x: torch.Tensor) -> torch.Tensor:
        """All raw expert outputs ``v_i(x)``, shape ``(N, n, d)`` (the dense cost; for analysis)."""
        return expert_outputs(self._input(x), self.W_A, self.W_B, self.n, self.act)

    def dense(self, x: torch.Tensor) -> torch.Tensor:
        """The dense model ``sum_i p_i e_i`` over all ``n`` experts."""
        return (self.scores(x).unsqueeze(-1) * self.normalize(self.expert_terms(x))).sum(1)

    def _input(self, x: object) -> torch.Tensor:
        x = _checks.tensor(x, "x", ndim=2)
        if x.shape[1] != self.d:
            raise ValueError(f"x must have shape (N, {self.d}), got {tuple(x.shape)}")
        if x.dtype != self.W_A.dtype or x.device != self.W_A.device:
            raise TypeError(
                f"x must have the module's dtype and device ({self.W_A.dtype}, {self.W_A.device}), "
                f"got ({x.dtype}, {x.device})"
            )
        return x

    # ----------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``sum_{i in top-k(p)} p_i e_i`` per token, shape ``(N, d)``; evaluates selected experts only."""
        x = self._input(x)
        p = self.scores(x)
        selection = p.topk(self.k, dim=1).indices  # (N, k)
        self.last_scores, self.last_selection = p.detach(), selection
        out = torch.zeros(x.shape[0], self.d, dtype=x.dtype, device=x.device)
        W_A = self.W_A.view(self.d, self.n, self.c)
        W_B = self.W_B.view(self.n, self.c, self.d)
        for i in range(self.n):
            tokens = (selection == i).any(dim=1).nonzero(as_tuple=True)[0]
            if tokens.numel() == 0:
                continue
            v = self.act(x[tokens] @ W_A[:, i, :]) @ W_B[i]
            weight = p[tokens, i].unsqueeze(-1)
            out = out.index_add(0, tokens, weight * self.normalize(v))
        return out

    def extra_repr(self) -> str:
        return f"d={self.d}, n={self.n}, c={self.c}, k={self.k}, router_act={self.router_act!r}, norm={self.norm!r}"
