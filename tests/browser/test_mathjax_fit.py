"""``_static/mathjax-fit.js`` on the fixture page (formulas A-G of ``fixture/formulas.md``).

The assertions follow the design in spec 24 ("Browser checks"), with the fixture's own
widths: every number compared here is measured in the page, and the expected values come
from the fitting rule ``s = max(MIN_SCALE, floor(1000 * avail / need) / 1000)`` or from
geometry (no overlap, no sideways scroll), never from a previous run.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    MIN_SCALE,
    REPO,
    chromium,
    measure_math,
    page_overflow,
    resize,
    wait_for_fit,
)

LETTERS = "ABCDEFG"
#: Sub-pixel slack of the script (a formula this much wider than its room counts as fitting).
SLACK_PX = 0.5
#: Layout is in fractional CSS pixels but borders and glyph boxes snap to device pixels:
#: comparisons of two measured widths allow 1 px.
PX = 1.0
#: Scales are floored to 3 decimals, and the column width or natural width can differ by a
#: sub-pixel between two layouts: two scales of the same formula may differ by 0.001, and a
#: scale may differ from the rule applied to re-measured widths by 0.001; allow 0.002.
SCALE_TOL = 0.002
#: Page errors that Jupyter Book 1.0.4 pages throw before any script of ours runs
#: (sphinx-thebe's snippet is emitted twice). See spec 24, assertion 8.
KNOWN_PAGE_ERRORS = ("Identifier 'THEBE_JS_URL' has already been declared",)
KNOWN_CONSOLE_ERRORS = ("Got invalid theme mode",)


def expected_scale(need: float, avail: float, min_scale: float = MIN_SCALE) -> float:
    """The fitting rule of the script (and of the chapter's model)."""
    if need <= avail + SLACK_PX or avail <= 0:
        return 1.0
    return max(min_scale, math.floor(1000 * avail / need) / 1000)


def by_letter(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    assert len(records) == len(LETTERS), f"the fixture has {len(LETTERS)} formulas, the page has {len(records)}"
    return dict(zip(LETTERS, records, strict=True))


def load(browser: Any, url: str, width: int) -> Any:
    page = chromium(browser, (width, 800))
    page.goto(url)
    wait_for_fit(page)
    assert page.evaluate("document.documentElement.dataset.mathjaxFit") == "done"
    return page


@pytest.fixture(scope="module")
def fresh(browser: Any, fixture_site: str) -> Any:
    """Pages freshly loaded at a given width (cached for the module)."""
    cache: dict[int, Any] = {}

    def get(width: int) -> Any:
        if width not in cache:
            cache[width] = load(browser, fixture_site, width)
        return cache[width]

    yield get
    for page in cache.values():
        page.context.close()


@pytest.mark.parametrize("width", [375, 1280])
def test_no_page_level_sideways_scroll(fresh: Any, width: int) -> None:
    """Assertion 1: the page itself never scrolls sideways."""
    o = page_overflow(fresh(width))
    assert o["scroll"] <= o["inner"], f"page is {o['scroll']} px wide in a {o['inner']} px viewport"


@pytest.mark.parametrize("width", [375, 1280])
def test_every_formula_fits_or_is_at_min_scale(fresh: Any, width: int) -> None:
    """Assertion 2: fitted width <= available width (+1 px), unless the scale is MIN_SCALE."""
    for letter, r in by_letter(measure_math(fresh(width))).items():
        assert r["scale"] is not None, f"{letter}: no data-fit-scale"
        if r["scale"] > MIN_SCALE:
            assert r["fitted"] <= r["avail"] + PX, f"{letter} at {width}px: {r['fitted']:.1f} > {r['avail']:.1f}"
        else:
            assert r["scale"] == pytest.approx(MIN_SCALE), f"{letter}: scale {r['scale']} below MIN_SCALE"


@pytest.mark.parametrize("width", [375, 1280])
def test_scaled_formulas_fill_their_room(fresh: Any, width: int) -> None:
    """No over-shrinking (the MathJax 2 recipe's 1/1.19 bug): a scaled formula above MIN_SCALE
    is narrower than its room by less than the 3-decimal floor of the scale (need/1000) + 1 px."""
    for letter, r in by_letter(measure_math(fresh(width))).items():
        if MIN_SCALE < r["scale"] < 1:
            gap = r["avail"] - r["fitted"]
            assert gap <= r["natural"] / 1000 + PX, f"{letter}: {gap:.1f} px of room left unused"


@pytest.mark.parametrize("width", [375, 1280])
def test_numbered_equations_do_not_overlap_their_number(fresh: Any, width: int) -> None:
    """Assertion 3: the formula box ends left of the equation number."""
    numbered = [r for r in measure_math(fresh(width)) if r["eqno_left"] is not None]
    assert numbered, "the fixture has numbered equations (D and the align G)"
    for r in numbered:
        assert r["container_right"] <= r["eqno_left"] + SLACK_PX, r


def test_formulas_that_fit_are_untouched(fresh: Any) -> None:
    """Assertion 4: at 1280 px, A, B, D, E fit and carry no font size; C, F, G are scaled."""
    f = by_letter(measure_math(fresh(1280)))
    for letter in "ABDE":
        assert f[letter]["scale"] == 1 and f[letter]["font_size"] == "", (letter, f[letter])
    for letter in "CFG":
        assert f[letter]["scale"] < 1 and f[letter]["font_size"].endswith("%"), (letter, f[letter])
    small = by_letter(measure_math(fresh(375)))
    assert small["A"]["scale"] == 1 and small["A"]["font_size"] == ""
    for letter in "BCDEFG":
        assert small[letter]["scale"] < 1, (letter, small[letter])


def scales(page: Any) -> list[float]:
    return [r["scale"] for r in measure_math(page)]


def test_resize_round_trip_matches_fresh_loads(browser: Any, fixture_site: str, fresh: Any) -> None:
    """Assertion 5: 375 -> 1280 gives the scales of a fresh 1280 load; back to 375, those of
    a fresh 375 load. (The MathJax 2 recipe runs once and fails this.)"""
    page = load(browser, fixture_site, 375)
    try:
        resize(page, 1280)
        assert scales(page) == pytest.approx(scales(fresh(1280)), abs=SCALE_TOL)
        resize(page, 375)
        assert scales(page) == pytest.approx(scales(fresh(375)), abs=SCALE_TOL)
    finally:
        page.context.close()


def test_sidebar_toggle_refits_without_a_window_resize(browser: Any, fixture_site: str) -> None:
    """The ResizeObserver: narrowing the article column alone (as a sidebar toggle does)
    re-fits, with no window resize event."""
    page = load(browser, fixture_site, 1280)
    try:
        before = by_letter(measure_math(page))
        page.evaluate("document.querySelector('article').style.maxWidth = '400px'")
        page.wait_for_timeout(400)
        after = by_letter(measure_math(page))
        assert before["B"]["scale"] == 1 and after["B"]["scale"] < 1
        for letter, r in after.items():
            assert r["scale"] == pytest.approx(expected_scale(r["natural"], r["avail"]), abs=SCALE_TOL), letter
    finally:
        page.context.close()


@pytest.mark.parametrize("width", [375, 1280])
def test_refitting_is_idempotent(fresh: Any, width: int) -> None:
    """Assertion 6: calling mathjaxFit() again changes no scale."""
    page = fresh(width)
    first = scales(page)
    page.evaluate("window.mathjaxFit()")
    assert scales(page) == first


SWEEP = [320, 360, 375, 414, 480, 600, 768, 900, 960, 1024, 1152, 1280]


def test_scale_follows_the_law_across_widths(browser: Any, fixture_site: str) -> None:
    """Assertion 7: at every width the scale is min(1, avail/natural) floored to 3 decimals
    and clamped at MIN_SCALE, and the fitted width is scale x natural width (font-size
    scales the whole formula). Set KEXUE_FIT_DATA=path.json to keep the measurements."""
    page = load(browser, fixture_site, SWEEP[0])
    rows = []
    try:
        for width in SWEEP:
            resize(page, width)
            for letter, r in by_letter(measure_math(page)).items():
                assert r["scale"] == pytest.approx(expected_scale(r["natural"], r["avail"]), abs=SCALE_TOL), (
                    width,
                    letter,
                    r,
                )
                assert r["fitted"] == pytest.approx(r["scale"] * r["natural"], abs=PX), (width, letter, r)
                rows.append({"viewport": width, "formula": letter} | r)
        policies = policy_table(page)
    finally:
        page.context.close()
    target = os.environ.get("KEXUE_FIT_DATA")
    if target:
        Path(target).write_text(
            json.dumps(
                {
                    "written_by": "tests/browser/test_mathjax_fit.py::test_scale_follows_the_law_across_widths",
                    "chromium": browser.version,
                    "min_scale": MIN_SCALE,
                    "sweep": rows,
                    "policies": policies,
                },
                indent=1,
            )
            + "\n",
            encoding="utf-8",
        )


_GLYPHS_JS = """
(minScale) => {
  window.mathjaxFit({minScale: minScale});
  return Array.from(document.querySelectorAll('mjx-container[jax="CHTML"]')).map((c) => {
    const m = c.querySelector("mjx-math");
    return {scale: parseFloat(c.dataset.fitScale), glyph_px: parseFloat(getComputedStyle(m).fontSize)};
  });
}
"""

POLICIES = {"scroll only (the theme)": 1.0, "scale only (the post)": 0.0, "scale to MIN_SCALE, then scroll": MIN_SCALE}


def policy_table(page: Any) -> list[dict[str, Any]]:
    """The three policies of spec 24's "beyond the post" at 320, 375 and 414 px: smallest
    glyph size (px) and hidden width (px) per formula. Restores the default fit."""
    out = []
    for width in (320, 375, 414):
        resize(page, width)
        for name, min_scale in POLICIES.items():
            glyphs = page.evaluate(_GLYPHS_JS, min_scale)
            for letter, g, r in zip(LETTERS, glyphs, measure_math(page), strict=True):
                hidden = max(0.0, r["fitted"] - r["avail"])
                out.append({"viewport": width, "policy": name, "formula": letter, **g, "hidden_px": hidden})
    page.evaluate("window.mathjaxFit()")
    return out


def test_policies_trade_glyph_size_for_hidden_width(browser: Any, fixture_site: str) -> None:
    """Scale-only hides nothing; scroll-only keeps full-size glyphs; the port never goes
    below MIN_SCALE x the natural glyph size and hides no more than scroll-only."""
    page = load(browser, fixture_site, 375)
    try:
        rows = policy_table(page)
    finally:
        page.context.close()
    natural = max(r["glyph_px"] for r in rows if r["policy"].startswith("scroll"))
    for r in rows:
        if r["policy"].startswith("scale only"):
            assert r["hidden_px"] <= PX, r
        elif r["policy"].startswith("scroll"):
            assert r["scale"] == 1 and r["glyph_px"] == pytest.approx(natural, abs=0.01), r
        else:
            assert r["glyph_px"] >= MIN_SCALE * natural - 0.01, r
    key = lambda r: (r["viewport"], r["formula"])  # noqa: E731
    scroll = {key(r): r["hidden_px"] for r in rows if r["policy"].startswith("scroll")}
    for r in rows:
        if r["policy"].startswith("scale to"):
            assert r["hidden_px"] <= scroll[key(r)] + PX, r


def test_no_errors_and_mathjax_is_served_locally(browser: Any, fixture_site: str) -> None:
    """Assertion 8: every file under /mathjax/ loads; no uncaught exception beyond the known
    Jupyter Book 1.0.4 one; no console error beyond the known theme message and favicon 404."""
    page = load(browser, fixture_site, 375)
    try:
        log = page.kexue_log
        fetched = page.evaluate("performance.getEntriesByType('resource').map((e) => e.name)")
    finally:
        page.context.close()
    assert any("/mathjax/" in url for url in fetched), "MathJax was not loaded from the book's own /mathjax/"
    assert not any(url.startswith("http") and "127.0.0.1" not in url for url in fetched if "mathjax" in url.lower())
    bad = [(s, u) for s, u in log.bad_responses if not u.endswith("/favicon.ico")]
    assert not bad, f"failed requests: {bad}"
    errors = [e for e in log.page_errors if not any(k in e for k in KNOWN_PAGE_ERRORS)]
    assert not errors, f"uncaught page errors: {errors}"
    for message in log.console_errors:
        if any(k in message for k in KNOWN_CONSOLE_ERRORS):
            continue
        assert "404" in message and "Failed to load resource" in message, f"console error: {message}"


def test_min_scale_is_one_constant_shared_with_the_chapter() -> None:
    """The chapter's Python model of the rule uses the script's MIN_SCALE."""
    chapter = (REPO / "chapters" / "miscellany" / "equations-that-fit.md").read_text(encoding="utf-8")
    found = re.search(r"^MIN_SCALE = ([0-9.]+)", chapter, flags=re.MULTILINE)
    assert found and float(found.group(1)) == MIN_SCALE
