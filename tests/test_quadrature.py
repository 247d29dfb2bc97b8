import math

import pytest
import torch

from kexue.quadrature import gaussian_expectation


def test_moments_of_a_gaussian():
    mean = torch.tensor([0.0, 1.5, -2.0], dtype=torch.float64)
    std = torch.tensor([1.0, 0.5, 3.0], dtype=torch.float64)
    torch.testing.assert_close(gaussian_expectation(lambda x: x, mean, std), mean)
    torch.testing.assert_close(gaussian_expectation(lambda x: x**2, mean, std), mean**2 + std**2)
    torch.testing.assert_close(
        gaussian_expectation(lambda x: torch.exp(x), 0.0, 1.0), torch.tensor(math.exp(0.5), dtype=torch.float64)
    )


def test_trapezoid_handles_kinks():
    # E|z| = sqrt(2/pi); E sign(mu + z) = erf(mu / sqrt 2).
    val = gaussian_expectation(torch.abs, 0.0, 1.0, method="trapezoid")
    # trapezoid error at the kink of |z| is O(h^2) with h = 16/4000: about 1e-6
    assert abs(float(val) - math.sqrt(2 / math.pi)) < 1e-5
    mu = 0.3
    val = gaussian_expectation(torch.sign, mu, 1.0, method="trapezoid", n_nodes=20001)
    assert abs(float(val) - math.erf(mu / math.sqrt(2))) < 1e-3


def test_gradient_flows_through_mean():
    mean = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(gaussian_expectation(lambda x: x**3, mean, 1.0), mean)
    # d/dm E[(m + z)^3] = 3 m^2 + 3
    assert abs(float(grad) - (3 * 0.49 + 3)) < 1e-10


def test_bad_arguments():
    with pytest.raises(ValueError, match="method"):
        gaussian_expectation(torch.abs, 0.0, 1.0, method="simpson")
    with pytest.raises(ValueError, match="std"):
        gaussian_expectation(torch.abs, 0.0, -1.0)
    with pytest.raises(TypeError, match="mean"):
        gaussian_expectation(torch.abs, "0", 1.0)
    with pytest.raises(TypeError, match="f must"):
        gaussian_expectation(3, 0.0, 1.0)
