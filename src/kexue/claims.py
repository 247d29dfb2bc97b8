"""Claims: the one way a chapter asserts a result.

Every claim has an id matching the chapter's spec (``S1`` for symbolic, ``N1`` for
numeric, ``B1`` for checks beyond the post), a one-line statement, and a kind. A claim
that does not hold raises :class:`ClaimError` (an ``AssertionError``) saying what was
expected, what was measured and by how much it missed, so a chapter run by nbmake or by
the book build fails there. A claim that holds is recorded and shown as one line.

A numeric claim must say *why* its tolerance is honest (``why=``), e.g. "4 standard
errors of a Monte-Carlo mean over 20,000 samples" or "float64 round-off for n = 512".

Typical use in a chapter::

    import kexue
    from kexue import claims

    kexue.begin("gradient-clipping")
    claims.equal("S1", "clip keeps the direction", lhs, rhs)
    claims.close("N1", "post-clip norm is tau", measured, 1.0, rtol=1e-5, why="...")
    claims.summary()
"""

from __future__ import annotations

import html
import json
import math
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "Claim",
    "ClaimError",
    "at_least",
    "at_most",
    "between",
    "check",
    "close",
    "equal",
    "get",
    "holds",
    "records",
    "reset",
    "summary",
]

#: Marker that starts the machine-readable copy of a chapter's claims in the
#: ``text/plain`` part of :func:`summary`'s output; the book's Sphinx extension reads it.
REPORT_MARKER = "KEXUE-CLAIMS-REPORT "

_ID_PATTERN = re.compile(r"^[A-Z][0-9]+[a-z]?$")


class ClaimError(AssertionError):
    """A claim did not hold."""


@dataclass
class Claim:
    """One checked statement and its outcome."""

    id: str
    statement: str
    kind: str  # "symbolic" or "numeric"
    passed: bool
    expected: str
    measured: str
    tolerance: str = ""
    why: str = ""
    missed_by: str = ""
    device: str = ""
    seconds: float = 0.0
    _shown: bool = field(default=False, repr=False, compare=False)

    def line(self) -> str:
        mark = "PASS" if self.passed else "FAIL"
        tol = f" ({self.tolerance})" if self.tolerance else ""
        return f"[{mark}] {self.id} {self.kind}: {self.statement} | measured {self.measured}, expected {self.expected}{tol}"

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("_shown", None)
        return d

    # Display: a claim is shown once, whether it is displayed explicitly by the
    # claim function or is also the last expression of a cell.
    def _ipython_display_(self) -> None:
        if self._shown:
            return
        self._shown = True
        from IPython.display import display

        display({"text/plain": self.line(), "text/html": self._html()}, raw=True)

    def _html(self) -> str:
        colour = "#1a7f37" if self.passed else "#cf222e"
        mark = "&#10004;" if self.passed else "&#10008;"
        extra = f"; tolerance: {html.escape(self.tolerance)}" if self.tolerance else ""
        why = f" <em>Why this tolerance: {html.escape(self.why)}</em>" if self.why else ""
        return (
            f'<div class="kexue-claim" style="border-left:3px solid {colour};padding:2px 8px;margin:4px 0">'
            f'<span style="color:{colour};font-weight:bold">{mark} {html.escape(self.id)}</span> '
            f"<span>{html.escape(self.statement)}</span><br>"
            f'<small style="font-family:var(--pst-font-family-monospace,monospace)">'
            f"measured {html.escape(self.measured)}; expected {html.escape(self.expected)}{extra}."
            f"</small>{why}</div>"
        )


_records: list[Claim] = []
_chapter: dict[str, Any] = {"name": "", "started": time.perf_counter(), "last": time.perf_counter()}


def reset(chapter: str = "") -> None:
    """Forget all claims and start timing a new chapter."""
    if not isinstance(chapter, str):
        raise TypeError(f"chapter must be a str, got {type(chapter).__name__}")
    _records.clear()
    now = time.perf_counter()
    _chapter.update(name=chapter, started=now, last=now)


def records() -> list[Claim]:
    """The claims made since the last :func:`reset`, in order."""
    return list(_records)


def get(claim_id: str) -> Claim:
    """The recorded claim with this id (raises ``KeyError`` if none)."""
    for c in _records:
        if c.id == claim_id:
            return c
    raise KeyError(f"no claim with id {claim_id!r}; recorded: {[c.id for c in _records]}")


# ----------------------------------------------------------------------------- helpers


def _check_header(claim_id: Any, statement: Any) -> None:
    if not isinstance(claim_id, str) or not _ID_PATTERN.match(claim_id):
        raise ValueError(f"claim_id must look like 'S1', 'N2' or 'B1a', got {claim_id!r}")
    if not isinstance(statement, str) or not statement.strip():
        raise ValueError("statement must be a non-empty str saying what is claimed")
    if any(c.id == claim_id for c in _records):
        raise ValueError(f"claim id {claim_id!r} was already used in this chapter")


def _check_why(why: Any) -> None:
    if not isinstance(why, str) or len(why.strip()) < 8:
        raise ValueError(
            "why must say why the tolerance is honest (e.g. '4 standard errors of the mean over "
            "10,000 samples'), got " + repr(why)
        )


def _device_now() -> str:
    from . import runtime

    try:
        return str(runtime.device())
    except ValueError:
        return "?"


def _fmt(x: Any) -> str:
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if x == 0 or math.isnan(x) or math.isinf(x):
            return str(x)
        return f"{x:.6g}"
    return str(x)


def _record(claim: Claim) -> Claim:
    now = time.perf_counter()
    claim.seconds = now - _chapter["last"]
    _chapter["last"] = now
    claim.device = claim.device or _device_now()
    _records.append(claim)
    if not claim.passed:
        msg = (
            f"claim {claim.id} does not hold: {claim.statement}\n"
            f"  expected:  {claim.expected}"
            + (f" ({claim.tolerance})" if claim.tolerance else "")
            + f"\n  measured:  {claim.measured}"
            + (f"\n  missed by: {claim.missed_by}" if claim.missed_by else "")
        )
        raise ClaimError(msg)
    _show(claim)
    return claim


def _show(claim: Claim) -> None:
    try:
        from IPython import get_ipython

        if get_ipython() is None:
            return
        from IPython.display import display

        display(claim)
    except ImportError:  # pragma: no cover - IPython is always there in the book
        return


def _to_float_array(value: Any, name: str):
    import numpy as np

    try:
        import torch

        if isinstance(value, torch.Tensor):
            value = value.detach().to("cpu", dtype=torch.float64).numpy()
    except ImportError:  # pragma: no cover
        pass
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a number, array or tensor, got {type(value).__name__}") from exc
    return arr


def _summarise(arr) -> str:
    if arr.ndim == 0:
        return _fmt(float(arr))
    if arr.size <= 6:
        return "[" + ", ".join(_fmt(float(v)) for v in arr.ravel()) + "]"
    return f"array of {arr.size} values in [{_fmt(float(arr.min()))}, {_fmt(float(arr.max()))}]"


# ------------------------------------------------------------------------ symbolic


def equal(claim_id: str, statement: str, lhs: Any, rhs: Any, *, method: str = "simplify") -> Claim:
    """Symbolic claim: SymPy expressions (or matrices) ``lhs`` and ``rhs`` are equal.

    ``method`` says how the difference is shown to vanish: ``"simplify"`` (default),
    ``"expand"``, ``"equals"`` (SymPy's ``Expr.equals``, which may also test numerically
    at random points and says so) or ``"exact"`` (structural equality after
    ``sympy.sympify``). The method is recorded with the claim.
    """
    import sympy as sp

    _check_header(claim_id, statement)
    methods = ("simplify", "expand", "equals", "exact")
    if method not in methods:
        raise ValueError(f"method must be one of {methods}, got {method!r}")
    try:
        left, right = sp.sympify(lhs), sp.sympify(rhs)
    except (sp.SympifyError, TypeError) as exc:
        raise TypeError("lhs and rhs must be SymPy expressions or matrices") from exc
    if isinstance(left, sp.MatrixBase) != isinstance(right, sp.MatrixBase):
        raise TypeError("lhs and rhs must both be matrices or both be scalars")
    if isinstance(left, sp.MatrixBase) and left.shape != right.shape:
        raise ValueError(f"lhs has shape {left.shape} but rhs has shape {right.shape}")

    if method == "exact":
        ok = left == right
        residual = sp.S(0) if ok else sp.simplify(left - right)
    elif method == "equals":
        if isinstance(left, sp.MatrixBase):
            ok = all(bool(a.equals(b)) for a, b in zip(left, right, strict=True))
        else:
            ok = bool(left.equals(right))
        residual = sp.S(0) if ok else left - right
    else:
        diff = left - right
        residual = sp.simplify(diff) if method == "simplify" else sp.expand(diff)
        if isinstance(residual, sp.MatrixBase):
            ok = residual.is_zero_matrix is True
        else:
            ok = residual == 0
    claim = Claim(
        id=claim_id,
        statement=statement,
        kind="symbolic",
        passed=bool(ok),
        expected=_short(right),
        measured=_short(left),
        tolerance=f"exact ({method})",
        missed_by="" if ok else f"residual {_short(residual)}",
        device="sympy",
    )
    return _record(claim)


def holds(claim_id: str, statement: str, condition: Any, *, method: str = "") -> Claim:
    """Symbolic claim: a SymPy boolean (or relational) is ``True``.

    ``condition`` must evaluate to SymPy's ``true``: an undecided relational (one that
    SymPy cannot settle) counts as not holding. ``method`` describes how it was reduced.
    """
    import sympy as sp

    _check_header(claim_id, statement)
    value = sp.sympify(condition)
    ok = value is sp.true
    claim = Claim(
        id=claim_id,
        statement=statement,
        kind="symbolic",
        passed=ok,
        expected="True",
        measured=_short(value),
        tolerance=f"exact ({method})" if method else "exact",
        missed_by="" if ok else "SymPy did not reduce the condition to True",
        device="sympy",
    )
    return _record(claim)


def _short(expr: Any, limit: int = 160) -> str:
    text = str(expr)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -------------------------------------------------------------------------- numeric


def close(
    claim_id: str,
    statement: str,
    measured: Any,
    expected: Any,
    *,
    rtol: float = 0.0,
    atol: float = 0.0,
    why: str,
) -> Claim:
    """Numeric claim: ``|measured - expected| <= atol + rtol * |expected|`` elementwise.

    ``measured`` and ``expected`` may be numbers, NumPy arrays or torch tensors of the
    same (broadcastable) shape. ``expected`` must come from theory or an independent
    reference computation, never from the computation being checked.
    """
    import numpy as np

    _check_header(claim_id, statement)
    _check_why(why)
    for name, tol in (("rtol", rtol), ("atol", atol)):
        if not isinstance(tol, (int, float)) or isinstance(tol, bool) or not math.isfinite(tol) or tol < 0:
            raise ValueError(f"{name} must be a finite non-negative number, got {tol!r}")
    if rtol == 0 and atol == 0:
        raise ValueError("give a tolerance: rtol or atol must be positive (exact float equality is not a claim)")
    m = _to_float_array(measured, "measured")
    e = _to_float_array(expected, "expected")
    try:
        err = np.abs(m - e)
        allowed = atol + rtol * np.abs(e)
    except ValueError as exc:
        raise ValueError(f"measured has shape {m.shape}, expected has shape {e.shape}: not broadcastable") from exc
    finite = bool(np.all(np.isfinite(m)))
    ok = finite and bool(np.all(err <= allowed))
    if err.size:
        worst = int(np.nanargmax(np.where(np.isfinite(err), err - allowed, np.inf)))
        worst_err = float(np.ravel(err)[worst]) if np.ravel(err).size > worst else float(err.max())
        worst_allowed = float(np.ravel(np.broadcast_to(allowed, err.shape))[worst])
    else:
        worst_err, worst_allowed = 0.0, float(np.max(allowed)) if np.size(allowed) else 0.0
    tol_parts = []
    if rtol:
        tol_parts.append(f"rtol {rtol:g}")
    if atol:
        tol_parts.append(f"atol {atol:g}")
    claim = Claim(
        id=claim_id,
        statement=statement,
        kind="numeric",
        passed=ok,
        expected=_summarise(e),
        measured=_summarise(m),
        tolerance=" + ".join(tol_parts),
        why=why,
        missed_by=""
        if ok
        else ("non-finite value measured" if not finite else f"{_fmt(worst_err)} (allowed {_fmt(worst_allowed)})"),
    )
    return _record(claim)


def between(
    claim_id: str,
    statement: str,
    measured: Any,
    lower: float | None = None,
    upper: float | None = None,
    *,
    why: str,
) -> Claim:
    """Numeric claim: every value of ``measured`` lies in ``[lower, upper]`` (either may be None)."""
    import numpy as np

    _check_header(claim_id, statement)
    _check_why(why)
    if lower is None and upper is None:
        raise ValueError("give lower, upper or both")
    for name, b in (("lower", lower), ("upper", upper)):
        if b is not None and (not isinstance(b, (int, float)) or isinstance(b, bool) or math.isnan(b)):
            raise TypeError(f"{name} must be a number or None, got {b!r}")
    if lower is not None and upper is not None and lower > upper:
        raise ValueError(f"lower ({lower}) must not exceed upper ({upper})")
    m = _to_float_array(measured, "measured")
    lo = -np.inf if lower is None else lower
    hi = np.inf if upper is None else upper
    finite = bool(np.all(~np.isnan(m)))
    ok = finite and bool(np.all((m >= lo) & (m <= hi)))
    if lower is None:
        expected = f"<= {_fmt(upper)}"
    elif upper is None:
        expected = f">= {_fmt(lower)}"
    else:
        expected = f"in [{_fmt(lower)}, {_fmt(upper)}]"
    missed = ""
    if not ok:
        if not finite:
            missed = "NaN measured"
        else:
            below = float(np.max(lo - m)) if lower is not None else -np.inf
            above = float(np.max(m - hi)) if upper is not None else -np.inf
            missed = f"{_fmt(max(below, above))} outside the bound"
    claim = Claim(
        id=claim_id,
        statement=statement,
        kind="numeric",
        passed=ok,
        expected=expected,
        measured=_summarise(m),
        tolerance="bound",
        why=why,
        missed_by=missed,
    )
    return _record(claim)


def at_most(claim_id: str, statement: str, measured: Any, upper: float, *, why: str) -> Claim:
    """Numeric claim: every value of ``measured`` is ``<= upper``."""
    return between(claim_id, statement, measured, None, upper, why=why)


def at_least(claim_id: str, statement: str, measured: Any, lower: float, *, why: str) -> Claim:
    """Numeric claim: every value of ``measured`` is ``>= lower``."""
    return between(claim_id, statement, measured, lower, None, why=why)


def check(
    claim_id: str,
    statement: str,
    condition: bool,
    *,
    measured: Any,
    expected: str,
    why: str,
) -> Claim:
    """Numeric claim of any other shape: ``condition`` (a Python bool) must be true.

    Use it for facts that are not a distance to a value, e.g. "the sequence is
    increasing". ``measured`` is what is shown; ``expected`` describes the condition.
    """
    _check_header(claim_id, statement)
    _check_why(why)
    try:
        import numpy as np

        if isinstance(condition, np.bool_):
            condition = bool(condition)
    except ImportError:  # pragma: no cover
        pass
    if not isinstance(condition, bool):
        raise TypeError(f"condition must be a bool, got {type(condition).__name__}")
    if not isinstance(expected, str) or not expected:
        raise ValueError("expected must be a non-empty str describing the condition")
    shown = measured if isinstance(measured, str) else _summarise(_to_float_array(measured, "measured"))
    claim = Claim(
        id=claim_id,
        statement=statement,
        kind="numeric",
        passed=condition,
        expected=expected,
        measured=shown,
        tolerance="condition",
        why=why,
        missed_by="" if condition else "condition is false",
    )
    return _record(claim)


# --------------------------------------------------------------------------- summary


class _Summary:
    def __init__(self, chapter: str, rows: list[Claim], info: dict[str, Any], seconds: float):
        self.chapter, self.rows, self.info, self.seconds = chapter, rows, info, seconds

    def payload(self) -> dict[str, Any]:
        return {
            "chapter": self.chapter,
            "claims": [c.as_dict() for c in self.rows],
            "run": self.info,
            "seconds": self.seconds,
        }

    def text(self) -> str:
        lines = [f"{len(self.rows)} claims, all passed ({self.seconds:.1f} s)"]
        lines += [c.line() for c in self.rows]
        return "\n".join(lines)

    def html(self) -> str:
        head = "".join(f"<th>{h}</th>" for h in ("id", "statement", "kind", "result", "tolerance", "device", "s"))
        body = "".join(
            "<tr>"
            f"<td><b>{html.escape(c.id)}</b></td><td>{html.escape(c.statement)}</td>"
            f"<td>{c.kind}</td>"
            f"<td>{'&#10004; ' if c.passed else '&#10008; '}{html.escape(c.measured)}</td>"
            f"<td>{html.escape(c.tolerance)}</td><td>{html.escape(c.device)}</td>"
            f"<td>{c.seconds:.2f}</td></tr>"
            for c in self.rows
        )
        n_sym = sum(c.kind == "symbolic" for c in self.rows)
        caption = (
            f"{len(self.rows)} claims ({n_sym} symbolic, {len(self.rows) - n_sym} numeric), all hold. "
            f"Run: {html.escape(self.info.get('summary', ''))}; {self.seconds:.1f} s in all."
        )
        return (
            '<div class="kexue-summary"><table class="table">'
            f"<caption>{caption}</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
        )

    def _repr_html_(self) -> str:
        return self.html()

    def __repr__(self) -> str:
        return self.text()

    def _ipython_display_(self) -> None:
        from IPython.display import display

        report = REPORT_MARKER + json.dumps(self.payload(), sort_keys=True)
        display({"text/html": self.html(), "text/plain": report}, raw=True)


def summary() -> _Summary:
    """The chapter's claims table; the last cell of every chapter.

    Raises ``ClaimError`` if no claim was made (a chapter that checks nothing is not done).
    In a notebook it renders as a table; its ``text/plain`` part carries the claims as JSON
    for the book's verification report.
    """
    from . import runtime

    if not _records:
        raise ClaimError("no claims were made in this chapter: summary() of nothing")
    failed = [c.id for c in _records if not c.passed]
    if failed:  # only reachable if a ClaimError was caught and ignored
        raise ClaimError(f"claims that did not hold: {failed}")
    run = runtime.info()
    info = {
        "device": run.device,
        "device_name": run.device_name,
        "seed": run.seed,
        "scale": run.scale,
        "torch": run.torch,
        "python": run.python,
        "summary": str(run),
    }
    return _Summary(_chapter["name"], list(_records), info, time.perf_counter() - _chapter["started"])
