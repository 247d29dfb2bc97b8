import pytest
import torch

from kexue import toys


def test_gaussian_mixture_classification_shapes_and_reproducibility():
    X, y = toys.gaussian_mixture_classification(500, 8, 4, generator=torch.Generator().manual_seed(3))
    X2, y2 = toys.gaussian_mixture_classification(500, 8, 4, generator=torch.Generator().manual_seed(3))
    assert X.shape == (500, 8) and y.shape == (500,)
    assert torch.equal(X, X2) and torch.equal(y, y2)
    assert set(y.tolist()) <= set(range(4))


def test_gaussian_mixture_noise_level():
    # Within-class spread is the noise std: pooled within-class variance ~ noise^2.
    X, y = toys.gaussian_mixture_classification(
        20000, 4, 3, generator=torch.Generator().manual_seed(0), noise=0.5, dtype=torch.float64
    )
    resid = torch.cat([X[y == c] - X[y == c].mean(0) for c in range(3)])
    # 20000 x 4 squared normals: relative SE of the variance ~ sqrt(2/80000) = 0.005; allow 5 SE.
    assert abs(float(resid.var()) / 0.25 - 1) < 0.025


def test_mlp_structure_and_errors():
    net = toys.mlp([3, 5, 5, 2], act="tanh")
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(3, 5), (5, 5), (5, 2)]
    assert net(torch.zeros(4, 3)).shape == (4, 2)
    with pytest.raises(ValueError, match="act"):
        toys.mlp([2, 2], act="sigmoidish")
    with pytest.raises(ValueError, match="widths"):
        toys.mlp([2])
    with pytest.raises(ValueError, match="k"):
        toys.gaussian_mixture_classification(10, 2, 1)
