"""A linear-chain conditional random field (CRF) in PyTorch, and BMES word-segmentation helpers.

The CRF scores a tag sequence ``y`` of length ``T`` given per-position emission scores
``e[t, k]`` and a ``K x K`` transition matrix ``trans[i, j]`` (the score of tag ``i``
followed by tag ``j``; no start or end scores)::

    score(y) = sum_t e[t, y_t] + sum_t trans[y_t, y_{t+1}]
    log p(y | x) = score(y) - log Z,   log Z = logsumexp over all K**T paths of score

:func:`log_partition` computes ``log Z`` by the forward algorithm in log space (a path
score is a sum of ``T`` terms and overflows ``exp`` quickly), :func:`crf_nll` the mean
negative log-likelihood, :func:`viterbi` the highest-scoring path. All of them take a
batch of sequences (``emissions`` of shape ``(B, T, K)``), an optional left-aligned
``mask`` of shape ``(B, T)`` for sequences of different lengths, and either one transition
matrix ``(K, K)`` shared by the batch or one per sequence ``(B, K, K)`` (which lets many
independent models train in one batched computation).

The segmentation helpers use the tags ``s, b, m, e`` = ``0, 1, 2, 3`` (single-character
word, begin, middle, end of a word): :func:`bmes_tags` samples tag rows from random word
lengths, :func:`seg_f1` scores a predicted segmentation against the gold one, and
:func:`transition_structure_score` says how much of the BMES grammar a transition matrix
has learned.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch

from . import _checks

__all__ = [
    "BMES",
    "LinearChainCRF",
    "adam_param_groups",
    "bmes_allowed",
    "bmes_tags",
    "bmes_words",
    "crf_nll",
    "glorot_uniform_transitions",
    "illegal_transition_rate",
    "log_partition",
    "path_score",
    "seg_f1",
    "transition_separation",
    "transition_structure_score",
    "viterbi",
    "word_starts",
]

#: Tag names in index order: single, begin, middle, end.
BMES = ("s", "b", "m", "e")
S, B, M, E = 0, 1, 2, 3


# ----------------------------------------------------------------------------- checks


def _check_emissions(emissions: torch.Tensor) -> tuple[int, int, int]:
    _checks.tensor(emissions, "emissions", ndim=3)
    b, t, k = emissions.shape
    if b < 1 or t < 1 or k < 1:
        raise ValueError(f"emissions must have shape (B, T, K) with B, T, K >= 1, got {tuple(emissions.shape)}")
    return b, t, k


def _check_trans(trans: torch.Tensor, batch: int, k: int, emissions: torch.Tensor) -> torch.Tensor:
    """Return ``trans`` as a (B or 1, K, K) tensor."""
    _checks.tensor(trans, "trans", ndim=(2, 3))
    if trans.shape[-2:] != (k, k):
        raise ValueError(f"trans must have shape (K, K) or (B, K, K) with K = {k}, got {tuple(trans.shape)}")
    if trans.ndim == 3 and trans.shape[0] != batch:
        raise ValueError(
            f"trans of shape (B, K, K) must have B = {batch} (the batch of emissions), got {trans.shape[0]}"
        )
    if trans.device != emissions.device:
        raise ValueError(f"trans is on {trans.device} but emissions are on {emissions.device}")
    return trans if trans.ndim == 3 else trans.unsqueeze(0)


def _check_mask(mask: torch.Tensor | None, batch: int, length: int, emissions: torch.Tensor) -> torch.Tensor | None:
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch.Tensor or None, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must have dtype torch.bool, got {mask.dtype}")
    if mask.shape != (batch, length):
        raise ValueError(f"mask must have shape (B, T) = {(batch, length)}, got {tuple(mask.shape)}")
    if mask.device != emissions.device:
        raise ValueError(f"mask is on {mask.device} but emissions are on {emissions.device}")
    if not bool(mask[:, 0].all()):
        raise ValueError("mask must be True at position 0 of every sequence (empty sequences are not allowed)")
    if length > 1 and bool((mask[:, 1:] & ~mask[:, :-1]).any()):
        raise ValueError("mask must be left-aligned: once False along a row it must stay False")
    return mask


def _check_tags(tags: torch.Tensor, name: str, shape: tuple[int, ...] | None, k: int | None) -> torch.Tensor:
    if not isinstance(tags, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tags).__name__}")
    if tags.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"{name} must have an integer dtype, got {tags.dtype}")
    if shape is not None and tuple(tags.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(tags.shape)}")
    return tags.long()


def _check_allowed(allowed: torch.Tensor | None, k: int, device: torch.device) -> torch.Tensor:
    if allowed is None:
        if k != 4:
            raise ValueError(f"allowed must be given for K = {k} tags (the default is the 4-tag BMES grammar)")
        return bmes_allowed(device)
    if not isinstance(allowed, torch.Tensor) or allowed.dtype != torch.bool:
        raise TypeError("allowed must be a boolean torch.Tensor of shape (K, K)")
    if allowed.shape != (k, k):
        raise ValueError(f"allowed must have shape (K, K) = {(k, k)}, got {tuple(allowed.shape)}")
    return allowed.to(device)


# ------------------------------------------------------------------------------ the CRF


def log_partition(emissions: torch.Tensor, trans: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``log Z`` of each sequence by the forward algorithm (log space); shape ``(B,)``.

    ``emissions``: ``(B, T, K)``; ``trans``: ``(K, K)`` or ``(B, K, K)``, entry ``[i, j]`` the
    score of tag ``i`` followed by tag ``j``; ``mask``: optional boolean ``(B, T)``,
    left-aligned (True on the first ``length`` positions of each row).
    """
    batch, length, k = _check_emissions(emissions)
    trans3 = _check_trans(trans, batch, k, emissions)
    mask = _check_mask(mask, batch, length, emissions)
    alpha = emissions[:, 0]
    for t in range(1, length):
        # alpha_t[j] = logsumexp_i (alpha_{t-1}[i] + trans[i, j]) + e_t[j]
        nxt = torch.logsumexp(alpha.unsqueeze(2) + trans3, dim=1) + emissions[:, t]
        alpha = nxt if mask is None else torch.where(mask[:, t, None], nxt, alpha)
    return torch.logsumexp(alpha, dim=1)


def path_score(
    emissions: torch.Tensor, tags: torch.Tensor, trans: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``score(y) = sum_t e[t, y_t] + sum_t trans[y_t, y_{t+1}]`` of each row of ``tags``; shape ``(B,)``.

    Positions where ``mask`` is False are ignored (their tags may hold any value, e.g. -1).
    """
    batch, length, k = _check_emissions(emissions)
    trans3 = _check_trans(trans, batch, k, emissions)
    mask = _check_mask(mask, batch, length, emissions)
    tags = _check_tags(tags, "tags", (batch, length), k)
    if tags.device != emissions.device:
        raise ValueError(f"tags are on {tags.device} but emissions are on {emissions.device}")
    if mask is not None:
        tags = tags.masked_fill(~mask, 0)
    if bool(((tags < 0) | (tags >= k)).any()):
        raise ValueError(f"tags must lie in [0, {k - 1}] wherever mask is True")
    emit = emissions.gather(2, tags.unsqueeze(2)).squeeze(2)
    rows = torch.arange(batch, device=tags.device).unsqueeze(1) if trans3.shape[0] > 1 else 0
    hop = trans3[rows, tags[:, :-1], tags[:, 1:]]
    if mask is not None:
        emit = emit * mask
        hop = hop * mask[:, 1:]
    return emit.sum(1) + hop.sum(1)


def crf_nll(
    emissions: torch.Tensor,
    tags: torch.Tensor,
    trans: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    reduction: str = "mean",
) -> torch.Tensor:
    """Negative log-likelihood ``log Z - score(tags)`` of a linear-chain CRF.

    ``reduction``: ``"mean"`` (default, over the batch), ``"sum"`` or ``"none"`` (shape ``(B,)``).
    Differentiable in ``emissions`` and ``trans``; the gradient in ``trans[i, j]`` is the
    expected number of ``i -> j`` transitions minus the observed number.
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    nll = log_partition(emissions, trans, mask) - path_score(emissions, tags, trans, mask)
    if reduction == "mean":
        return nll.mean()
    if reduction == "sum":
        return nll.sum()
    return nll


@torch.no_grad()
def viterbi(
    emissions: torch.Tensor, trans: torch.Tensor, mask: torch.Tensor | None = None, *, pad: int = -1
) -> torch.Tensor:
    """The highest-scoring tag path of each sequence; ``LongTensor`` of shape ``(B, T)``.

    Positions where ``mask`` is False are filled with ``pad``. Ties are broken towards the
    lower tag index.
    """
    batch, length, k = _check_emissions(emissions)
    trans3 = _check_trans(trans, batch, k, emissions)
    mask = _check_mask(mask, batch, length, emissions)
    if not isinstance(pad, int) or isinstance(pad, bool):
        raise TypeError(f"pad must be an int, got {type(pad).__name__}")
    keep = torch.arange(k, device=emissions.device).expand(batch, k)
    score = emissions[:, 0]
    pointers = []
    for t in range(1, length):
        best, arg = (score.unsqueeze(2) + trans3).max(dim=1)
        nxt = best + emissions[:, t]
        if mask is not None:
            on = mask[:, t, None]
            nxt = torch.where(on, nxt, score)
            arg = torch.where(on, arg, keep)  # past the end: stay on the same tag
        score = nxt
        pointers.append(arg)
    tag = score.argmax(dim=1)
    path = [tag]
    for arg in reversed(pointers):
        tag = arg.gather(1, tag.unsqueeze(1)).squeeze(1)
        path.append(tag)
    out = torch.stack(path[::-1], dim=1)
    return out if mask is None else out.masked_fill(~mask, pad)


def glorot_uniform_transitions(
    num_tags: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """A ``K x K`` matrix from Keras' ``glorot_uniform``: ``U(-a, a)`` with ``a = sqrt(6 / (K + K))``.

    This is how bert4keras initialises its CRF transitions (``a = 0.866`` for 4 tags).
    """
    _checks.positive_int(num_tags, "num_tags")
    if device is None:
        device = generator.device if generator is not None else "cpu"
    limit = math.sqrt(6.0 / (2 * num_tags))
    u = torch.rand(num_tags, num_tags, generator=generator, dtype=dtype, device=device)
    return (2 * u - 1) * limit


class LinearChainCRF(torch.nn.Module):
    """A CRF layer holding the ``K x K`` transition matrix (glorot-uniform initialised).

    ``crf(emissions, tags, mask)`` returns the mean negative log-likelihood;
    ``crf.decode(emissions, mask)`` the Viterbi paths.
    """

    def __init__(
        self,
        num_tags: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.num_tags = _checks.positive_int(num_tags, "num_tags")
        init = glorot_uniform_transitions(num_tags, generator=generator, dtype=dtype, device=device)
        self.transitions = torch.nn.Parameter(init)

    def forward(
        self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor | None = None, *, reduction: str = "mean"
    ) -> torch.Tensor:
        return crf_nll(emissions, tags, self.transitions, mask, reduction=reduction)

    def decode(self, emissions: torch.Tensor, mask: torch.Tensor | None = None, *, pad: int = -1) -> torch.Tensor:
        return viterbi(emissions, self.transitions, mask, pad=pad)


def adam_param_groups(
    main_params: Iterable[torch.Tensor], head_params: Iterable[torch.Tensor], lr: float, mult: float
) -> list[dict]:
    """Two optimizer parameter groups: ``main_params`` at ``lr`` and ``head_params`` at ``mult * lr``.

    This is the clean PyTorch way to give a CRF layer its own learning rate. (Copying the
    Keras trick of storing ``phi = T / mult`` and using ``T = mult * phi`` gives the same
    steps only under scale-invariant optimizers such as Adam; under SGD it multiplies the
    step by ``mult**2``.)
    """
    main, head = list(main_params), list(head_params)
    for name, group in (("main_params", main), ("head_params", head)):
        if not group:
            raise ValueError(f"{name} must hold at least one tensor")
        for i, p in enumerate(group):
            if not isinstance(p, torch.Tensor):
                raise TypeError(f"{name}[{i}] must be a torch.Tensor, got {type(p).__name__}")
    if {id(p) for p in main} & {id(p) for p in head}:
        raise ValueError("main_params and head_params must not share a tensor")
    for name, value in (("lr", lr), ("mult", mult)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0 or math.isinf(value):
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return [{"params": main, "lr": float(lr)}, {"params": head, "lr": float(lr * mult)}]


# --------------------------------------------------------------------------- BMES tags


def bmes_allowed(device: torch.device | str | None = None) -> torch.Tensor:
    """The BMES grammar as a boolean ``4 x 4`` matrix: ``[i, j]`` True when tag ``j`` may follow ``i``.

    ``s`` and ``e`` end a word, so ``b`` or ``s`` follow; ``b`` and ``m`` are inside a word,
    so ``m`` or ``e`` follow.
    """
    allowed = torch.zeros(4, 4, dtype=torch.bool, device=device)
    allowed[S, [S, B]] = True
    allowed[E, [S, B]] = True
    allowed[B, [M, E]] = True
    allowed[M, [M, E]] = True
    return allowed


def bmes_tags(
    n: int,
    length: int,
    generator: torch.Generator | None = None,
    p_len: Sequence[float] = (0.35, 0.40, 0.15, 0.10),
    *,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``n`` rows of ``length`` BMES tags from words of random length (vectorised).

    Word lengths are i.i.d. with ``P(L = l) = p_len[l - 1]``; a word of length 1 is ``s``,
    longer words are ``b, m, ..., m, e``. Each row is a run of whole words cut at ``length``,
    so it starts at a word boundary but may end inside a word. Returns ``LongTensor (n, length)``.
    """
    _checks.positive_int(n, "n")
    _checks.positive_int(length, "length")
    try:
        probs = [float(p) for p in p_len]
    except (TypeError, ValueError) as exc:
        raise TypeError("p_len must be a sequence of numbers") from exc
    if not probs or any(not math.isfinite(p) or p < 0 for p in probs) or sum(probs) <= 0:
        raise ValueError(f"p_len must be non-negative numbers with a positive sum, got {p_len!r}")
    if device is None:
        device = generator.device if generator is not None else "cpu"
    p = torch.tensor(probs, dtype=torch.float64, device=device)
    # length words per row always cover length characters (every word has at least one)
    lengths = torch.multinomial(p.expand(n, -1), length, replacement=True, generator=generator) + 1  # (n, length)
    flat = lengths.reshape(-1)
    chars_len = torch.repeat_interleave(flat, flat)  # length of the word each character is in
    word_start = torch.cumsum(flat, 0) - flat
    pos = torch.arange(chars_len.numel(), device=device) - torch.repeat_interleave(word_start, flat)
    tags = torch.full_like(chars_len, M)
    tags = torch.where(pos == chars_len - 1, torch.full_like(tags, E), tags)
    tags = torch.where(pos == 0, torch.full_like(tags, B), tags)
    tags = torch.where(chars_len == 1, torch.full_like(tags, S), tags)
    row_total = lengths.sum(1)
    row_start = torch.cumsum(row_total, 0) - row_total
    index = row_start.unsqueeze(1) + torch.arange(length, device=device)
    return tags[index]


def word_starts(tags: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean ``(B, T)``: a word starts at ``t`` if ``t = 0``, the tag is ``s``/``b``, or the previous tag is ``s``/``e``.

    The rule segments any tag row, including ones with illegal transitions or rows that
    start on ``m``/``e``.
    """
    tags = _check_tags(tags, "tags", None, None)
    if tags.ndim != 2 or tags.shape[1] < 1:
        raise ValueError(f"tags must have shape (B, T) with T >= 1, got {tuple(tags.shape)}")
    starts = (tags == S) | (tags == B)
    prev = tags[:, :-1]
    starts[:, 1:] |= (prev == S) | (prev == E)
    starts[:, 0] = True
    if mask is not None:
        starts = starts & mask
    return starts


def bmes_words(tags: torch.Tensor | Sequence[int]) -> set[tuple[int, int]]:
    """The words of one tag row as ``(start, end)`` pairs (``end`` inclusive), by :func:`word_starts`' rule."""
    row = torch.as_tensor(tags)
    if row.ndim != 1 or row.numel() < 1:
        raise ValueError(f"tags must be one non-empty row of tags, got shape {tuple(row.shape)}")
    values = [int(v) for v in row.tolist()]
    words, start = set(), 0
    for t in range(1, len(values)):
        if values[t] in (S, B) or values[t - 1] in (S, E):
            words.add((start, t - 1))
            start = t
    words.add((start, len(values) - 1))
    return words


def _next_boundary(starts: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """For each position, the first position after it where a word starts or the sequence has ended."""
    length = starts.shape[1]
    boundary = starts if mask is None else starts | ~mask
    pos = torch.arange(length, device=starts.device).expand_as(starts)
    idx = torch.where(boundary, pos, torch.full_like(pos, length))
    suffix_min = idx.flip(1).cummin(1).values.flip(1)  # first boundary at or after t
    end = torch.full_like(suffix_min[:, :1], length)
    return torch.cat([suffix_min[:, 1:], end], dim=1)


def seg_f1(pred: torch.Tensor, gold: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Word-level F1 of a predicted segmentation, micro-averaged over the batch.

    A predicted word counts as correct when a gold word has the same start and end.
    ``pred`` and ``gold``: tag rows ``(B, T)``; ``mask``: optional left-aligned ``(B, T)``.
    """
    pred = _check_tags(pred, "pred", None, None)
    gold = _check_tags(gold, "gold", tuple(pred.shape), None)
    if pred.ndim != 2:
        raise ValueError(f"pred must have shape (B, T), got {tuple(pred.shape)}")
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != pred.shape:
            raise ValueError(f"mask must be a boolean tensor of shape {tuple(pred.shape)}")
        if not bool(mask[:, 0].all()):
            raise ValueError("mask must be True at position 0 of every row")
    sp, sg = word_starts(pred, mask), word_starts(gold, mask)
    same = sp & sg & (_next_boundary(sp, mask) == _next_boundary(sg, mask))
    total = int(sp.sum()) + int(sg.sum())
    return 2.0 * int(same.sum()) / total


def illegal_transition_rate(
    tags: torch.Tensor, allowed: torch.Tensor | None = None, mask: torch.Tensor | None = None
) -> float:
    """Fraction of adjacent tag pairs ``(y_t, y_{t+1})`` that the grammar ``allowed`` forbids (BMES by default)."""
    tags = _check_tags(tags, "tags", None, None)
    if tags.ndim != 2 or tags.shape[1] < 2:
        raise ValueError(f"tags must have shape (B, T) with T >= 2, got {tuple(tags.shape)}")
    k = allowed.shape[0] if isinstance(allowed, torch.Tensor) and allowed.ndim == 2 else 4
    allowed = _check_allowed(allowed, k, tags.device)
    if mask is not None and (
        not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != tags.shape
    ):
        raise ValueError(f"mask must be a boolean tensor of shape {tuple(tags.shape)}")
    pairs = torch.ones_like(tags[:, 1:], dtype=torch.bool) if mask is None else mask[:, 1:]
    safe = tags if mask is None else tags.masked_fill(~mask, 0)
    if bool(((safe < 0) | (safe >= k)).any()):
        raise ValueError(f"tags must lie in [0, {k - 1}]")
    bad = ~allowed[safe[:, :-1], safe[:, 1:]] & pairs
    return float(bad.sum()) / max(int(pairs.sum()), 1)


def _pairs(trans: torch.Tensor, allowed: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    _checks.tensor(trans, "trans")
    if trans.ndim < 2:
        raise ValueError(f"trans must have shape (..., K, K), got {tuple(trans.shape)}")
    k = trans.shape[-1]
    if trans.shape[-2] != k:
        raise ValueError(f"trans must be square in its last two dimensions, got {tuple(trans.shape)}")
    allowed = _check_allowed(allowed, k, trans.device)
    if not bool(allowed.any()) or bool(allowed.all()):
        raise ValueError("allowed must contain both allowed and forbidden transitions")
    return trans, allowed


def transition_structure_score(trans: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Fraction of the ``(row i, allowed j, forbidden f)`` triples with ``trans[i, j] > trans[i, f]``.

    For BMES there are 4 rows x 2 allowed x 2 forbidden = 16 triples; a matrix that ranks
    every allowed successor above every forbidden one scores 1, a random one 0.5 on
    average. ``trans``: ``(K, K)`` or a stack ``(..., K, K)``; returns a tensor of shape ``trans.shape[:-2]``.
    """
    trans, allowed = _pairs(trans, allowed)
    # triple[i, j, f] is counted when j is allowed after i and f is not
    triple = allowed.unsqueeze(2) & ~allowed.unsqueeze(1)
    if not bool(triple.any()):
        raise ValueError("allowed has no row with both an allowed and a forbidden successor")
    wins = trans.unsqueeze(-1) > trans.unsqueeze(-2)  # [..., i, j, f]: trans[i, j] > trans[i, f]
    return (wins & triple).sum(dim=(-3, -2, -1)).to(trans.dtype) / triple.sum()


def transition_separation(trans: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Mean allowed entry minus mean forbidden entry of ``trans`` (``(K, K)`` or ``(..., K, K)``)."""
    trans, allowed = _pairs(trans, allowed)
    a = allowed.to(trans.dtype)
    return (trans * a).sum(dim=(-2, -1)) / a.sum() - (trans * (1 - a)).sum(dim=(-2, -1)) / (1 - a).sum()
