"""Vector quantisation (VQ) with a selectable gradient estimator.

The forward pass of a VQ layer replaces each encoder output ``z`` by its nearest codebook
vector ``q``; the backward pass needs a surrogate for the zero/undefined Jacobian of that
rounding. This module holds the estimators of the chapter on the rotation trick:

- :func:`ste`: straight-through, ``z + sg[q - z]``: backward copies the gradient.
- :func:`generalized_ste`: ``sg[G] z + sg[q - G z]``: backward multiplies by ``G^T``.
- :func:`rotation_trick`: ``G = (|q|/|z|) R`` with ``R`` the rotation taking ``z/|z|`` to
  ``q/|q|`` in their common plane (Fifty et al., 2024), computed with inner products only.

and the pieces of a VQ layer usable in any training loop: :func:`nearest_code`,
:func:`perplexity` and :class:`VectorQuantizer` (codebook and commitment losses of VQ-VAE).

Conventions: vectors are the last dimension; any leading (batch) dimensions are allowed.
``sg`` is ``Tensor.detach``. All functions work on CPU and CUDA tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import _checks

__all__ = [
    "ESTIMATORS",
    "VQOutput",
    "VectorQuantizer",
    "angle_deg",
    "generalized_ste",
    "nearest_code",
    "perplexity",
    "rotation_matrix",
    "rotation_trick",
    "ste",
]

#: Names accepted by :class:`VectorQuantizer` for its gradient estimator.
ESTIMATORS = ("straight_through", "rotation")
_METRICS = ("euclidean", "cosine")


def _pair(z: object, q: object) -> tuple[torch.Tensor, torch.Tensor]:
    z = _checks.tensor(z, "z")
    q = _checks.tensor(q, "q")
    if z.ndim < 1:
        raise ValueError(f"z must have at least 1 dimension (the vector), got shape {tuple(z.shape)}")
    if q.shape != z.shape:
        raise ValueError(f"q must have the shape of z {tuple(z.shape)}, got {tuple(q.shape)}")
    if q.dtype != z.dtype or q.device != z.device:
        raise TypeError(f"q must have z's dtype and device ({z.dtype}, {z.device}), got ({q.dtype}, {q.device})")
    return z, q


def ste(z: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Straight-through estimator ``z + sg[q - z]``: value ``q``, gradient copied to ``z``."""
    z, q = _pair(z, q)
    return z + (q - z).detach()


def generalized_ste(z: torch.Tensor, q: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """Generalised straight-through ``sg[G] z + sg[q - G z]``.

    The value is ``q``; the Jacobian with respect to ``z`` is ``G``, so reverse mode sends an
    upstream gradient ``g`` to ``G^T g``. ``G`` has shape ``(d, d)`` (shared) or
    ``(..., d, d)`` matching the leading dimensions of ``z``.
    """
    z, q = _pair(z, q)
    G = _checks.tensor(G, "G")
    d = z.shape[-1]
    if G.ndim < 2 or G.shape[-2:] != (d, d):
        raise ValueError(f"G must end in ({d}, {d}) to act on z of shape {tuple(z.shape)}, got {tuple(G.shape)}")
    if G.ndim > 2 and G.shape[:-2] != z.shape[:-1]:
        raise ValueError(f"G's leading shape {tuple(G.shape[:-2])} must match z's {tuple(z.shape[:-1])}")
    if G.dtype != z.dtype or G.device != z.device:
        raise TypeError(f"G must have z's dtype and device ({z.dtype}, {z.device}), got ({G.dtype}, {G.device})")
    Gz = torch.einsum("...ij,...j->...i", G.detach(), z)
    return Gz + (q - Gz).detach()


def rotation_matrix(z: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The explicit ``d x d`` rotation ``R = I + 2 q~ z~^T - 2 w w^T`` taking ``z/|z|`` to ``q/|q|``.

    Here ``q~ = q/|q|``, ``z~ = z/|z|`` and ``w = (q~ + z~)/|q~ + z~|``. ``R`` rotates the
    plane spanned by ``z`` and ``q`` by their angle and is the identity on its orthogonal
    complement. Meant for tests and small examples (it builds ``d x d`` matrices); accepts
    leading batch dimensions. Raises ``ValueError`` if a ``z`` or ``q`` is zero or a pair is
    antipodal (``q~ = -z~``), where the rotation is not unique and the formula is 0/0.
    """
    z, q = _pair(z, q)
    zn, qn = z.norm(dim=-1, keepdim=True), q.norm(dim=-1, keepdim=True)
    if bool((zn == 0).any()) or bool((qn == 0).any()):
        raise ValueError("z and q must be nonzero vectors: the rotation between them is undefined at 0")
    zt, qt = z / zn, q / qn
    s = qt + zt
    sn = s.norm(dim=-1, keepdim=True)
    if bool((sn <= 1e-12).any()):
        raise ValueError("z and q must not be antipodal (q/|q| = -z/|z|): the rotation is not unique there")
    w = s / sn
    d = z.shape[-1]
    eye = torch.eye(d, dtype=z.dtype, device=z.device)
    return eye + 2 * qt.unsqueeze(-1) * zt.unsqueeze(-2) - 2 * w.unsqueeze(-1) * w.unsqueeze(-2)


def rotation_trick(z: torch.Tensor, q: torch.Tensor, *, eps: float = 1e-6, antipodal_tol: float = 1e-6) -> torch.Tensor:
    """Rotation trick: value ``q``; backward sends ``g`` to ``(|q|/|z|) R^T g``.

    ``R`` is :func:`rotation_matrix`, never formed: with stop-gradients on ``z~``, ``q~``,
    ``w`` and the ratio ``|q|/|z|`` (but not on the ``z`` being multiplied),
    ``G z = (|q|/|z|) (z - 2 (w.z) w + 2 (z~.z) q~)``. The result is
    ``G z + sg[q - G z]``, so the value is ``q`` to round-off even where ``G z`` is not.

    Guards (the official code instead adds ``eps`` to the norms):

    - norms are clamped below at ``eps``;
    - where ``1 + cos(theta) < antipodal_tol`` (``z`` and ``q`` nearly antipodal, ``w`` is
      0/0) or ``|z| < eps`` or ``|q| < eps``, that row falls back to :func:`ste`.

    Without the guard an antipodal pair gives NaN in the forward pass.
    """
    z, q = _pair(z, q)
    for name, value in (("eps", eps), ("antipodal_tol", antipodal_tol)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
            raise ValueError(f"{name} must be a positive float, got {value!r}")
    with torch.no_grad():
        zn = z.norm(dim=-1, keepdim=True)
        qn = q.norm(dim=-1, keepdim=True)
        zt = z / zn.clamp_min(eps)
        qt = q / qn.clamp_min(eps)
        one_plus_cos = 1 + (zt * qt).sum(-1, keepdim=True)
        singular = (one_plus_cos < antipodal_tol) | (zn < eps) | (qn < eps)
        s = qt + zt
        w = s / s.norm(dim=-1, keepdim=True).clamp_min(eps)
        ratio = qn / zn.clamp_min(eps)
        # singular rows: G = I (straight-through)
        w = torch.where(singular, torch.zeros_like(w), w)
        zt = torch.where(singular, torch.zeros_like(zt), zt)
        ratio = torch.where(singular, torch.ones_like(ratio), ratio)
    Rz = z - 2 * (w * z).sum(-1, keepdim=True) * w + 2 * (zt * z).sum(-1, keepdim=True) * qt
    Gz = ratio * Rz
    return Gz + (q - Gz).detach()


def angle_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Angle in degrees between ``a`` and ``b`` along the last dimension (acos clamped to [-1, 1])."""
    a, b = _pair(a, b)
    cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))
    return torch.rad2deg(torch.acos(cos.clamp(-1.0, 1.0)))


def nearest_code(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest codebook row (Euclidean) for each vector of ``z``; shape ``z.shape[:-1]``."""
    z = _checks.tensor(z, "z")
    codebook = _checks.tensor(codebook, "codebook", ndim=2)
    if z.ndim < 1 or z.shape[-1] != codebook.shape[1]:
        raise ValueError(f"z must end in the codebook's dimension {codebook.shape[1]}, got shape {tuple(z.shape)}")
    if codebook.dtype != z.dtype or codebook.device != z.device:
        raise TypeError(f"codebook must have z's dtype and device ({z.dtype}, {z.device})")
    flat = z.reshape(-1, z.shape[-1])
    # |z|^2 - 2 z.e + |e|^2; |z|^2 does not change the argmin
    dist = codebook.square().sum(1) - 2 * flat @ codebook.T
    return dist.argmin(1).reshape(z.shape[:-1])


def perplexity(indices: torch.Tensor, num_codes: int) -> float:
    """``exp`` of the entropy of the empirical code distribution (1 = one code, ``num_codes`` = uniform)."""
    indices = _checks.tensor(indices, "indices", floating=False)
    _checks.positive_int(num_codes, "num_codes")
    if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
        raise TypeError(f"indices must be an integer tensor, got {indices.dtype}")
    if indices.numel() == 0:
        raise ValueError("indices must not be empty")
    if int(indices.min()) < 0 or int(indices.max()) >= num_codes:
        raise ValueError(f"indices must lie in [0, {num_codes}), got [{int(indices.min())}, {int(indices.max())}]")
    p = torch.bincount(indices.reshape(-1), minlength=num_codes).double() / indices.numel()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


@dataclass
class VQOutput:
    """What :class:`VectorQuantizer` returns.

    ``z_q`` goes to the decoder (value ``q``, gradient by the chosen estimator);
    ``codebook_loss = mean |q - sg z|^2`` trains the codes, ``commitment_loss =
    mean |z - sg q|^2`` pulls the encoder to its codes (sums over the vector, means over
    the rest); ``loss = beta * codebook_loss + gamma * commitment_loss``.
    """

    z_q: torch.Tensor
    indices: torch.Tensor
    codebook_loss: torch.Tensor
    commitment_loss: torch.Tensor
    loss: torch.Tensor


class VectorQuantizer(torch.nn.Module):
    """Nearest-code VQ layer of VQ-VAE with a selectable gradient estimator.

    Args:
        num_codes: codebook size ``K``.
        dim: vector dimension ``d``.
        estimator: ``"straight_through"`` or ``"rotation"`` (see :func:`rotation_trick`).
        beta: weight of the codebook loss ``|q - sg z|^2``.
        gamma: weight of the commitment loss ``|z - sg q|^2``.
        metric: ``"euclidean"`` (plain VQ) or ``"cosine"`` (``z`` and the codes are
            normalised to the unit sphere before the search, and ``q`` is a unit vector).
        init_scale: the codebook starts as ``init_scale * N(0, I)``.
        generator: optional ``torch.Generator`` for the initial codebook.

    The codebook is an ``nn.Parameter`` trained only by the codebook loss: both estimators
    pass no gradient from the decoder to ``q``.
    """

    def __init__(
        self,
        num_codes: int,
        dim: int,
        *,
        estimator: str = "straight_through",
        beta: float = 1.0,
        gamma: float = 0.25,
        metric: str = "euclidean",
        init_scale: float = 1.0,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        _checks.positive_int(num_codes, "num_codes")
        _checks.positive_int(dim, "dim")
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
        if metric not in _METRICS:
            raise ValueError(f"metric must be one of {_METRICS}, got {metric!r}")
        for name, value in (("beta", beta), ("gamma", gamma), ("init_scale", init_scale)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative float, got {value!r}")
        self.num_codes, self.dim = num_codes, dim
        self.estimator, self.metric = estimator, metric
        self.beta, self.gamma = float(beta), float(gamma)
        gen_device = generator.device if generator is not None else device
        codes = torch.randn(num_codes, dim, generator=generator, dtype=dtype, device=gen_device)
        self.codebook = torch.nn.Parameter((init_scale * codes).to(device=device))

    def codes(self) -> torch.Tensor:
        """The codebook as the search sees it (unit rows for the cosine metric)."""
        if self.metric == "cosine":
            return torch.nn.functional.normalize(self.codebook, dim=-1)
        return self.codebook

    def forward(self, z: torch.Tensor) -> VQOutput:
        z = _checks.tensor(z, "z")
        if z.ndim < 1 or z.shape[-1] != self.dim:
            raise ValueError(f"z must end in dimension {self.dim}, got shape {tuple(z.shape)}")
        if self.metric == "cosine":
            z = torch.nn.functional.normalize(z, dim=-1)
        codes = self.codes()
        indices = nearest_code(z.detach(), codes.detach())
        q = codes[indices]
        if self.estimator == "rotation":
            z_q = rotation_trick(z, q.detach())
        else:
            z_q = ste(z, q.detach())
        codebook_loss = (q - z.detach()).square().sum(-1).mean()
        commitment_loss = (z - q.detach()).square().sum(-1).mean()
        loss = self.beta * codebook_loss + self.gamma * commitment_loss
        return VQOutput(z_q, indices, codebook_loss, commitment_loss, loss)

    def extra_repr(self) -> str:
        return (
            f"num_codes={self.num_codes}, dim={self.dim}, estimator={self.estimator!r}, "
            f"metric={self.metric!r}, beta={self.beta}, gamma={self.gamma}"
        )
