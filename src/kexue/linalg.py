"""Low-rank approximation from actual columns and rows: pivoted QR, ID and CUR.

The chapters on the interpolative decomposition (ID) and the CUR decomposition share
these helpers. Matrices are ``n x m`` (``n`` rows, ``m`` columns, as in the posts) torch
tensors of a floating dtype, on CPU or CUDA; index sets are ``torch.long`` tensors on the
same device.

- :func:`cpqr`: greedy column-pivoted Gram-Schmidt (the pivots of LAPACK's ``geqp3``).
- :func:`select_columns`: column-subset selection by CPQR, Gaussian sketch + CPQR,
  Optim-RID, uniform sampling, norms, leverage scores, DEIM or greedy error reduction.
- :func:`interpolative_decomposition`, :func:`id_coefficients`: ``M ~ C Z`` with
  ``C = M[:, S]``.
- :func:`cur_decomposition`, :func:`cur_optimal_core`, :func:`cur_cross_core`:
  ``M ~ C U R`` with ``C = M[:, S1]``, ``R = M[S2, :]``.
- :func:`leverage_scores`, :func:`deim`: the ingredients of leverage and DEIM selection.
- :func:`svd_tail_error`, :func:`singular_values`, :func:`decaying_matrix`,
  :func:`kahan_matrix`: yardsticks and test matrices.
- :func:`scipy_id`: SciPy's ID (``scipy.linalg.interpolative``) as a reference.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch

from . import _checks

__all__ = [
    "CPQR",
    "CUR",
    "ID",
    "SELECTION_METHODS",
    "cpqr",
    "cur_cross_core",
    "cur_decomposition",
    "cur_optimal_core",
    "decaying_matrix",
    "deim",
    "id_coefficients",
    "interpolative_decomposition",
    "kahan_matrix",
    "leverage_scores",
    "scipy_id",
    "select_columns",
    "singular_values",
    "svd_tail_error",
]

#: Column-selection rules understood by :func:`select_columns`.
SELECTION_METHODS = (
    "cpqr",
    "sketch",
    "optim-rid",
    "uniform",
    "norm",
    "norm-sample",
    "leverage",
    "leverage-sample",
    "deim",
    "greedy",
)
_RANDOM_METHODS = ("sketch", "optim-rid", "uniform", "norm-sample", "leverage-sample")


class CPQR(NamedTuple):
    """Result of :func:`cpqr`: ``M[:, perm[:r]] = Q @ R[:, :r]`` and ``M[:, perm] ~ Q @ R``."""

    perm: torch.Tensor  #: full column permutation; the first ``r`` entries are the pivots
    Q: torch.Tensor  #: ``n x r`` with orthonormal columns
    R: torch.Tensor  #: ``r x m`` upper trapezoidal, columns in pivoted order


class ID(NamedTuple):
    """An interpolative decomposition ``M ~ C @ Z`` with ``C = M[:, columns]``."""

    columns: torch.Tensor  #: the ``r`` skeleton column indices, in selection order
    C: torch.Tensor  #: ``n x r`` skeleton, ``M[:, columns]``
    Z: torch.Tensor  #: ``r x m`` interpolation matrix, columns in the original order

    def approximation(self) -> torch.Tensor:
        """The rank-``r`` approximation ``C @ Z``."""
        return self.C @ self.Z


class CUR(NamedTuple):
    """A CUR decomposition ``M ~ C @ U @ R`` with ``C = M[:, columns]``, ``R = M[rows, :]``."""

    columns: torch.Tensor
    rows: torch.Tensor
    C: torch.Tensor
    U: torch.Tensor
    R: torch.Tensor

    def approximation(self) -> torch.Tensor:
        """The approximation ``C @ U @ R``."""
        return self.C @ self.U @ self.R


# ----------------------------------------------------------------------------- checks


def _matrix(M: Any, name: str = "M") -> torch.Tensor:
    M = _checks.tensor(M, name, ndim=2)
    if M.shape[0] == 0 or M.shape[1] == 0:
        raise ValueError(f"{name} must be non-empty, got shape {tuple(M.shape)}")
    if M.is_complex():
        raise TypeError(f"{name} must be real, got {M.dtype}")
    return M


def _rank(rank: Any, upper: int, name: str = "rank") -> int:
    _checks.positive_int(rank, name)
    if rank > upper:
        raise ValueError(f"{name} must be at most {upper} here, got {rank}")
    return rank


def _indices(index: Any, size: int, device: torch.device, name: str) -> torch.Tensor:
    if isinstance(index, torch.Tensor):
        if index.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise TypeError(f"{name} must hold integer indices, got {index.dtype}")
        idx = index.to(device=device, dtype=torch.long)
    else:
        try:
            idx = torch.as_tensor(list(index), dtype=torch.long, device=device)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be a sequence or tensor of integer indices") from exc
    if idx.ndim != 1 or idx.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D set of indices, got shape {tuple(idx.shape)}")
    if bool((idx < 0).any()) or bool((idx >= size).any()):
        raise ValueError(f"{name} must lie in [0, {size}), got {idx.tolist()[:10]}...")
    if torch.unique(idx).numel() != idx.numel():
        raise ValueError(f"{name} must not repeat an index")
    return idx


def _generator_device(generator: torch.Generator | None, fallback: torch.device) -> torch.device:
    if generator is None:
        return fallback
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    return generator.device


# ----------------------------------------------------------------------- pivoted QR


def cpqr(M: torch.Tensor, rank: int) -> CPQR:
    """Column-pivoted QR by greedy Gram-Schmidt, stopped after ``rank`` steps.

    At step ``k`` the column with the largest residual norm (after projecting out the
    ``k`` columns chosen so far) becomes the ``k``-th pivot; ties go to the lowest index.
    Each new direction is re-orthogonalised once against the previous ones. The pivots
    are those of LAPACK's ``geqp3`` (``scipy.linalg.qr(M, pivoting=True)``) up to exact
    ties, and ``|R[0, 0]| >= |R[1, 1]| >= ...``.

    Returns :class:`CPQR` ``(perm, Q, R)``: ``perm`` is a full permutation of the columns
    (pivots first, the rest in increasing order), ``Q`` is ``n x rank`` with orthonormal
    columns and ``R = Q^T M[:, perm]`` is ``rank x m`` (upper trapezoidal, positive
    diagonal). Raises ``ValueError`` if the residual vanishes before ``rank`` steps
    (``rank`` exceeds the rank of ``M``).
    """
    M = _matrix(M)
    n, m = M.shape
    _rank(rank, min(n, m))
    W = M.clone()
    Q = M.new_zeros(n, rank)
    R = M.new_zeros(rank, m)
    chosen = torch.zeros(m, dtype=torch.bool, device=M.device)
    pivots: list[int] = []
    for k in range(rank):
        norms2 = torch.linalg.vector_norm(W, dim=0).square().masked_fill(chosen, -math.inf)
        j = int(torch.argmax(norms2))
        if not float(norms2[j]) > 0.0:
            raise ValueError(f"M has rank {k} < rank = {rank}: the residual vanished at step {k}")
        q = W[:, j] / norms2[j].sqrt()
        if k:
            Qk = Q[:, :k]
            q = q - Qk @ (Qk.T @ q)  # one re-orthogonalisation pass
            q = q / torch.linalg.vector_norm(q)
        Q[:, k] = q
        R[k] = q @ W
        W.addr_(q, R[k], alpha=-1.0)  # W -= q R[k], in place
        W[:, j] = 0.0
        chosen[j] = True
        pivots.append(j)
    rest = torch.arange(m, device=M.device)[~chosen]
    perm = torch.cat([torch.as_tensor(pivots, dtype=torch.long, device=M.device), rest])
    return CPQR(perm, Q, R[:, perm])


# -------------------------------------------------------------------- column choice


def leverage_scores(M: torch.Tensor, k: int) -> torch.Tensor:
    """Column leverage scores of ``M`` at rank ``k``: ``||V[j, :k]||^2`` for ``M = U S V^T``.

    They are the diagonal of the projector ``V_k V_k^T``: each lies in ``[0, 1]`` and they
    sum to ``k``. Row scores are ``leverage_scores(M.T, k)``. Note that with ``k`` equal
    to the numerical rank every direction counts 1 however small its singular value.
    """
    M = _matrix(M)
    _rank(k, min(M.shape), "k")
    Vh = torch.linalg.svd(M, full_matrices=False).Vh
    return (Vh[:k] ** 2).sum(0)


def deim(V: torch.Tensor) -> torch.Tensor:
    """DEIM indices from an ``m x r`` basis ``V`` (e.g. the top right singular vectors).

    Step 1 takes the row of the largest ``|V[:, 0]|``; step ``k + 1`` interpolates column
    ``k`` on the rows chosen so far and takes the row of the largest ``|residual|``, where
    ``residual = V[:, k] - V[:, :k] @ solve(V[S, :k], V[S, k])`` vanishes on ``S``. Ties go
    to the lowest index. Returns ``r`` distinct row indices (``torch.long``).
    """
    V = _matrix(V, "V")
    m, r = V.shape
    if r > m:
        raise ValueError(f"V must have at least as many rows as columns, got shape {(m, r)}")
    chosen = [int(torch.argmax(V[:, 0].abs()))]
    for k in range(1, r):
        S = torch.as_tensor(chosen, dtype=torch.long, device=V.device)
        coeffs = torch.linalg.solve(V[S, :k], V[S, k])
        residual = V[:, k] - V[:, :k] @ coeffs
        residual[S] = 0.0  # exactly zero in exact arithmetic (the interpolation property)
        chosen.append(int(torch.argmax(residual.abs())))
    return torch.as_tensor(chosen, dtype=torch.long, device=V.device)


def _greedy_error_reduction(M: torch.Tensor, k: int) -> torch.Tensor:
    """Greedy columns: each step takes the column that most reduces ``||M - P_C M||_F^2``.

    The reduction from adding residual column ``w_i`` is ``||W^T w_i||^2 / ||w_i||^2``;
    with ``G = W^T W`` it is ``sum_j G_ij^2 / G_ii`` and ``G`` is downdated in place.
    """
    G = M.T @ M
    floor = torch.finfo(M.dtype).eps * M.shape[1] * float(G.diagonal().max())
    chosen: list[int] = []
    mask = torch.zeros(M.shape[1], dtype=torch.bool, device=M.device)
    for _ in range(k):
        diag = G.diagonal()
        usable = (diag > floor) & ~mask
        if not bool(usable.any()):
            raise ValueError(f"M has numerical rank {len(chosen)} < k = {k}")
        gain = (G * G).sum(0) / diag.clamp_min(floor)
        gain = gain.masked_fill(~usable, -math.inf)
        i = int(torch.argmax(gain))
        a = G[:, i] / diag[i].sqrt()
        G = G - torch.outer(a, a)
        mask[i] = True
        chosen.append(i)
    return torch.as_tensor(chosen, dtype=torch.long, device=M.device)


def _sample(weights: torch.Tensor, k: int, generator: torch.Generator | None) -> torch.Tensor:
    """``k`` distinct indices drawn with probabilities proportional to ``weights``."""
    dev = _generator_device(generator, weights.device)
    w = weights.detach().to(device=dev, dtype=torch.float64).clamp_min(0.0)
    if int((w > 0).sum()) < k:
        raise ValueError(f"only {int((w > 0).sum())} columns have positive weight; cannot sample k = {k}")
    return torch.multinomial(w, k, replacement=False, generator=generator).to(weights.device)


def _right_vectors(M: torch.Tensor, svd: Any) -> torch.Tensor:
    """``Vh`` of a given ``svd = (U, S, Vh)`` (checked against ``M``), else of ``M``'s SVD."""
    if svd is None:
        return torch.linalg.svd(M, full_matrices=False).Vh
    if not isinstance(svd, (tuple, list)) or len(svd) != 3:
        raise TypeError("svd must be a tuple (U, S, Vh) like torch.linalg.svd returns")
    Vh = _checks.tensor(svd[2], "svd[2] (Vh)", ndim=2)
    if Vh.shape[1] != M.shape[1]:
        raise ValueError(f"svd[2] (Vh) must have {M.shape[1]} columns like M, got shape {tuple(Vh.shape)}")
    return Vh.to(device=M.device, dtype=M.dtype)


def select_columns(
    M: torch.Tensor,
    k: int,
    method: str = "cpqr",
    *,
    generator: torch.Generator | None = None,
    oversample: int = 10,
    sample_size: int | None = None,
    svd_rank: int | None = None,
    svd: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Choose ``k`` distinct columns of ``M`` by one of :data:`SELECTION_METHODS`.

    - ``"cpqr"``: the first ``k`` pivots of :func:`cpqr` (deterministic).
    - ``"sketch"``: CPQR on ``Omega @ M`` with a Gaussian ``Omega`` of ``k + oversample`` rows.
    - ``"optim-rid"``: CPQR on ``sample_size`` (default ``min(2 k, m)``) uniformly sampled columns.
    - ``"uniform"``: ``k`` columns uniformly at random without replacement.
    - ``"norm"`` / ``"norm-sample"``: the ``k`` largest column norms / sampling with
      probabilities proportional to the squared norms.
    - ``"leverage"`` / ``"leverage-sample"``: the ``k`` largest / sampling proportional to
      the rank-``svd_rank`` (default ``k``) leverage scores (:func:`leverage_scores`).
    - ``"deim"``: :func:`deim` on the top ``k`` right singular vectors.
    - ``"greedy"``: each step adds the column that most reduces ``||M - C C^+ M||_F``
      (exact at ``k = 1``).

    Random methods draw from ``generator`` (CPU or CUDA; default: torch's global RNG on
    ``M``'s device). The SVD-based rules (leverage, DEIM) compute
    ``torch.linalg.svd(M, full_matrices=False)`` unless ``svd = (U, S, Vh)`` is given (for
    example a randomised SVD, or one shared between several calls; only ``Vh`` is used and
    it must have at least the needed number of rows). Returns a ``torch.long`` tensor of
    ``k`` indices in selection order (for top-``k`` rules: decreasing score).
    """
    M = _matrix(M)
    n, m = M.shape
    if method not in SELECTION_METHODS:
        raise ValueError(f"method must be one of {SELECTION_METHODS}, got {method!r}")
    _rank(k, m if method in ("uniform", "norm", "norm-sample") else min(n, m), "k")
    gdev = _generator_device(generator, M.device)

    if method == "cpqr":
        return cpqr(M, k).perm[:k]
    if method == "sketch":
        if not isinstance(oversample, int) or isinstance(oversample, bool) or oversample < 0:
            raise ValueError(f"oversample must be a non-negative int, got {oversample!r}")
        omega = torch.randn(k + oversample, n, generator=generator, device=gdev, dtype=M.dtype).to(M.device)
        return cpqr(omega @ M, k).perm[:k]
    if method == "optim-rid":
        size = min(2 * k, m) if sample_size is None else sample_size
        _checks.positive_int(size, "sample_size")
        if not k <= size <= m:
            raise ValueError(f"sample_size must lie in [k, m] = [{k}, {m}], got {size}")
        sample = torch.randperm(m, generator=generator, device=gdev)[:size].to(M.device)
        return sample[cpqr(M[:, sample], k).perm[:k]]
    if method == "uniform":
        return torch.randperm(m, generator=generator, device=gdev)[:k].to(M.device)
    if method in ("norm", "norm-sample"):
        norms2 = (M * M).sum(0)
        if method == "norm":
            return torch.sort(norms2, descending=True, stable=True).indices[:k]
        return _sample(norms2, k, generator)
    if method in ("leverage", "leverage-sample", "deim"):
        Vh = _right_vectors(M, svd)
    if method in ("leverage", "leverage-sample"):
        q = k if svd_rank is None else _rank(svd_rank, min(n, m), "svd_rank")
        if Vh.shape[0] < q:
            raise ValueError(f"svd must provide at least {q} right singular vectors, got {Vh.shape[0]}")
        scores = (Vh[:q] ** 2).sum(0)
        if method == "leverage":
            return torch.sort(scores, descending=True, stable=True).indices[:k]
        return _sample(scores, k, generator)
    if method == "deim":
        if Vh.shape[0] < k:
            raise ValueError(f"svd must provide at least {k} right singular vectors, got {Vh.shape[0]}")
        return deim(Vh[:k].T)
    return _greedy_error_reduction(M, k)


# ------------------------------------------------------------------------------- ID


def id_coefficients(M: torch.Tensor, columns: Any) -> torch.Tensor:
    """The best interpolation matrix for given columns: ``Z = C^+ M`` with ``C = M[:, columns]``.

    Computed by least squares (``torch.linalg.lstsq``); ``C`` must have full column rank.
    It minimises ``||M - C Z||_F`` and reproduces the chosen columns: ``Z[:, columns] = I``.
    """
    M = _matrix(M)
    S = _indices(columns, M.shape[1], M.device, "columns")
    if S.numel() > M.shape[0]:
        raise ValueError(f"columns must number at most n = {M.shape[0]} for C to have full column rank")
    C = M[:, S]
    Qc, Rc = torch.linalg.qr(C)
    return torch.linalg.solve_triangular(Rc, Qc.T @ M, upper=True)


def interpolative_decomposition(
    M: torch.Tensor,
    rank: int,
    method: str = "cpqr",
    *,
    coefficients: str | None = None,
    generator: torch.Generator | None = None,
    oversample: int = 10,
    sample_size: int | None = None,
) -> ID:
    """Interpolative decomposition ``M ~ C Z`` with ``C = M[:, S]``, ``|S| = rank``.

    ``method`` chooses the columns (see :func:`select_columns`; ``"cpqr"`` is the
    deterministic algorithm of SciPy's ``interp_decomp(..., rand=False)``). ``coefficients``
    says how ``Z`` is found:

    - ``"qr"`` (default for ``"cpqr"`` and ``"sketch"``): from the pivoted triangular
      factor, ``Z = [I, R11^{-1} R12] Pi^T``; for ``"sketch"`` the factor is that of the
      sketch ``Omega M`` (the classical randomised ID, which never touches ``M`` again).
    - ``"lstsq"`` (default otherwise): the optimum ``Z = C^+ M`` (:func:`id_coefficients`).

    For ``"cpqr"`` both give the same ``Z`` up to round-off.
    """
    M = _matrix(M)
    n, m = M.shape
    if method not in SELECTION_METHODS:
        raise ValueError(f"method must be one of {SELECTION_METHODS}, got {method!r}")
    _rank(rank, min(n, m))
    if coefficients is None:
        coefficients = "qr" if method in ("cpqr", "sketch") else "lstsq"
    if coefficients not in ("qr", "lstsq"):
        raise ValueError(f"coefficients must be 'qr' or 'lstsq', got {coefficients!r}")
    if coefficients == "qr" and method not in ("cpqr", "sketch"):
        raise ValueError(f"coefficients='qr' needs method 'cpqr' or 'sketch', got {method!r}")

    if coefficients == "qr":
        if method == "cpqr":
            target = M
        else:
            if not isinstance(oversample, int) or isinstance(oversample, bool) or oversample < 0:
                raise ValueError(f"oversample must be a non-negative int, got {oversample!r}")
            gdev = _generator_device(generator, M.device)
            omega = torch.randn(rank + oversample, n, generator=generator, device=gdev, dtype=M.dtype)
            target = omega.to(M.device) @ M
        perm, _, R = cpqr(target, rank)
        Z_piv = torch.cat(
            [
                torch.eye(rank, dtype=M.dtype, device=M.device),
                torch.linalg.solve_triangular(R[:, :rank], R[:, rank:], upper=True),
            ],
            dim=1,
        )
        Z = torch.empty_like(Z_piv)
        Z[:, perm] = Z_piv
        S = perm[:rank]
        return ID(S, M[:, S], Z)

    S = select_columns(M, rank, method, generator=generator, oversample=oversample, sample_size=sample_size)
    return ID(S, M[:, S], id_coefficients(M, S))


# ------------------------------------------------------------------------------ CUR


def cur_optimal_core(M: torch.Tensor, columns: Any, rows: Any) -> torch.Tensor:
    """The Frobenius-optimal core ``U* = C^+ M R^+`` for ``C = M[:, columns]``, ``R = M[rows, :]``.

    Computed by two least-squares solves (``C`` must have full column rank and ``R`` full
    row rank); ``C U* R = P_C M P_R`` with the orthogonal projectors onto the column space of
    ``C`` and the row space of ``R``. ``columns`` and ``rows`` may differ in number.
    """
    M = _matrix(M)
    n, m = M.shape
    S1 = _indices(columns, m, M.device, "columns")
    S2 = _indices(rows, n, M.device, "rows")
    if S1.numel() > n or S2.numel() > m:
        raise ValueError("need at most n columns and at most m rows for full-rank C and R")
    C, R = M[:, S1], M[S2, :]
    Qc, Rc = torch.linalg.qr(C)
    X = torch.linalg.solve_triangular(Rc, Qc.T @ M, upper=True)  # C^+ M, |S1| x m
    Qr, Rr = torch.linalg.qr(R.T)
    # X R^+ = X Qr Rr^{-T}  (R^+ = Qr Rr^{-T} when R^T = Qr Rr has full column rank)
    return torch.linalg.solve_triangular(Rr, (X @ Qr).T, upper=True).T


def cur_cross_core(M: torch.Tensor, columns: Any, rows: Any, *, rtol: float | None = None) -> torch.Tensor:
    """The cross (skeleton) core ``U = M[rows, columns]^+`` (pseudo-inverse of the intersection).

    ``C U R`` then reproduces the chosen rows and columns exactly when the intersection is
    square and invertible. ``rtol`` is passed to ``torch.linalg.pinv`` (its default cutoff
    when ``None``). Cheaper than :func:`cur_optimal_core` but never more accurate.
    """
    M = _matrix(M)
    n, m = M.shape
    S1 = _indices(columns, m, M.device, "columns")
    S2 = _indices(rows, n, M.device, "rows")
    if rtol is not None and (not isinstance(rtol, (int, float)) or isinstance(rtol, bool) or rtol < 0):
        raise ValueError(f"rtol must be a non-negative number or None, got {rtol!r}")
    A = M[S2][:, S1]
    return torch.linalg.pinv(A) if rtol is None else torch.linalg.pinv(A, rtol=rtol)


def cur_decomposition(
    M: torch.Tensor,
    rank: int,
    method: str = "deim",
    *,
    core: str = "optimal",
    n_rows: int | None = None,
    generator: torch.Generator | None = None,
    svd: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    **select_kwargs: Any,
) -> CUR:
    """CUR decomposition ``M ~ C U R`` with ``rank`` columns and ``n_rows`` (default ``rank``) rows.

    Columns are ``select_columns(M, rank, method)`` and rows ``select_columns(M.T, n_rows,
    method)`` (the same rule on the transpose; for ``"deim"`` this is DEIM on the left
    singular vectors). ``core`` is ``"optimal"`` (:func:`cur_optimal_core`) or ``"cross"``
    (:func:`cur_cross_core`). For the SVD-based rules one SVD is computed and shared by
    both sides, or ``svd = (U, S, Vh)`` of ``M`` is used (e.g. a randomised SVD). Extra
    keyword arguments go to :func:`select_columns`.
    """
    M = _matrix(M)
    n, m = M.shape
    _rank(rank, min(n, m))
    rows_k = rank if n_rows is None else _rank(n_rows, min(n, m), "n_rows")
    if core not in ("optimal", "cross"):
        raise ValueError(f"core must be 'optimal' or 'cross', got {core!r}")
    if method not in SELECTION_METHODS:
        raise ValueError(f"method must be one of {SELECTION_METHODS}, got {method!r}")
    if method in ("leverage", "leverage-sample", "deim") and svd is None:
        svd = tuple(torch.linalg.svd(M, full_matrices=False))
    svd_t = None
    if svd is not None:
        if not isinstance(svd, (tuple, list)) or len(svd) != 3:
            raise TypeError("svd must be a tuple (U, S, Vh) like torch.linalg.svd returns")
        U_svd = _checks.tensor(svd[0], "svd[0] (U)", ndim=2)
        svd_t = (svd[2].T, svd[1], U_svd.T)  # the SVD of M^T
    S1 = select_columns(M, rank, method, generator=generator, svd=svd, **select_kwargs)
    S2 = select_columns(M.T, rows_k, method, generator=generator, svd=svd_t, **select_kwargs)
    U = cur_optimal_core(M, S1, S2) if core == "optimal" else cur_cross_core(M, S1, S2)
    return CUR(S1, S2, M[:, S1], U, M[S2, :])


# ------------------------------------------------------------- yardsticks and tests


def svd_tail_error(M: torch.Tensor, rank: int) -> float:
    """Eckart-Young: the smallest ``||M - A||_F`` over rank-``rank`` ``A``, ``(sum_{i>rank} s_i^2)^{1/2}``."""
    M = _matrix(M)
    _rank(rank, min(M.shape))
    s = torch.linalg.svdvals(M)
    return float(torch.linalg.vector_norm(s[rank:]))


def singular_values(
    count: int,
    spectrum: str = "poly",
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The test spectra: ``"poly"``: ``s_i = i^{-2}``; ``"exp"``: ``s_i = exp(-i / 5)`` (``i = 1..count``)."""
    _checks.positive_int(count, "count")
    i = torch.arange(1, count + 1, dtype=dtype, device=device)
    if spectrum == "poly":
        return i**-2.0
    if spectrum == "exp":
        return torch.exp(-i / 5.0)
    raise ValueError(f"spectrum must be 'poly' or 'exp', got {spectrum!r}")


def _haar(rows: int, cols: int, generator, dtype, device) -> torch.Tensor:
    gdev = _generator_device(generator, torch.device(device) if device is not None else torch.device("cpu"))
    G = torch.randn(rows, cols, generator=generator, device=gdev, dtype=dtype).to(device)
    Qg, Rg = torch.linalg.qr(G)
    signs = torch.sign(torch.diagonal(Rg))
    signs[signs == 0] = 1.0
    return Qg * signs  # the sign fix makes the factor Haar-distributed


def decaying_matrix(
    n: int,
    m: int,
    spectrum: str = "poly",
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """A random ``n x m`` matrix ``U diag(s) V^T`` with Haar-random orthonormal ``U``, ``V``.

    ``s = singular_values(min(n, m), spectrum)`` is known exactly, so the Eckart-Young
    optimum needs no SVD. ``device`` defaults to the generator's device (else CPU).
    """
    _checks.positive_int(n, "n")
    _checks.positive_int(m, "m")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    if device is None:
        device = generator.device if isinstance(generator, torch.Generator) else "cpu"
    p = min(n, m)
    s = singular_values(p, spectrum, dtype=dtype, device=device)
    U = _haar(n, p, generator, dtype, device)
    V = _haar(m, p, generator, dtype, device)
    return (U * s) @ V.T


def kahan_matrix(
    n: int,
    theta: float = 1.2,
    *,
    tie_break: float = 1e-10,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The Kahan matrix ``diag(1, s, ..., s^{n-1}) (I - c N)`` with ``s = sin theta``, ``c = cos theta``.

    ``N`` has ones strictly above the diagonal. Column ``j`` is multiplied by
    ``1 - tie_break * j`` so that column-pivoted QR meets no exact norm ties and keeps the
    natural order, the classical example where it is far from optimal.
    """
    _checks.positive_int(n, "n")
    if not isinstance(theta, (int, float)) or isinstance(theta, bool) or not 0 < theta < math.pi / 2:
        raise ValueError(f"theta must lie in (0, pi/2), got {theta!r}")
    if not isinstance(tie_break, (int, float)) or isinstance(tie_break, bool) or not 0 <= tie_break * n < 1:
        raise ValueError(f"tie_break must be >= 0 with tie_break * n < 1, got {tie_break!r}")
    s, c = math.sin(theta), math.cos(theta)
    j = torch.arange(n, dtype=dtype, device=device)
    upper = torch.triu(torch.ones(n, n, dtype=dtype, device=device), diagonal=1)
    K = (torch.eye(n, dtype=dtype, device=device) - c * upper) * (s**j)[:, None]
    return K * (1.0 - tie_break * j)[None, :]


def scipy_id(
    M: torch.Tensor, eps_or_k: float | int, *, rand: bool = False, rng: Any = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """SciPy's ID (``scipy.linalg.interpolative.interp_decomp``) as ``(columns, Z)`` tensors.

    ``M ~ M[:, columns] @ Z`` with ``Z`` in the original column order (built by
    ``reconstruct_interp_matrix``). An integer ``eps_or_k >= 1`` is a rank, a float below 1
    a relative precision. SciPy needs float64: the tensor is copied to a CPU float64 array
    and the results come back on ``M``'s device in ``M``'s dtype. Note that on SciPy 1.15+
    a fixed rank with ``rand=True`` returns the deterministic result on dense arrays.
    """
    import scipy.linalg.interpolative as sli

    M = _matrix(M)
    if isinstance(eps_or_k, bool) or not isinstance(eps_or_k, (int, float)) or eps_or_k <= 0:
        raise ValueError(f"eps_or_k must be a positive rank (int) or a precision in (0, 1), got {eps_or_k!r}")
    if isinstance(eps_or_k, float) and eps_or_k >= 1:
        raise ValueError(f"a float eps_or_k is a precision and must be < 1, got {eps_or_k!r}")
    if isinstance(eps_or_k, int):
        _rank(eps_or_k, min(M.shape), "eps_or_k")
    A = M.detach().to("cpu", torch.float64).numpy().copy()
    out = sli.interp_decomp(A, eps_or_k, rand=rand, rng=rng)
    if isinstance(eps_or_k, int):
        idx, proj = out
        k = eps_or_k
    else:
        k, idx, proj = out
    Z = sli.reconstruct_interp_matrix(idx, proj)
    columns = torch.as_tensor(idx[:k].copy(), dtype=torch.long, device=M.device)
    return columns, torch.as_tensor(Z, dtype=M.dtype, device=M.device)
