"""The reading experience of every chapter page of the built book (``_build/html``).

At a phone width (375 px) and a desktop width (1280 px): the page does not scroll sideways,
every formula fits its column or is at ``MIN_SCALE`` (then it scrolls in its own box),
numbered equations keep clear of their numbers, the maths is typeset (no raw TeX left, no
MathJax error nodes), no script of the book throws, and a resize round trip returns to the
same scales. Run after ``make book``: ``make test-browser``.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import (
    BOOK_HTML,
    MIN_SCALE,
    chapter_pages,
    chromium,
    measure_math,
    page_overflow,
    resize,
    unavailable,
    wait_for_fit,
)
from test_mathjax_fit import KNOWN_CONSOLE_ERRORS, KNOWN_PAGE_ERRORS, PX, SCALE_TOL, SLACK_PX

PAGES = chapter_pages(BOOK_HTML)

_RAW_TEX_JS = r"""
() => {
  const skip = new Set(["PRE", "CODE", "SCRIPT", "STYLE", "TEXTAREA", "KBD", "SAMP", "MJX-CONTAINER"]);
  const pattern = /\\\(|\\\[|\$\$|\\begin\{|\$[^$\s][^$]*\\[A-Za-z]+[^$]*\$/;
  const found = [];
  const walker = document.createTreeWalker(document.querySelector("main") || document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    let p = node.parentElement, skipped = false;
    for (; p; p = p.parentElement) if (skip.has(p.tagName) || p.classList.contains("highlight")) { skipped = true; break; }
    if (!skipped && pattern.test(node.textContent)) found.push(node.textContent.trim().slice(0, 120));
  }
  return {raw: found, merror: document.querySelectorAll("mjx-merror").length};
}
"""


def check_layout(page: Any, where: str) -> list[float]:
    o = page_overflow(page)
    assert o["scroll"] <= o["inner"], f"{where}: the page is {o['scroll']} px wide in a {o['inner']} px viewport"
    records = measure_math(page)
    for r in records:
        if not r["visible"]:
            continue  # e.g. inside a collapsed cell: fitted when it is shown
        assert r["scale"] is not None, f"{where}: formula {r['index']} ({r['tex']!r}) was not fitted"
        if r["scale"] > MIN_SCALE:
            assert r["fitted"] <= r["avail"] + PX, (
                f"{where}: formula {r['index']} ({r['tex']!r}) is {r['fitted']:.1f} px in {r['avail']:.1f} px"
            )
        if r["eqno_left"] is not None and r["eqno_visible"]:
            assert r["container_right"] <= r["eqno_left"] + SLACK_PX, (
                f"{where}: formula {r['index']} overlaps its number"
            )
    return [-1.0 if r["scale"] is None else r["scale"] for r in records]


@pytest.mark.skipif(bool(PAGES), reason="the book is built")
def test_the_book_is_built() -> None:
    unavailable(f"no chapter pages under {BOOK_HTML / 'chapters'} (run `make book` first)")


@pytest.mark.parametrize("path", PAGES)
def test_chapter_page_reads_well(browser: Any, book_site: tuple[str, Any], path: str) -> None:
    base, _ = book_site
    page = chromium(browser, (375, 800))
    try:
        page.goto(base + path)
        wait_for_fit(page)
        typeset = page.evaluate(_RAW_TEX_JS)
        assert not typeset["raw"], f"{path}: raw TeX left in the text: {typeset['raw'][:5]}"
        assert typeset["merror"] == 0, f"{path}: {typeset['merror']} MathJax error nodes (mjx-merror)"
        at_375 = check_layout(page, f"{path} at 375 px")
        resize(page, 1280)
        check_layout(page, f"{path} at 1280 px")
        resize(page, 375)
        assert check_layout(page, f"{path} back at 375 px") == pytest.approx(at_375, abs=SCALE_TOL)
        log = page.kexue_log
    finally:
        page.context.close()
    errors = [e for e in log.page_errors if not any(k in e for k in KNOWN_PAGE_ERRORS)]
    assert not errors, f"{path}: uncaught page errors: {errors}"
    bad = [(s, u) for s, u in log.bad_responses if not u.endswith("/favicon.ico")]
    assert not bad, f"{path}: failed requests: {bad}"
    for message in log.console_errors:
        if any(k in message for k in KNOWN_CONSOLE_ERRORS):
            continue
        assert "404" in message and "Failed to load resource" in message, f"{path}: console error: {message}"
