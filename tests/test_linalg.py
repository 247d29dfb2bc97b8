"""Tests of kexue.linalg: pivoted QR, column selection, ID and CUR."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue import linalg

DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


def _gen(seed: int, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _low_rank(n: int, m: int, r: int, seed: int, device: str = "cpu") -> torch.Tensor:
    g = _gen(seed, device)
    X = torch.randn(n, r, generator=g, device=device, dtype=torch.float64)
    Y = torch.randn(r, m, generator=g, device=device, dtype=torch.float64)
    return X @ Y


def _residual(M: torch.Tensor, columns: torch.Tensor) -> float:
    Q, _ = torch.linalg.qr(M[:, columns])
    return float(torch.linalg.norm(M - Q @ (Q.T @ M)))


# ------------------------------------------------------------------------------ CPQR


@pytest.mark.parametrize("device", DEVICES)
def test_cpqr_factorisation_and_pivot_structure(device):
    M = linalg.decaying_matrix(60, 40, "exp", generator=_gen(1, device))
    r = 15
    perm, Q, R = linalg.cpqr(M, r)
    assert perm.device.type == device and sorted(perm.tolist()) == list(range(40))
    eye = torch.eye(r, dtype=M.dtype, device=device)
    torch.testing.assert_close(Q.T @ Q, eye, atol=1e-12, rtol=0)
    torch.testing.assert_close(Q @ R, Q @ (Q.T @ M[:, perm]), atol=1e-12, rtol=0)
    torch.testing.assert_close(Q @ R[:, :r], M[:, perm[:r]], atol=1e-12, rtol=0)
    assert torch.equal(torch.tril(R[:, :r], -1), torch.zeros_like(R[:, :r]))
    d = R.diagonal().abs()
    assert bool((d[1:] <= d[:-1] * (1 + 1e-12)).all())
    # R_kk^2 >= sum_{i=k}^{j} R_ij^2 for every j >= k (the pivot rule)
    for k in range(r):
        cols = (R[k:, k:] ** 2).cumsum(0)  # row t: sum_{i=k}^{k+t} R_ij^2
        reach = torch.stack([cols[min(j, r - 1 - k), j] for j in range(cols.shape[1])])
        assert bool((reach <= R[k, k] ** 2 * (1 + 1e-12)).all())


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_cpqr_pivots_match_lapack(seed):
    import scipy.linalg as sla

    g = _gen(seed)
    M = linalg.decaying_matrix(80, 50, "poly", generator=g) + 1e-4 * torch.randn(
        80, 50, generator=g, dtype=torch.float64
    )
    r = 20
    ours = linalg.cpqr(M, r).perm[:r].numpy()
    lapack = sla.qr(M.numpy(), pivoting=True, mode="economic")[2][:r]
    np.testing.assert_array_equal(ours, lapack)


def test_cpqr_ties_go_to_lowest_index_and_rank_deficiency_is_reported():
    M = torch.zeros(3, 4, dtype=torch.float64)
    M[0, 1] = M[0, 3] = 1.0
    M[1, 2] = 1.0
    assert linalg.cpqr(M, 2).perm[:2].tolist() == [1, 2]
    with pytest.raises(ValueError, match="rank"):
        linalg.cpqr(M, 3)


def test_kahan_matrix_defeats_cpqr_with_the_closed_form_coefficients():
    n, theta = 30, 1.2
    c = math.cos(theta)
    K = linalg.kahan_matrix(n, theta)
    dec = linalg.interpolative_decomposition(K, n - 1)
    assert dec.columns.tolist() == list(range(n - 1))
    t = 1 - 1e-10 * torch.arange(n, dtype=torch.float64)
    i = torch.arange(n - 1, dtype=torch.float64)
    expected = -c * (1 + c) ** (n - 2 - i) * t[n - 1] / t[: n - 1]
    torch.testing.assert_close(dec.Z[:, n - 1], expected, rtol=1e-9, atol=0)
    err = float(torch.linalg.norm(K - dec.approximation()))
    assert math.isclose(err, math.sin(theta) ** (n - 1) * float(t[n - 1]), rel_tol=1e-9)


# ---------------------------------------------------------------------------- ID


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(4, 30),
    m=st.integers(4, 30),
    data=st.data(),
    seed=st.integers(0, 10_000),
    method=st.sampled_from(linalg.SELECTION_METHODS),
)
def test_id_of_exact_rank_matrix_reconstructs_it(n, m, data, seed, method):
    r = data.draw(st.integers(1, min(n, m) - 1))
    M = _low_rank(n, m, r, seed)
    if method in ("uniform", "norm", "norm-sample", "leverage-sample"):
        # these need not find a basis; only check the bound below
        S = linalg.select_columns(M, r, method, generator=_gen(seed))
        assert len(set(S.tolist())) == r
        return
    kw = {"sample_size": m} if method == "optim-rid" else {}
    dec = linalg.interpolative_decomposition(M, r, method, generator=_gen(seed), **kw)
    scale = float(torch.linalg.norm(M))
    assert float(torch.linalg.norm(M - dec.approximation())) <= 1e-8 * scale
    torch.testing.assert_close(dec.Z[:, dec.columns], torch.eye(r, dtype=M.dtype), atol=1e-8, rtol=0)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(3, 25),
    m=st.integers(3, 25),
    data=st.data(),
    seed=st.integers(0, 10_000),
    method=st.sampled_from(linalg.SELECTION_METHODS),
)
def test_id_error_is_never_below_the_svd_optimum(n, m, data, seed, method):
    r = data.draw(st.integers(1, min(n, m)))
    M = torch.randn(n, m, generator=_gen(seed), dtype=torch.float64)
    S = linalg.select_columns(M, r, method, generator=_gen(seed + 1))
    assert _residual(M, S) >= linalg.svd_tail_error(M, r) * (1 - 1e-10) - 1e-12


def test_optim_rid_default_sample_fits_a_narrow_matrix():
    # Found by the property test above: 2k > m used to raise with the default sample size.
    M = torch.randn(3, 3, generator=_gen(0), dtype=torch.float64)
    S = linalg.select_columns(M, 2, "optim-rid", generator=_gen(1))
    assert S.numel() == 2 and len(set(S.tolist())) == 2


def test_id_coefficients_are_the_least_squares_solution():
    M = torch.randn(12, 9, generator=_gen(3), dtype=torch.float64)
    S = [4, 0, 7]
    Z = linalg.id_coefficients(M, S)
    torch.testing.assert_close(Z, torch.linalg.pinv(M[:, S]) @ M, atol=1e-12, rtol=0)
    torch.testing.assert_close(Z[:, S], torch.eye(3, dtype=M.dtype), atol=1e-12, rtol=0)
    dec = linalg.interpolative_decomposition(M, 3, coefficients="lstsq")
    dec_qr = linalg.interpolative_decomposition(M, 3)
    torch.testing.assert_close(dec.Z, dec_qr.Z, atol=1e-12, rtol=0)


def test_scipy_id_agrees_with_ours():
    g = _gen(0)
    M = linalg.decaying_matrix(100, 70, "poly", generator=g) + 1e-4 * torch.randn(
        100, 70, generator=g, dtype=torch.float64
    )
    r = 12
    idx, Z = linalg.scipy_id(M, r)
    dec = linalg.interpolative_decomposition(M, r)
    assert idx.tolist() == dec.columns.tolist()
    torch.testing.assert_close(Z, dec.Z, atol=1e-11, rtol=0)
    k_cols, Z_eps = linalg.scipy_id(M, 1e-3, rand=True, rng=np.random.default_rng(0))
    assert Z_eps.shape == (k_cols.numel(), 70)


def test_greedy_first_column_is_the_exhaustive_optimum():
    M = torch.zeros(2, 21, dtype=torch.float64)
    M[0, 0] = 3.0
    M[1, 1:] = 1.0
    assert linalg.select_columns(M, 1, "cpqr").tolist() == [0]
    assert linalg.select_columns(M, 1, "greedy").tolist() == [1]
    A = torch.randn(15, 10, generator=_gen(5), dtype=torch.float64)
    errors = torch.tensor([_residual(A, torch.tensor([j])) for j in range(10)])
    assert int(linalg.select_columns(A, 1, "greedy")) == int(errors.argmin())


@pytest.mark.parametrize("method", linalg.SELECTION_METHODS)
@pytest.mark.parametrize("device", DEVICES)
def test_select_columns_returns_distinct_indices_reproducibly(method, device):
    M = linalg.decaying_matrix(40, 30, "exp", generator=_gen(2, device))
    a = linalg.select_columns(M, 8, method, generator=_gen(7, device))
    b = linalg.select_columns(M, 8, method, generator=_gen(7, device))
    assert a.dtype == torch.long and a.device.type == device
    assert torch.equal(a, b)
    assert len(set(a.tolist())) == 8 and 0 <= int(a.min()) and int(a.max()) < 30


# --------------------------------------------------------------------- leverage, DEIM


def test_leverage_scores_are_a_projector_diagonal():
    M = _low_rank(30, 50, 8, 4)
    h = linalg.leverage_scores(M, 8)
    H = torch.linalg.pinv(M) @ M
    torch.testing.assert_close(h, H.diagonal(), atol=1e-10, rtol=0)
    assert math.isclose(float(h.sum()), 8.0, rel_tol=1e-12)
    assert bool((h >= -1e-15).all()) and bool((h <= 1 + 1e-12).all())


@pytest.mark.parametrize("device", DEVICES)
def test_deim_residual_vanishes_on_chosen_rows(device):
    M = linalg.decaying_matrix(50, 30, "exp", generator=_gen(6, device))
    V = torch.linalg.svd(M, full_matrices=False).Vh[:10].T
    S = linalg.deim(V)
    assert len(set(S.tolist())) == 10
    for k in range(1, 10):
        coeffs = torch.linalg.solve(V[S[:k], :k], V[S[:k], k])
        residual = V[:, k] - V[:, :k] @ coeffs
        assert float(residual[S[:k]].abs().max()) < 1e-13
        assert int(residual.abs().argmax()) == int(S[k])


# --------------------------------------------------------------------------- CUR


@settings(max_examples=25, deadline=None)
@given(n=st.integers(4, 25), m=st.integers(4, 25), data=st.data(), seed=st.integers(0, 10_000))
def test_cur_of_exact_rank_matrix_reconstructs_it(n, m, data, seed):
    r = data.draw(st.integers(1, min(n, m) - 1))
    M = _low_rank(n, m, r, seed)
    for core in ("optimal", "cross"):
        cur = linalg.cur_decomposition(M, r, "cpqr", core=core)
        assert float(torch.linalg.norm(M - cur.approximation())) <= 1e-7 * float(torch.linalg.norm(M))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(3, 20), m=st.integers(3, 20), data=st.data(), seed=st.integers(0, 10_000))
def test_cur_optimal_core_beats_cross_and_svd_bounds_both(n, m, data, seed):
    r = data.draw(st.integers(1, min(n, m)))
    M = torch.randn(n, m, generator=_gen(seed), dtype=torch.float64)
    S1 = linalg.select_columns(M, r, "cpqr")
    S2 = linalg.select_columns(M.T, r, "cpqr")
    U_opt = linalg.cur_optimal_core(M, S1, S2)
    torch.testing.assert_close(
        U_opt, torch.linalg.pinv(M[:, S1]) @ M @ torch.linalg.pinv(M[S2, :]), atol=1e-8, rtol=1e-8
    )
    e_opt = float(torch.linalg.norm(M - M[:, S1] @ U_opt @ M[S2, :]))
    e_cross = float(torch.linalg.norm(M - M[:, S1] @ linalg.cur_cross_core(M, S1, S2) @ M[S2, :]))
    assert e_opt <= e_cross * (1 + 1e-9) + 1e-12
    assert e_opt >= linalg.svd_tail_error(M, r) * (1 - 1e-9) - 1e-12


def test_cur_with_more_rows_than_columns_and_deim_on_transpose():
    M = linalg.decaying_matrix(40, 30, "poly", generator=_gen(8))
    cur = linalg.cur_decomposition(M, 5, "deim", n_rows=9)
    assert cur.C.shape == (40, 5) and cur.U.shape == (5, 9) and cur.R.shape == (9, 30)
    U_full = torch.linalg.svd(M, full_matrices=False).U
    assert cur.rows.tolist() == linalg.deim(U_full[:, :9]).tolist()


# ---------------------------------------------------------------- test matrices


def test_decaying_matrix_has_the_stated_spectrum():
    for spectrum in ("poly", "exp"):
        M = linalg.decaying_matrix(30, 20, spectrum, generator=_gen(9))
        torch.testing.assert_close(
            torch.linalg.svdvals(M), linalg.singular_values(20, spectrum), atol=1e-14, rtol=1e-10
        )
    s = linalg.singular_values(20)
    M = linalg.decaying_matrix(30, 20, generator=_gen(9))
    assert math.isclose(linalg.svd_tail_error(M, 5), float(torch.linalg.norm(s[5:])), rel_tol=1e-10)


# ------------------------------------------------------------------------ errors


def test_bad_inputs_raise_clear_errors():
    M = torch.randn(6, 5, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"M must be a torch\.Tensor"):
        linalg.cpqr(M.numpy(), 2)
    with pytest.raises(TypeError, match="floating"):
        linalg.cpqr(torch.ones(3, 3, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="M must have 2 dimensions"):
        linalg.cpqr(torch.ones(3), 1)
    with pytest.raises(ValueError, match="rank must be at most 5"):
        linalg.interpolative_decomposition(M, 6)
    with pytest.raises(ValueError, match="rank must be a positive int"):
        linalg.interpolative_decomposition(M, 0)
    with pytest.raises(ValueError, match="method must be one of"):
        linalg.select_columns(M, 2, "best")
    with pytest.raises(ValueError, match="coefficients"):
        linalg.interpolative_decomposition(M, 2, "uniform", coefficients="qr")
    with pytest.raises(ValueError, match="columns must not repeat"):
        linalg.id_coefficients(M, [1, 1])
    with pytest.raises(ValueError, match=r"rows must lie in \[0, 6\)"):
        linalg.cur_optimal_core(M, [0, 1], [0, 9])
    with pytest.raises(TypeError, match="integer indices"):
        linalg.cur_cross_core(M, torch.tensor([0.0, 1.0]), [0, 1])
    with pytest.raises(ValueError, match="core"):
        linalg.cur_decomposition(M, 2, core="middle")
    with pytest.raises(ValueError, match="sample_size"):
        linalg.select_columns(M, 3, "optim-rid", sample_size=2)
    with pytest.raises(TypeError, match="generator"):
        linalg.select_columns(M, 2, "uniform", generator=0)
    with pytest.raises(ValueError, match="spectrum"):
        linalg.singular_values(5, "flat")
    with pytest.raises(ValueError, match="theta"):
        linalg.kahan_matrix(5, theta=2.0)
    with pytest.raises(ValueError, match="eps_or_k"):
        linalg.scipy_id(M, 1.5)
    with pytest.raises(ValueError, match="V must have at least as many rows"):
        linalg.deim(torch.randn(3, 5, dtype=torch.float64))


def test_precomputed_svd_gives_the_same_selection_and_is_checked():
    M = linalg.decaying_matrix(40, 30, "exp", generator=_gen(11))
    svd = torch.linalg.svd(M, full_matrices=False)
    for method in ("leverage", "deim"):
        assert torch.equal(linalg.select_columns(M, 6, method), linalg.select_columns(M, 6, method, svd=tuple(svd)))
    cur = linalg.cur_decomposition(M, 6, "deim")
    cur_shared = linalg.cur_decomposition(M, 6, "deim", svd=tuple(svd))
    assert torch.equal(cur.columns, cur_shared.columns) and torch.equal(cur.rows, cur_shared.rows)
    with pytest.raises(TypeError, match="svd must be a tuple"):
        linalg.select_columns(M, 6, "deim", svd=svd.Vh)
    with pytest.raises(ValueError, match="columns like M"):
        linalg.select_columns(M, 6, "deim", svd=(svd.U, svd.S, svd.Vh[:, :10]))
    with pytest.raises(ValueError, match="at least 6 right singular vectors"):
        linalg.select_columns(M, 6, "deim", svd=(svd.U, svd.S, svd.Vh[:4]))
