import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue import vq

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
F64 = torch.float64


def _pair(d, seed, device="cpu", batch=()):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(*batch, d, generator=g, dtype=F64).to(device)
    q = 0.3 * torch.randn(*batch, d, generator=g, dtype=F64).to(device)
    return z, q


def _backward(fn, z, q, g):
    z = z.clone().requires_grad_(True)
    out = fn(z, q)
    (out * g).sum().backward()
    return out.detach(), z.grad


# ---------------------------------------------------------------- rotation_matrix


@settings(max_examples=30, deadline=None)
@given(d=st.integers(2, 12), seed=st.integers(0, 10_000))
def test_rotation_matrix_maps_z_to_q_and_is_a_proper_rotation(d, seed):
    z, q = _pair(d, seed)
    R = vq.rotation_matrix(z, q)
    zt, qt = z / z.norm(), q / q.norm()
    torch.testing.assert_close(R @ zt, qt, rtol=0, atol=1e-12)
    torch.testing.assert_close(R.T @ R, torch.eye(d, dtype=F64), rtol=0, atol=1e-12)
    assert abs(float(torch.linalg.det(R)) - 1) < 1e-10
    # identity on the orthogonal complement of span{z, q}
    v = torch.randn(d, generator=torch.Generator().manual_seed(seed + 1), dtype=F64)
    basis, _ = torch.linalg.qr(torch.stack([zt, qt], 1))
    v_perp = v - basis @ (basis.T @ v)
    torch.testing.assert_close(R @ v_perp, v_perp, rtol=0, atol=1e-12)
    # norm preserving
    torch.testing.assert_close((R @ v).norm(), v.norm(), rtol=1e-12, atol=0)


def test_rotation_matrix_is_the_plane_rotation_in_3d():
    theta = 2.0
    z = torch.tensor([1.0, 0.0, 0.0], dtype=F64)
    q = torch.tensor([math.cos(theta), math.sin(theta), 0.0], dtype=F64)
    c, s = math.cos(theta), math.sin(theta)
    expected = torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=F64)
    torch.testing.assert_close(vq.rotation_matrix(z, q), expected, rtol=0, atol=1e-14)


def test_rotation_matrix_batched_matches_single():
    z, q = _pair(5, 3, batch=(4,))
    R = vq.rotation_matrix(z, q)
    assert R.shape == (4, 5, 5)
    for i in range(4):
        torch.testing.assert_close(R[i], vq.rotation_matrix(z[i], q[i]))


def test_rotation_matrix_rejects_antipodal_and_zero():
    z = torch.tensor([1.0, 0.0, 0.0], dtype=F64)
    with pytest.raises(ValueError, match="antipodal"):
        vq.rotation_matrix(z, -0.1 * z)
    with pytest.raises(ValueError, match="nonzero"):
        vq.rotation_matrix(z, torch.zeros(3, dtype=F64))


# ---------------------------------------------------------------- rotation_trick


@pytest.mark.parametrize("device", DEVICES)
def test_rotation_trick_value_is_q_and_gradient_is_the_transpose(device):
    z, q = _pair(16, 0, device, batch=(6,))
    g = torch.randn(6, 16, generator=torch.Generator().manual_seed(9), dtype=F64).to(device)
    out, grad = _backward(vq.rotation_trick, z, q, g)
    torch.testing.assert_close(out, q, rtol=0, atol=1e-14)
    R = vq.rotation_matrix(z, q)
    lam = (q.norm(dim=-1) / z.norm(dim=-1))[:, None]
    expected = lam * torch.einsum("bji,bj->bi", R, g)  # (|q|/|z|) R^T g
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-12)
    wrong = lam * torch.einsum("bij,bj->bi", R, g)  # (|q|/|z|) R g
    assert float((grad - wrong).norm()) > 1e-3
    assert grad.device.type == device


def test_rotation_trick_equals_generalized_ste_with_G():
    z, q = _pair(7, 4, batch=(3,))
    g = torch.randn(3, 7, generator=torch.Generator().manual_seed(2), dtype=F64)
    G = (q.norm(dim=-1) / z.norm(dim=-1))[:, None, None] * vq.rotation_matrix(z, q)
    _, grad_rot = _backward(vq.rotation_trick, z, q, g)
    out, grad_gen = _backward(lambda a, b: vq.generalized_ste(a, b, G), z, q, g)
    torch.testing.assert_close(out, q, rtol=0, atol=1e-14)
    torch.testing.assert_close(grad_rot, grad_gen, rtol=0, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(d=st.integers(2, 10), seed=st.integers(0, 10_000))
def test_rotation_trick_gradient_geometry(d, seed):
    z, q = _pair(d, seed)
    g = torch.randn(d, generator=torch.Generator().manual_seed(seed + 7), dtype=F64)
    _, gz = _backward(vq.rotation_trick, z, q, g)
    # norm ratio |q|/|z|, angle to the vector preserved, angle between gradients <= theta
    torch.testing.assert_close(gz.norm() / g.norm(), q.norm() / z.norm(), rtol=1e-10, atol=0)
    torch.testing.assert_close(vq.angle_deg(gz, z), vq.angle_deg(g, q), rtol=0, atol=1e-6)
    assert float(vq.angle_deg(gz, g)) <= float(vq.angle_deg(z, q)) + 1e-6


def test_straight_through_gradient_is_identity():
    z, q = _pair(5, 1, batch=(3,))
    g = torch.randn(3, 5, generator=torch.Generator().manual_seed(5), dtype=F64)
    out, grad = _backward(vq.ste, z, q, g)
    torch.testing.assert_close(out, q, rtol=0, atol=1e-15)
    torch.testing.assert_close(grad, g, rtol=0, atol=0)


def test_rotation_trick_antipodal_and_zero_fall_back_to_ste():
    z = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.0]], dtype=F64)
    q = torch.tensor([[-0.1, 0.0, 0.0], [0.0, 0.5, 1.0], [0.3, 0.0, 0.0]], dtype=F64)
    g = torch.ones(3, 3, dtype=F64)
    out, grad = _backward(vq.rotation_trick, z, q, g)
    assert torch.isfinite(out).all() and torch.isfinite(grad).all()
    torch.testing.assert_close(out, q, rtol=0, atol=1e-15)
    torch.testing.assert_close(grad[0], g[0])  # antipodal: straight-through
    torch.testing.assert_close(grad[2], g[2])  # zero z: straight-through
    assert not torch.allclose(grad[1], g[1])  # regular row: rotated and scaled


def test_rotation_trick_float32_with_small_norms():
    z = torch.tensor([[0.3, -0.2, 0.1, 0.4]], dtype=torch.float32)
    q = torch.tensor([[1e-3, 2e-3, -1e-3, 0.0]], dtype=torch.float32)
    g = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    out, grad = _backward(vq.rotation_trick, z, q, g)
    torch.testing.assert_close(out, q)
    ratio = float(grad.norm() / g.norm())
    assert abs(ratio - float(q.norm() / z.norm())) < 1e-5


def test_estimators_bad_inputs():
    z, q = _pair(4, 0)
    with pytest.raises(TypeError, match="z"):
        vq.rotation_trick(z.numpy(), q)
    with pytest.raises(ValueError, match="q must have the shape"):
        vq.ste(z, q[:3])
    with pytest.raises(TypeError, match="dtype"):
        vq.ste(z, q.float())
    with pytest.raises(ValueError, match="eps"):
        vq.rotation_trick(z, q, eps=0.0)
    with pytest.raises(ValueError, match="G must end in"):
        vq.generalized_ste(z, q, torch.eye(3, dtype=F64))
    with pytest.raises(TypeError, match="floating"):
        vq.ste(torch.ones(3, dtype=torch.int64), torch.ones(3, dtype=torch.int64))


# -------------------------------------------------------------- nearest / layer


@pytest.mark.parametrize("device", DEVICES)
def test_nearest_code_matches_brute_force_and_is_translation_invariant(device):
    g = torch.Generator().manual_seed(0)
    codes = torch.randn(8, 5, generator=g, dtype=F64).to(device)
    z = torch.randn(2, 30, 5, generator=g, dtype=F64).to(device)
    idx = vq.nearest_code(z, codes)
    brute = torch.cdist(z.reshape(-1, 5), codes).argmin(1).reshape(2, 30)
    assert torch.equal(idx, brute)
    c = 5 * torch.randn(5, generator=g, dtype=F64).to(device)
    assert torch.equal(vq.nearest_code(z + c, codes + c), idx)


def test_perplexity():
    assert vq.perplexity(torch.zeros(10, dtype=torch.long), 4) == pytest.approx(1.0)
    assert vq.perplexity(torch.arange(8), 8) == pytest.approx(8.0)
    with pytest.raises(ValueError, match="indices must lie"):
        vq.perplexity(torch.tensor([0, 5]), 4)
    with pytest.raises(TypeError, match="integer"):
        vq.perplexity(torch.tensor([0.0, 1.0]), 4)


@pytest.mark.parametrize("estimator", vq.ESTIMATORS)
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_vector_quantizer_forward_losses_and_training_step(estimator, metric):
    gen = torch.Generator().manual_seed(1)
    layer = vq.VectorQuantizer(16, 4, estimator=estimator, metric=metric, generator=gen)
    z = torch.randn(32, 4, generator=gen, requires_grad=True)
    out = layer(z)
    zs = torch.nn.functional.normalize(z, dim=-1) if metric == "cosine" else z
    q = layer.codes()[out.indices]
    torch.testing.assert_close(out.z_q, q.detach())
    torch.testing.assert_close(out.codebook_loss, (q - zs).square().sum(-1).mean())
    torch.testing.assert_close(out.loss, layer.beta * out.codebook_loss + layer.gamma * out.commitment_loss)
    (out.z_q.square().sum() + out.loss).backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()
    assert layer.codebook.grad is not None and float(layer.codebook.grad.norm()) > 0


def test_vector_quantizer_estimators_differ_by_the_norm_ratio():
    gen = torch.Generator().manual_seed(3)
    codebook = torch.randn(16, 4, generator=gen, dtype=F64)
    z = torch.randn(64, 4, generator=gen, dtype=F64)
    upstream = torch.randn(64, 4, generator=gen, dtype=F64)
    grads = {}
    for est in vq.ESTIMATORS:
        layer = vq.VectorQuantizer(16, 4, estimator=est, dtype=F64)
        with torch.no_grad():
            layer.codebook.copy_(codebook)
        zz = z.clone().requires_grad_(True)
        (layer(zz).z_q * upstream).sum().backward()
        grads[est] = zz.grad
    q = codebook[vq.nearest_code(z, codebook)]
    ratio = grads["rotation"].norm(dim=-1) / grads["straight_through"].norm(dim=-1)
    torch.testing.assert_close(ratio, q.norm(dim=-1) / z.norm(dim=-1), rtol=1e-10, atol=0)


def test_vector_quantizer_bad_arguments():
    with pytest.raises(ValueError, match="estimator"):
        vq.VectorQuantizer(4, 2, estimator="gumbel")
    with pytest.raises(ValueError, match="metric"):
        vq.VectorQuantizer(4, 2, metric="l1")
    with pytest.raises(ValueError, match="num_codes"):
        vq.VectorQuantizer(0, 2)
    with pytest.raises(ValueError, match="beta"):
        vq.VectorQuantizer(4, 2, beta=-1.0)
    layer = vq.VectorQuantizer(4, 2)
    with pytest.raises(ValueError, match="z must end in dimension 2"):
        layer(torch.randn(3, 5))
