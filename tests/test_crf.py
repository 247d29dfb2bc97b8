"""Tests of kexue.crf: the forward algorithm and Viterbi against brute-force enumeration,
the BMES sampler and the segmentation metrics against simple reference implementations."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue import crf

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _random_problem(seed: int, batch: int, length: int, k: int, scale: float = 2.0, per_sequence: bool = False):
    gen = torch.Generator().manual_seed(seed)
    emissions = scale * torch.randn(batch, length, k, generator=gen, dtype=torch.float64)
    shape = (batch, k, k) if per_sequence else (k, k)
    trans = scale * torch.randn(*shape, generator=gen, dtype=torch.float64)
    lengths = torch.randint(1, length + 1, (batch,), generator=gen)
    mask = torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)
    return emissions, trans, mask, lengths


def _brute_scores(emissions: torch.Tensor, trans: torch.Tensor) -> tuple[list[tuple[int, ...]], torch.Tensor]:
    """Scores of all K**T paths of one sequence (emissions (T, K), trans (K, K))."""
    length, k = emissions.shape
    paths = list(itertools.product(range(k), repeat=length))
    scores = []
    for path in paths:
        s = sum(emissions[t, y] for t, y in enumerate(path))
        s = s + sum(trans[a, b] for a, b in itertools.pairwise(path))
        scores.append(torch.as_tensor(s, dtype=emissions.dtype))
    return paths, torch.stack(scores)


def _row_trans(trans: torch.Tensor, i: int) -> torch.Tensor:
    return trans[i] if trans.ndim == 3 else trans


# ------------------------------------------------------------------ forward algorithm


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    batch=st.integers(1, 3),
    length=st.integers(1, 5),
    k=st.integers(1, 4),
    per_sequence=st.booleans(),
)
def test_log_partition_matches_enumeration(seed, batch, length, k, per_sequence):
    emissions, trans, mask, lengths = _random_problem(seed, batch, length, k, per_sequence=per_sequence)
    full = crf.log_partition(emissions, trans)
    masked = crf.log_partition(emissions, trans, mask)
    for i in range(batch):
        _, scores = _brute_scores(emissions[i], _row_trans(trans, i))
        assert torch.allclose(full[i], torch.logsumexp(scores, 0), rtol=1e-12, atol=1e-10)
        n = int(lengths[i])
        _, scores_n = _brute_scores(emissions[i, :n], _row_trans(trans, i))
        assert torch.allclose(masked[i], torch.logsumexp(scores_n, 0), rtol=1e-12, atol=1e-10)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), length=st.integers(1, 4), k=st.integers(2, 3))
def test_probabilities_sum_to_one(seed, length, k):
    emissions, trans, _, _ = _random_problem(seed, 1, length, k)
    total = 0.0
    for path in itertools.product(range(k), repeat=length):
        tags = torch.tensor([path])
        total += math.exp(-float(crf.crf_nll(emissions, tags, trans)))
    assert total == pytest.approx(1.0, rel=1e-10)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), batch=st.integers(1, 3), length=st.integers(1, 5), k=st.integers(1, 4))
def test_path_score_matches_direct_sum(seed, batch, length, k):
    emissions, trans, mask, lengths = _random_problem(seed, batch, length, k)
    gen = torch.Generator().manual_seed(seed + 1)
    tags = torch.randint(0, k, (batch, length), generator=gen)
    padded = tags.masked_fill(~mask, -1)
    got = crf.path_score(emissions, padded, trans, mask)
    for i in range(batch):
        n = int(lengths[i])
        path = tags[i, :n].tolist()
        want = sum(float(emissions[i, t, y]) for t, y in enumerate(path))
        want += sum(float(trans[a, b]) for a, b in itertools.pairwise(path))
        assert float(got[i]) == pytest.approx(want, rel=1e-12, abs=1e-10)


def test_transition_gradient_is_expected_minus_observed_counts():
    emissions, trans, _, _ = _random_problem(3, 1, 4, 3)
    tags = torch.tensor([[0, 2, 2, 1]])
    trans = trans.clone().requires_grad_(True)
    crf.crf_nll(emissions, tags, trans).backward()
    paths, scores = _brute_scores(emissions[0], trans.detach())
    probs = torch.softmax(scores, 0)
    expected = torch.zeros(3, 3, dtype=torch.float64)
    for p, path in zip(probs, paths, strict=True):
        for a, b in itertools.pairwise(path):
            expected[a, b] += p
    observed = torch.zeros(3, 3, dtype=torch.float64)
    for a, b in itertools.pairwise(tags[0].tolist()):
        observed[a, b] += 1
    assert torch.allclose(trans.grad, expected - observed, atol=1e-12)


def test_log_space_survives_large_scores():
    emissions = torch.full((2, 50, 4), 40.0)
    trans = torch.zeros(4, 4)
    logz = crf.log_partition(emissions, trans)
    assert torch.isfinite(logz).all()
    assert torch.allclose(logz, torch.full((2,), 50 * 40.0 + 50 * math.log(4)), rtol=1e-5)


def test_reductions():
    emissions, trans, mask, _ = _random_problem(0, 4, 5, 3)
    tags = torch.zeros(4, 5, dtype=torch.long)
    each = crf.crf_nll(emissions, tags, trans, mask, reduction="none")
    assert each.shape == (4,)
    assert (each >= 0).all()
    assert torch.allclose(crf.crf_nll(emissions, tags, trans, mask), each.mean())
    assert torch.allclose(crf.crf_nll(emissions, tags, trans, mask, reduction="sum"), each.sum())


# --------------------------------------------------------------------------- Viterbi


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    batch=st.integers(1, 3),
    length=st.integers(1, 5),
    k=st.integers(1, 4),
    per_sequence=st.booleans(),
)
def test_viterbi_matches_brute_force_argmax(seed, batch, length, k, per_sequence):
    emissions, trans, mask, lengths = _random_problem(seed, batch, length, k, per_sequence=per_sequence)
    full = crf.viterbi(emissions, trans)
    masked = crf.viterbi(emissions, trans, mask)
    assert full.dtype == torch.long and full.shape == (batch, length)
    for i in range(batch):
        paths, scores = _brute_scores(emissions[i], _row_trans(trans, i))
        assert tuple(full[i].tolist()) == paths[int(scores.argmax())]
        n = int(lengths[i])
        paths_n, scores_n = _brute_scores(emissions[i, :n], _row_trans(trans, i))
        assert tuple(masked[i, :n].tolist()) == paths_n[int(scores_n.argmax())]
        assert (masked[i, n:] == -1).all()


def test_viterbi_is_argmax_when_transitions_vanish():
    emissions, _, _, _ = _random_problem(5, 6, 7, 4)
    path = crf.viterbi(emissions, torch.zeros(4, 4, dtype=torch.float64))
    assert torch.equal(path, emissions.argmax(-1))


@pytest.mark.parametrize("device", DEVICES)
def test_device_and_float32(device):
    gen = torch.Generator(device=device).manual_seed(0)
    layer = crf.LinearChainCRF(4, generator=gen, device=device)
    assert layer.transitions.abs().max() <= math.sqrt(6 / 8)
    emissions = torch.randn(3, 6, 4, device=device, generator=gen)
    tags = crf.bmes_tags(3, 6, gen)
    loss = layer(emissions, tags)
    loss.backward()
    assert layer.transitions.grad is not None and layer.transitions.grad.device.type == torch.device(device).type
    assert layer.decode(emissions).device.type == torch.device(device).type


# ------------------------------------------------------------------------ bad inputs


def test_bad_inputs_name_the_argument():
    e = torch.zeros(2, 3, 4)
    t = torch.zeros(4, 4)
    tags = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="emissions"):
        crf.log_partition(torch.zeros(3, 4), t)
    with pytest.raises(TypeError, match="emissions"):
        crf.log_partition(torch.zeros(2, 3, 4, dtype=torch.long), t)
    with pytest.raises(ValueError, match="trans"):
        crf.log_partition(e, torch.zeros(3, 3))
    with pytest.raises(ValueError, match="trans"):
        crf.log_partition(e, torch.zeros(5, 4, 4))
    with pytest.raises(ValueError, match="left-aligned"):
        crf.log_partition(e, t, torch.tensor([[True, False, True], [True, True, True]]))
    with pytest.raises(ValueError, match="position 0"):
        crf.viterbi(e, t, torch.tensor([[False, False, False], [True, True, True]]))
    with pytest.raises(TypeError, match="mask"):
        crf.viterbi(e, t, torch.ones(2, 3))
    with pytest.raises(TypeError, match="tags"):
        crf.crf_nll(e, tags.float(), t)
    with pytest.raises(ValueError, match="tags"):
        crf.crf_nll(e, tags + 4, t)
    with pytest.raises(ValueError, match="reduction"):
        crf.crf_nll(e, tags, t, reduction="avg")
    with pytest.raises(ValueError, match="num_tags"):
        crf.LinearChainCRF(0)
    with pytest.raises(ValueError, match="p_len"):
        crf.bmes_tags(2, 3, p_len=(-1.0, 2.0))
    with pytest.raises(ValueError, match="length"):
        crf.bmes_tags(2, 0)
    with pytest.raises(ValueError, match="mult"):
        crf.adam_param_groups([torch.zeros(1)], [torch.zeros(1)], 1e-3, 0.0)
    shared = torch.zeros(1)
    with pytest.raises(ValueError, match="share"):
        crf.adam_param_groups([shared], [shared], 1e-3, 10.0)
    with pytest.raises(TypeError, match="allowed"):
        crf.transition_structure_score(t, allowed=torch.ones(4, 4))
    with pytest.raises(ValueError, match="allowed"):
        crf.transition_structure_score(torch.zeros(3, 3))


# ------------------------------------------------------------------------ BMES helpers


def test_bmes_tags_are_grammatical_and_have_the_right_frequencies():
    gen = torch.Generator().manual_seed(0)
    tags = crf.bmes_tags(300, 20, gen)
    assert tags.shape == (300, 20) and tags.dtype == torch.long
    assert crf.illegal_transition_rate(tags) == 0.0
    assert bool(((tags[:, 0] == crf.S) | (tags[:, 0] == crf.B)).all())
    # Long rows: per-character tag frequencies of the word-length process. Mean word length
    # is 2.0, so P(s) = 0.35 / 2, P(b) = P(e) = 0.65 / 2, P(m) = (0.15 + 2 * 0.10) / 2.
    long_rows = crf.bmes_tags(200, 500, gen)
    freq = torch.bincount(long_rows.reshape(-1), minlength=4).double() / long_rows.numel()
    expected = torch.tensor([0.175, 0.325, 0.175, 0.325], dtype=torch.float64)
    # 100,000 characters in about 50,000 words: sampling error about 0.002; edge effects O(1/500)
    assert torch.allclose(freq, expected, atol=0.01)
    # complete word lengths follow p_len
    words = [crf.bmes_words(row) for row in long_rows[:50]]
    lengths = torch.tensor([e - s + 1 for w, row in zip(words, long_rows[:50], strict=True) for s, e in w if e < 499])
    counts = torch.bincount(lengths, minlength=5)[1:].double()
    assert torch.allclose(counts / counts.sum(), torch.tensor([0.35, 0.40, 0.15, 0.10], dtype=torch.float64), atol=0.03)


def test_bmes_tags_single_length_words():
    tags = crf.bmes_tags(3, 5, torch.Generator().manual_seed(1), p_len=(1.0,))
    assert (tags == crf.S).all()
    tags = crf.bmes_tags(3, 6, torch.Generator().manual_seed(1), p_len=(0.0, 0.0, 1.0))
    assert tags[0].tolist() == [crf.B, crf.M, crf.E, crf.B, crf.M, crf.E]


def test_bmes_words_examples():
    s, b, m, e = crf.S, crf.B, crf.M, crf.E
    assert crf.bmes_words([s, b, e, b, m, e]) == {(0, 0), (1, 2), (3, 5)}
    # a row cut inside a word, and one that starts on m with an illegal e -> m
    assert crf.bmes_words([b, m]) == {(0, 1)}
    assert crf.bmes_words([m, e, m, s]) == {(0, 1), (2, 2), (3, 3)}


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), batch=st.integers(1, 4), length=st.integers(1, 8))
def test_seg_f1_matches_set_reference(seed, batch, length):
    gen = torch.Generator().manual_seed(seed)
    gold = crf.bmes_tags(batch, length, gen)
    pred = torch.randint(0, 4, (batch, length), generator=gen)
    lengths = torch.randint(1, length + 1, (batch,), generator=gen)
    mask = torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)
    for use_mask in (False, True):
        hit = n_pred = n_gold = 0
        for i in range(batch):
            n = int(lengths[i]) if use_mask else length
            wp, wg = crf.bmes_words(pred[i, :n]), crf.bmes_words(gold[i, :n])
            hit, n_pred, n_gold = hit + len(wp & wg), n_pred + len(wp), n_gold + len(wg)
        want = 2 * hit / (n_pred + n_gold)
        got = crf.seg_f1(pred, gold, mask if use_mask else None)
        assert got == pytest.approx(want, abs=1e-12)
    assert crf.seg_f1(gold, gold) == 1.0


def test_illegal_transition_rate():
    s, b, m, e = crf.S, crf.B, crf.M, crf.E
    tags = torch.tensor([[s, e, b, m], [b, b, m, e]])  # s->e and b->b are illegal: 2 of 6 pairs
    assert crf.illegal_transition_rate(tags) == pytest.approx(2 / 6)
    mask = torch.tensor([[True, True, True, True], [True, False, False, False]])
    assert crf.illegal_transition_rate(tags, mask=mask) == pytest.approx(1 / 3)


def test_structure_score_and_separation():
    allowed = crf.bmes_allowed()
    assert int(allowed.sum()) == 8
    good = allowed.double() * 2 - 1
    assert float(crf.transition_structure_score(good)) == 1.0
    assert float(crf.transition_structure_score(-good)) == 0.0
    assert float(crf.transition_separation(good)) == pytest.approx(2.0)
    stack = torch.stack([good, -good, torch.zeros(4, 4, dtype=torch.float64)])
    assert crf.transition_structure_score(stack).tolist() == [1.0, 0.0, 0.0]
    # one flipped pair in one row: 15 of 16
    one_off = good.clone()
    one_off[crf.S, crf.E] = -0.5
    one_off[crf.S, crf.B] = -0.9
    assert float(crf.transition_structure_score(one_off)) == pytest.approx(15 / 16)


def test_structure_score_of_random_matrices_is_one_half_on_average():
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([crf.glorot_uniform_transitions(4, generator=gen) for _ in range(4000)])
    scores = crf.transition_structure_score(draws)
    se = scores.std() / math.sqrt(len(scores))
    assert abs(float(scores.mean()) - 0.5) < 5 * float(se)


def test_adam_param_groups():
    w, t = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))
    groups = crf.adam_param_groups([w], [t], 1e-3, 100.0)
    opt = torch.optim.Adam(groups)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-3, 1e-1])
    w.grad, t.grad = torch.ones(3), torch.ones(2)
    opt.step()
    assert torch.allclose(w, torch.full((3,), -1e-3)) and torch.allclose(t, torch.full((2,), -1e-1))
