"""A small top-k Mixture-of-Experts (MoE) layer and its load-balancing tools.

An MoE layer computes ``y = sum_{i in argtop_k(rho + b)} rho_i e_i(x)``: a router gives each
token a score ``rho_i`` per expert, the ``k`` experts with the largest (optionally biased)
scores process the token, and their outputs are mixed with the *unbiased* scores as weights.

Load statistics (conventions of the chapter "MoE load balancing"):

- ``p = rho / sum(rho)`` (or ``softmax(logits)``) is the router's distribution over experts;
  ``P = E[p]`` its mean over the tokens, a smooth stand-in for the load.
- ``f_i = 1/k`` if expert ``i`` is selected for a token, else ``0``, so each row of ``f``
  sums to 1; ``F = E[f]`` is the actual load distribution. Perfect balance is ``F_i = 1/n``.
  (DeepSeek-style papers use ``n F_i``, balanced at 1.)
- ``max_violation(F) = n max_i F_i - 1`` (0 at perfect balance).

Balancing tools:

- :func:`aux_loss`: the GShard/Switch auxiliary loss ``n * sum_i sg[F_i] P_i``.
- :func:`ste_balance_loss`: any balance objective written in ``F``, evaluated at the
  straight-through value ``P + sg[F - P]`` (its value is that of ``F``, its gradient flows
  through ``P``): ``form="squared"`` is ``1/2 ||F - Q||^2``, ``form="entropy"`` is
  ``sum F log F``.
- :func:`bias_update`: the auxiliary-loss-free rule ``b <- b - alpha * u(F - Q)`` with
  ``u`` the sign, the RMS-normalised or the plain difference.
- :func:`uniform_router_floor`: the batch-noise floor of ``max_violation`` for a router
  that picks ``k`` distinct experts uniformly at random.

and :class:`MoE`, a layer usable in any training loop (softmax or sigmoid router, MLP
experts, sparse top-k dispatch, optional selection bias). ``sg`` is ``Tensor.detach``.
All functions work on CPU and CUDA tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import _checks

__all__ = [
    "BIAS_RULES",
    "NORMALIZATIONS",
    "SCORE_FUNCTIONS",
    "MoE",
    "MoEOutput",
    "aux_loss",
    "bias_update",
    "load_stats",
    "max_violation",
    "route_topk",
    "router_probs",
    "ste",
    "ste_balance_loss",
    "topk_indicator",
    "uniform_router_floor",
]

#: How :func:`load_stats` turns router outputs into the per-token distribution ``p``.
NORMALIZATIONS = ("softmax", "sum", None)
#: Update rules of :func:`bias_update`.
BIAS_RULES = ("sign", "rms", "sgd")
#: Score functions of :class:`MoE`'s router.
SCORE_FUNCTIONS = ("softmax", "sigmoid")


def _k(k: object, n: int) -> int:
    k = _checks.positive_int(k, "k")
    if k > n:
        raise ValueError(f"k must not exceed the number of experts n = {n}, got k = {k}")
    return k


def _bias(bias: object, scores: torch.Tensor) -> torch.Tensor | None:
    if bias is None:
        return None
    bias = _checks.tensor(bias, "bias", ndim=1)
    if bias.shape[0] != scores.shape[-1]:
        raise ValueError(f"bias must have one entry per expert ({scores.shape[-1]}), got shape {tuple(bias.shape)}")
    if bias.device != scores.device:
        raise TypeError(f"bias must be on the device of scores ({scores.device}), got {bias.device}")
    return bias


def ste(forward_value: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    """Straight-through estimator ``surrogate + sg[forward_value - surrogate]``.

    The result has the value of ``forward_value`` and the gradient of ``surrogate``.
    """
    forward_value = _checks.tensor(forward_value, "forward_value")
    surrogate = _checks.tensor(surrogate, "surrogate")
    if forward_value.shape != surrogate.shape:
        raise ValueError(
            f"forward_value and surrogate must have the same shape, got {tuple(forward_value.shape)} "
            f"and {tuple(surrogate.shape)}"
        )
    return surrogate + (forward_value - surrogate).detach()


def route_topk(scores: torch.Tensor, k: int, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Indices ``argtop_k(scores + bias)`` of the selected experts, shape ``[T, k]`` (long).

    ``scores`` is ``[T, n]`` (logits or scores: any monotone map of them selects the same
    experts). ``bias`` (``[n]``) only changes the selection.
    """
    scores = _checks.tensor(scores, "scores", ndim=2)
    k = _k(k, scores.shape[1])
    bias = _bias(bias, scores)
    ranked = scores.detach() if bias is None else scores.detach() + bias.detach()
    return ranked.topk(k, dim=-1).indices


def topk_indicator(indices: torch.Tensor, n: int, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``f`` of shape ``[T, n]``: ``1/k`` at the ``k`` selected experts of each token, else 0."""
    if not isinstance(indices, torch.Tensor) or indices.dtype != torch.long:
        raise TypeError("indices must be a torch.long tensor, e.g. from route_topk")
    if indices.ndim != 2:
        raise ValueError(f"indices must have shape [T, k], got {tuple(indices.shape)}")
    n = _checks.positive_int(n, "n")
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= n):
        raise ValueError(f"indices must lie in [0, {n}), got values in [{int(indices.min())}, {int(indices.max())}]")
    k = indices.shape[1]
    f = torch.zeros(indices.shape[0], n, dtype=dtype, device=indices.device)
    return f.scatter_(1, indices, 1.0 / k)


def router_probs(scores: torch.Tensor, normalize: str | None = "softmax") -> torch.Tensor:
    """Per-token router distribution ``p`` from ``[T, n]`` router outputs.

    ``normalize="softmax"``: ``scores`` are logits, ``p = softmax(scores)``.
    ``"sum"``: ``scores`` are non-negative scores ``rho``, ``p = rho / sum(rho)``.
    ``None``: ``p = scores`` unchanged (e.g. sigmoid scores, which do not sum to 1).
    """
    scores = _checks.tensor(scores, "scores", ndim=2)
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    if normalize == "softmax":
        return scores.softmax(dim=-1)
    if normalize == "sum":
        return scores / scores.sum(dim=-1, keepdim=True)
    return scores


def load_stats(
    scores: torch.Tensor,
    k: int,
    bias: torch.Tensor | None = None,
    normalize: str | None = "softmax",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(P, F)``: the mean router distribution and the mean top-k indicator over the tokens.

    ``P`` (shape ``[n]``) is differentiable in ``scores``; ``F`` (shape ``[n]``, sums to 1)
    is piecewise constant and returned detached. Selection uses ``scores + bias``; see
    :func:`router_probs` for ``normalize``.
    """
    p = router_probs(scores, normalize)
    idx = route_topk(scores, k, bias)
    f = topk_indicator(idx, scores.shape[1], dtype=scores.dtype)
    return p.mean(dim=0), f.mean(dim=0)


def max_violation(F: torch.Tensor) -> float:
    """MaxVio ``n max_i F_i - 1`` of a load distribution ``F`` (summing to 1); 0 is perfect balance."""
    F = _checks.tensor(F, "F", ndim=1)
    return float(F.numel() * F.max() - 1)


def aux_loss(P: torch.Tensor, F: torch.Tensor) -> torch.Tensor:
    """The GShard/Switch auxiliary balance loss ``n * sum_i sg[F_i] P_i``.

    Its gradient equals that of ``n/2 ||P + sg[F - P] - 1/n||^2`` when ``P`` sums to 1;
    its *value* is not a measure of balance (it can be below 1 for a lopsided load).
    """
    P, F = _pn(P, F)
    return P.numel() * (F.detach() * P).sum()


def _pn(P: object, F: object) -> tuple[torch.Tensor, torch.Tensor]:
    P = _checks.tensor(P, "P", ndim=1)
    F = _checks.tensor(F, "F", ndim=1)
    if P.shape != F.shape:
        raise ValueError(f"P and F must have the same shape [n], got {tuple(P.shape)} and {tuple(F.shape)}")
    if P.device != F.device:
        raise TypeError(f"P and F must be on the same device, got {P.device} and {F.device}")
    return P, F


def _target(target: object, F: torch.Tensor) -> torch.Tensor:
    if target is None:
        return torch.full_like(F, 1.0 / F.numel())
    target = _checks.tensor(target, "target", ndim=1)
    if target.shape != F.shape:
        raise ValueError(f"target must have shape {tuple(F.shape)}, got {tuple(target.shape)}")
    return target.to(device=F.device, dtype=F.dtype)


def ste_balance_loss(
    P: torch.Tensor,
    F: torch.Tensor,
    *,
    form: str = "squared",
    target: torch.Tensor | None = None,
    eps: float = 0.0,
) -> torch.Tensor:
    """A balance objective in ``F``, evaluated at the straight-through ``F_ste = P + sg[F - P]``.

    ``form="squared"``: ``1/2 ||F_ste - Q||^2`` with ``Q = target`` (default uniform 1/n).
    ``form="entropy"``: negative entropy ``sum_i F_ste_i log F_ste_i`` (``target`` unused);
    ``eps > 0`` clamps ``F_ste`` below at ``eps`` in the forward value (an expert with no
    load makes ``log F`` infinite otherwise). ``P`` need not sum to 1.
    """
    P, F = _pn(P, F)
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps >= 0:
        raise ValueError(f"eps must be a non-negative float, got {eps!r}")
    forward = F.detach()
    if form == "squared":
        return 0.5 * (ste(forward, P) - _target(target, F)).square().sum()
    if form == "entropy":
        if target is not None:
            raise ValueError("target is not used by form='entropy'")
        if eps > 0:
            forward = forward.clamp_min(eps)
        F_ste = ste(forward, P)
        return (F_ste * F_ste.log()).sum()
    raise ValueError(f"form must be 'squared' or 'entropy', got {form!r}")


def bias_update(
    b: torch.Tensor,
    F: torch.Tensor,
    alpha: float,
    rule: str = "sign",
    *,
    target: torch.Tensor | None = None,
    eps: float = 1e-12,
) -> torch.Tensor:
    """One loss-free balancing step: ``b - alpha * u(F - Q)``, returned as a new tensor.

    ``rule="sign"``: ``u = sign`` (DeepSeek-V3); ``"rms"``: ``u(v) = v / (RMS(v) + eps)``;
    ``"sgd"``: ``u(v) = v`` (the gradient of ``1/2 ||b + sg[F - b] - Q||^2`` in ``b``).
    ``Q = target`` (default uniform). The bias must be used for selection only (``argtop_k``
    of ``scores + b``). Call it *after* the model's own update, with the same batch's ``F``.
    """
    b = _checks.tensor(b, "b", ndim=1)
    F = _checks.tensor(F, "F", ndim=1)
    if b.shape != F.shape:
        raise ValueError(f"b and F must have the same shape [n], got {tuple(b.shape)} and {tuple(F.shape)}")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not (alpha > 0 and math.isfinite(alpha)):
        raise ValueError(f"alpha must be a positive finite float, got {alpha!r}")
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps >= 0:
        raise ValueError(f"eps must be a non-negative float, got {eps!r}")
    v = F.detach().to(device=b.device, dtype=b.dtype) - _target(target, F).to(device=b.device, dtype=b.dtype)
    if rule == "sign":
        step = v.sign()
    elif rule == "rms":
        step = v / (v.square().mean().sqrt() + eps)
    elif rule == "sgd":
        step = v
    else:
        raise ValueError(f"rule must be one of {BIAS_RULES}, got {rule!r}")
    return b.detach() - alpha * step


def uniform_router_floor(
    T: int,
    n: int,
    k: int,
    trials: int = 200,
    generator: torch.Generator | None = None,
    *,
    device: torch.device | str | None = None,
) -> tuple[float, float]:
    """``(mean, q95)`` of :func:`max_violation` over batches of ``T`` tokens of an ideal router.

    The ideal router sends each token to ``k`` distinct experts drawn uniformly at random, so
    its expected load is exactly balanced: whatever MaxVio it shows is batch noise. A
    trained router cannot be expected to do better on a fresh batch. ``trials`` batches are
    drawn (from ``generator``, whose device is used unless ``device`` is given).
    """
    T = _checks.positive_int(T, "T")
    n = _checks.positive_int(n, "n")
    k = _k(k, n)
    trials = _checks.positive_int(trials, "trials")
    if trials < 20:
        raise ValueError(f"trials must be at least 20 for a 95th percentile, got {trials}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    dev = torch.device(device) if device is not None else (generator.device if generator is not None else None)
    dev = dev or torch.device("cpu")
    chunk = max(1, min(trials, 2**24 // (T * n)))
    values = []
    for start in range(0, trials, chunk):
        m = min(chunk, trials - start)
        noise = torch.rand(m, T, n, generator=generator, device=dev)
        idx = noise.topk(k, dim=-1).indices
        counts = torch.zeros(m, n, device=dev).scatter_add_(1, idx.reshape(m, -1), torch.ones(m, T * k, device=dev))
        values.append(n * counts.max(dim=1).values / (k * T) - 1)
    v = torch.cat(values).double()
    return float(v.mean()), float(v.quantile(0.95))


@dataclass
class MoEOutput:
    """What :class:`MoE` returns.

    ``y``: the layer output ``[T, d]``. ``indices``: selected experts ``[T, k]``.
    ``weights``: their mixing weights ``[T, k]``. ``P``: mean router distribution ``[n]``
    (differentiable). ``F``: load distribution ``[n]`` (detached, sums to 1).
    """

    y: torch.Tensor
    indices: torch.Tensor
    weights: torch.Tensor
    P: torch.Tensor
    F: torch.Tensor

    @property
    def max_violation(self) -> float:
        """:func:`max_violation` of this batch's load."""
        return max_violation(self.F)


class MoE(torch.nn.Module):
    """Top-k MoE layer: ``y = sum_{i in argtop_k(rho + b)} w_i e_i(x)``.

    - router: a linear map ``d -> n`` (no bias); ``score="softmax"`` gives
      ``rho = softmax(x W)`` (``P`` is its mean), ``score="sigmoid"`` gives
      ``rho = sigmoid(x W)`` (``P`` is the mean of ``rho / sum rho``).
    - experts: ``n`` two-layer MLPs ``d -> hidden -> d`` (GELU), or linear maps
      ``d -> d`` if ``hidden=None``.
    - selection bias ``b`` (buffer ``bias``, zeros): only changes which experts are selected;
      :meth:`update_bias` applies :func:`bias_update`.
    - ``renormalize=True`` rescales the ``k`` selected weights to sum to 1.

    Dispatch is sparse (each expert sees only its tokens); :meth:`dense_forward` computes
    every expert on every token and masks, as a reference.
    """

    def __init__(
        self,
        d: int,
        n: int,
        k: int,
        hidden: int | None = None,
        *,
        score: str = "softmax",
        renormalize: bool = False,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.d = _checks.positive_int(d, "d")
        self.n = _checks.positive_int(n, "n")
        self.k = _k(k, n)
        if hidden is not None:
            _checks.positive_int(hidden, "hidden")
        if score not in SCORE_FUNCTIONS:
            raise ValueError(f"score must be one of {SCORE_FUNCTIONS}, got {score!r}")
        if not isinstance(renormalize, bool):
            raise TypeError(f"renormalize must be a bool, got {type(renormalize).__name__}")
        self.hidden, self.score, self.renormalize = hidden, score, renormalize
        if generator is not None and device is None:
            device = generator.device
        opts = {"device": device, "dtype": dtype}

        def init(*shape: int, fan_in: int) -> torch.nn.Parameter:
            w = torch.randn(*shape, generator=generator, **opts) / math.sqrt(fan_in)
            return torch.nn.Parameter(w)

        self.router = init(d, n, fan_in=d)
        if hidden is None:
            self.w_in = init(n, d, d, fan_in=d)
            self.w_out = None
        else:
            self.w_in = init(n, d, hidden, fan_in=d)
            self.w_out = init(n, hidden, d, fan_in=hidden)
        self.register_buffer("bias", torch.zeros(n, **opts))

    def expert(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Output of expert ``i`` on tokens ``x`` ``[m, d]``."""
        h = x @ self.w_in[i]
        if self.w_out is None:
            return h
        return torch.nn.functional.gelu(h) @ self.w_out[i]

    def scores(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rho, p)``: router scores and the per-token distribution, each ``[T, n]``."""
        x = self._x(x)
        logits = x @ self.router
        if self.score == "softmax":
            rho = logits.softmax(dim=-1)
            return rho, rho
        rho = torch.sigmoid(logits)
        return rho, rho / rho.sum(dim=-1, keepdim=True)

    def _x(self, x: object) -> torch.Tensor:
        x = _checks.tensor(x, "x", ndim=2)
        if x.shape[1] != self.d:
            raise ValueError(f"x must have shape [T, {self.d}], got {tuple(x.shape)}")
        if x.device != self.router.device or x.dtype != self.router.dtype:
            raise TypeError(
                f"x must have the layer's dtype and device ({self.router.dtype}, {self.router.device}), "
                f"got ({x.dtype}, {x.device})"
            )
        return x

    def _route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        rho, p = self.scores(x)
        idx = route_topk(rho, self.k, self.bias)
        w = rho.gather(1, idx)
        if self.renormalize:
            w = w / w.sum(dim=-1, keepdim=True)
        F = topk_indicator(idx, self.n, dtype=rho.dtype).mean(dim=0)
        return idx, w, p.mean(dim=0), F

    def forward(self, x: torch.Tensor, *, dense: bool = False) -> MoEOutput:
        """Top-k forward pass on tokens ``x`` ``[T, d]``.

        ``dense=False`` dispatches each token to its ``k`` experts only; ``dense=True`` runs
        every expert on every token and masks (same result; faster for a few tiny experts).
        """
        if not isinstance(dense, bool):
            raise TypeError(f"dense must be a bool, got {type(dense).__name__}")
        idx, w, P, F = self._route(x)
        if dense:
            return MoEOutput(y=self._mix(x, idx, w), indices=idx, weights=w, P=P, F=F)
        y = torch.zeros_like(x)
        token = torch.arange(x.shape[0], device=x.device).unsqueeze(1).expand_as(idx)
        for i in range(self.n):
            sel = idx == i
            if not bool(sel.any()):
                continue
            t = token[sel]
            y = y.index_add(0, t, w[sel].unsqueeze(1) * self.expert(i, x[t]))
        return MoEOutput(y=y, indices=idx, weights=w, P=P, F=F)

    def dense_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reference output: every expert on every token, masked to the selected ones."""
        idx, w, _, _ = self._route(x)
        return self._mix(x, idx, w)

    def _mix(self, x: torch.Tensor, idx: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        gate = torch.zeros(x.shape[0], self.n, dtype=x.dtype, device=x.device).scatter(1, idx, w)
        outs = torch.stack([self.expert(i, x) for i in range(self.n)], dim=1)  # [T, n, d]
        return (gate.unsqueeze(-1) * outs).sum(dim=1)

    @torch.no_grad()
    def update_bias(self, F: torch.Tensor, alpha: float, rule: str = "sign", **kwargs: object) -> None:
        """In place: ``bias <- bias_update(bias, F, alpha, rule, **kwargs)``."""
        self.bias.copy_(bias_update(self.bias, F, alpha, rule, **kwargs))
