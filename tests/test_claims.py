import json

import numpy as np
import pytest
import sympy as sp
import torch

import kexue
from kexue import claims


@pytest.fixture(autouse=True)
def fresh():
    claims.reset("test")
    yield
    claims.reset("")


WHY = "a tolerance argued for the test"


def test_symbolic_equal_passes_and_records():
    x = sp.symbols("x")
    c = claims.equal("S1", "sin^2 + cos^2 = 1", sp.sin(x) ** 2 + sp.cos(x) ** 2, 1)
    assert c.passed and c.kind == "symbolic"
    assert claims.get("S1") is c


def test_symbolic_false_claim_fails_with_residual():
    x = sp.symbols("x")
    with pytest.raises(claims.ClaimError, match=r"(?s)claim S1 does not hold.*residual"):
        claims.equal("S1", "x^2 = x", x**2, x)


def test_symbolic_matrices():
    a, b = sp.symbols("a b")
    m = sp.Matrix([[a, b], [b, a]])
    claims.equal("S1", "matrix identity", m * m.inv(), sp.eye(2))
    with pytest.raises(claims.ClaimError):
        claims.equal("S2", "wrong matrix", m, sp.eye(2))
    with pytest.raises(ValueError, match="shape"):
        claims.equal("S3", "shape mismatch", m, sp.eye(3))


def test_holds_requires_true_not_undecided():
    x = sp.symbols("x", positive=True)
    claims.holds("S1", "x + 1 > 0 for positive x", x + 1 > 0)
    y = sp.symbols("y")
    with pytest.raises(claims.ClaimError, match="did not reduce"):
        claims.holds("S2", "undecidable", y > 0)


def test_close_passes_within_tolerance_and_fails_outside():
    claims.close("N1", "near one", 1.0 + 1e-7, 1.0, rtol=1e-6, why=WHY)
    with pytest.raises(claims.ClaimError) as err:
        claims.close("N2", "far from one", 1.1, 1.0, rtol=1e-3, why=WHY)
    message = str(err.value)
    assert "N2" in message and "expected" in message and "measured" in message and "missed by" in message


def test_close_with_arrays_and_tensors():
    claims.close("N1", "arrays", torch.tensor([1.0, 2.0]), np.array([1.0, 2.0 + 1e-9]), atol=1e-8, why=WHY)
    with pytest.raises(claims.ClaimError):
        claims.close("N2", "one entry off", torch.tensor([1.0, 2.5]), [1.0, 2.0], atol=0.1, why=WHY)


def test_close_rejects_nan_and_missing_tolerance_and_why():
    with pytest.raises(claims.ClaimError, match="non-finite"):
        claims.close("N1", "nan", float("nan"), 1.0, atol=1.0, why=WHY)
    with pytest.raises(ValueError, match="tolerance"):
        claims.close("N2", "no tolerance", 1.0, 1.0, why=WHY)
    with pytest.raises(ValueError, match="why"):
        claims.close("N3", "no reason", 1.0, 1.0, atol=0.1, why="")
    with pytest.raises(ValueError, match="rtol"):
        claims.close("N4", "negative", 1.0, 1.0, rtol=-1.0, why=WHY)


def test_between_and_bounds():
    claims.between("N1", "in bracket", 0.45, 0.3, 0.6, why=WHY)
    claims.at_most("N2", "small", [0.1, 0.2], 0.5, why=WHY)
    claims.at_least("N3", "large", 3.0, 2.0, why=WHY)
    with pytest.raises(claims.ClaimError, match="outside"):
        claims.between("N4", "out of bracket", 0.7, 0.3, 0.6, why=WHY)
    with pytest.raises(ValueError, match="lower"):
        claims.between("N5", "bad bracket", 0.5, 0.6, 0.3, why=WHY)


def test_check_condition():
    claims.check("N1", "increasing", True, measured=[1, 2, 3], expected="increasing", why=WHY)
    with pytest.raises(claims.ClaimError, match="condition is false"):
        claims.check("N2", "not increasing", False, measured=[3, 2], expected="increasing", why=WHY)
    with pytest.raises(TypeError, match="condition"):
        claims.check("N3", "not a bool", 1, measured=1, expected="x", why=WHY)


def test_ids_are_validated_and_unique():
    with pytest.raises(ValueError, match="claim_id"):
        claims.close("n1", "lower case id", 1.0, 1.0, atol=1, why=WHY)
    claims.close("N1", "first", 1.0, 1.0, atol=1, why=WHY)
    with pytest.raises(ValueError, match="already used"):
        claims.close("N1", "again", 1.0, 1.0, atol=1, why=WHY)
    with pytest.raises(ValueError, match="statement"):
        claims.close("N2", "  ", 1.0, 1.0, atol=1, why=WHY)


def test_summary_requires_claims_and_carries_json():
    with pytest.raises(claims.ClaimError, match="no claims"):
        claims.summary()
    claims.close("N1", "one", 1.0, 1.0, atol=0.1, why=WHY)
    x = sp.symbols("x")
    claims.equal("S1", "x = x", x, x)
    s = claims.summary()
    payload = s.payload()
    assert payload["chapter"] == "test"
    assert [c["id"] for c in payload["claims"]] == ["N1", "S1"]
    assert "N1" in s.html() and "S1" in s.text()
    # The text/plain part parses back to the same payload (what the report reads).
    text = claims.REPORT_MARKER + json.dumps(payload, sort_keys=True)
    assert json.loads(text[len(claims.REPORT_MARKER) :]) == payload


def test_begin_resets_and_seeds(monkeypatch, capsys):
    monkeypatch.setenv("KEXUE_SEED", "4")
    monkeypatch.setenv("KEXUE_DEVICE", "cpu")
    claims.close("N1", "old", 1.0, 1.0, atol=0.1, why=WHY)
    assert kexue.begin("chapter-x") is None
    assert claims.records() == []
    assert "seed 4" in capsys.readouterr().out
    with pytest.raises(ValueError, match="chapter"):
        kexue.begin("")
