import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue import stats


@settings(max_examples=30, deadline=None)
@given(st.floats(min_value=-3, max_value=3), st.floats(min_value=0.1, max_value=10))
def test_loglog_slope_recovers_power_laws(p, c):
    x = torch.logspace(-2, 2, 9, dtype=torch.float64)
    assert math.isclose(stats.loglog_slope(x, c * x**p), p, abs_tol=1e-10)


def test_loglog_slope_bad_inputs():
    with pytest.raises(ValueError, match="positive"):
        stats.loglog_slope(torch.tensor([1.0, -1.0]), torch.tensor([1.0, 1.0]))
    with pytest.raises(ValueError, match="same shape"):
        stats.loglog_slope(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="constant"):
        stats.loglog_slope(torch.tensor([2.0, 2.0]), torch.tensor([1.0, 3.0]))


def test_ema_matches_closed_form():
    beta = 0.9
    xs = torch.ones(50, 3, dtype=torch.float64)
    raw = stats.ema(xs, beta, bias_correct=False)
    t = torch.arange(1, 51, dtype=torch.float64)
    torch.testing.assert_close(raw[:, 0], 1 - beta**t)
    torch.testing.assert_close(stats.ema(xs, beta), xs)
    with pytest.raises(ValueError, match="beta"):
        stats.ema(xs, 1.0)
    with pytest.raises(ValueError, match="xs"):
        stats.ema(torch.ones(0), 0.5)


def test_mean_and_se():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    m, se = stats.mean_and_se(x)
    assert float(m) == 2.5
    assert math.isclose(float(se), float(x.std()) / 2)
    with pytest.raises(ValueError, match="at least 2"):
        stats.mean_and_se(torch.ones(1))
