"""Browser tests of the rendered book: headless Chromium (Debian's) driven by Playwright.

They check ``_static/mathjax-fit.js`` (formulas wider than their column are scaled down to
fit, down to ``MIN_SCALE``) on a fixture book built here from the repository's
``_config.yml`` and ``_static``, and the reading experience of every chapter page of the
real book in ``_build/html`` (``make book`` first; ``make test-browser`` runs them).

Nothing is downloaded: Playwright drives ``/usr/bin/chromium`` (``apt-get install
chromium``), never a browser of its own. When Chromium, Playwright or the built book is
missing the tests are skipped, except under CI (the ``CI`` environment variable set), where
they fail.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).resolve().parent / "fixture"
CHROMIUM = Path(os.environ.get("KEXUE_CHROMIUM", "/usr/bin/chromium"))
#: The built book; ``KEXUE_BOOK_HTML`` points elsewhere (e.g. a preview build).
BOOK_HTML = Path(os.environ.get("KEXUE_BOOK_HTML", REPO / "_build" / "html"))
FIT_TIMEOUT_MS = 20_000
#: Time for a resize to be re-fitted (the fit runs in the next animation frame).
SETTLE_MS = 400


def unavailable(reason: str) -> None:
    """Skip the test, or fail it under CI, where everything must be there."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (the CI environment variable is set: browser tests may not be skipped)")
    pytest.skip(reason)


def min_scale_from_script() -> float:
    """The ``MIN_SCALE`` constant of ``_static/mathjax-fit.js`` (the one place it is set)."""
    import re

    text = (REPO / "_static" / "mathjax-fit.js").read_text(encoding="utf-8")
    found = re.search(r"var MIN_SCALE = ([0-9.]+);", text)
    assert found, "mathjax-fit.js must define `var MIN_SCALE = <number>;`"
    return float(found.group(1))


MIN_SCALE = min_scale_from_script()


# ----------------------------------------------------------------------------- serving


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve_dir(path: Path | str) -> tuple[str, Callable[[], None]]:
    """Serve ``path`` over HTTP on 127.0.0.1 (a free port) from a thread.

    Returns ``(base_url, stop)``; ``base_url`` ends in ``/``. (file:// URLs can block fonts.)
    """
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"path must be a directory, got {root}")
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return f"http://127.0.0.1:{server.server_address[1]}/", stop


# ----------------------------------------------------------------------------- browser


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Chromium for the session (Debian's binary, ``--no-sandbox`` for root)."""
    if not CHROMIUM.exists():
        unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("Playwright for Python is not installed (pip install playwright)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


class PageLog:
    """What a page reported while loading: uncaught exceptions, console errors, bad responses."""

    def __init__(self) -> None:
        self.page_errors: list[str] = []
        self.console_errors: list[str] = []
        self.bad_responses: list[tuple[int, str]] = []


def chromium(browser: Any, viewport: tuple[int, int] = (375, 800)) -> Any:
    """A new page of ``browser`` at ``viewport`` whose errors are logged in ``page.kexue_log``."""
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    page = context.new_page()
    log = PageLog()
    page.on("pageerror", lambda exc: log.page_errors.append(f"{exc.name}: {exc.message}\n{exc.stack or ''}"))
    page.on("console", lambda msg: log.console_errors.append(msg.text) if msg.type == "error" else None)
    page.on("response", lambda r: log.bad_responses.append((r.status, r.url)) if r.status >= 400 else None)
    page.kexue_log = log
    return page


def wait_for_fit(page: Any) -> None:
    """Wait until mathjax-fit.js has fitted the page (``html[data-mathjax-fit]`` set)."""
    page.wait_for_selector("html[data-mathjax-fit]", state="attached", timeout=FIT_TIMEOUT_MS)


def resize(page: Any, width: int, height: int = 800) -> None:
    """Resize the viewport and give the re-fit (next animation frame) time to run."""
    page.set_viewport_size({"width": width, "height": height})
    page.wait_for_timeout(SETTLE_MS)


_MEASURE_JS = """
() => {
  const out = [];
  const cw = (el) => {
    const s = getComputedStyle(el);
    return el.clientWidth - parseFloat(s.paddingLeft) - parseFloat(s.paddingRight);
  };
  const blockOf = (el) => {
    for (let p = el.parentElement; p; p = p.parentElement) {
      const d = getComputedStyle(p).display;
      if (["block", "flex", "grid", "list-item", "flow-root", "table-cell"].includes(d)) return p;
    }
    return document.body;
  };
  document.querySelectorAll('mjx-container[jax="CHTML"]').forEach((c, i) => {
    const m = c.querySelector("mjx-math");
    const display = c.getAttribute("display") === "true";
    const eqno = display && c.parentElement ? c.parentElement.querySelector(":scope > span.eqno") : null;
    const fitted = m.getBoundingClientRect().width;
    const saved = m.style.fontSize;
    m.style.fontSize = "";
    const natural = m.getBoundingClientRect().width;
    m.style.fontSize = saved;
    const cr = c.getBoundingClientRect();
    const visible = cr.width > 0 || cr.height > 0;
    out.push({
      index: i,
      tex: (c.querySelector("mjx-assistive-mml") || c).textContent.slice(0, 60),
      display: display,
      visible: visible,
      scale: c.dataset.fitScale === undefined ? null : parseFloat(c.dataset.fitScale),
      font_size: m.style.fontSize,
      natural: natural,
      fitted: fitted,
      avail: display ? cw(c) : cw(blockOf(c)),
      container_right: cr.right,
      eqno_left: eqno ? eqno.getBoundingClientRect().left : null,
      eqno_visible: eqno ? eqno.getBoundingClientRect().width > 0 : false,
    });
  });
  return out;
}
"""


def measure_math(page: Any) -> list[dict[str, Any]]:
    """One record per ``mjx-container``: display flag, fit scale, natural and fitted
    ``mjx-math`` width, available width, container right edge and equation-number left edge.

    The natural width is measured by clearing the fit for a moment and restoring it in the
    same script (no frame is painted in between).
    """
    return page.evaluate(_MEASURE_JS)


def page_overflow(page: Any) -> dict[str, float]:
    """Page-level horizontal overflow: ``scrollWidth`` of the document against ``innerWidth``."""
    return page.evaluate(
        "() => ({scroll: document.documentElement.scrollWidth, inner: window.innerWidth,"
        " client: document.documentElement.clientWidth})"
    )


# ----------------------------------------------------------------------------- books


def _build_fixture_book(dest: Path) -> Path:
    """A one-page Jupyter Book with the repository's configuration, static files and the
    fixture page ``fixture/formulas.md``; returns its ``_build/html``."""
    book = dest / "book"
    book.mkdir(parents=True)
    shutil.copy(REPO / "_config.yml", book / "_config.yml")
    shutil.copy(REPO / "references.bib", book / "references.bib")
    shutil.copytree(REPO / "_static", book / "_static")
    shutil.copy(FIXTURE / "formulas.md", book / "formulas.md")
    (book / "_toc.yml").write_text("format: jb-book\nroot: formulas\n", encoding="utf-8")
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb) if jb.exists() else "jupyter-book", "build", str(book), "-W", "-n", "--keep-going"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=book)
    html = book / "_build" / "html"
    if result.returncode != 0 or not (html / "formulas.html").exists():
        raise RuntimeError(
            f"fixture book build failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return html


@pytest.fixture(scope="session")
def fixture_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of the fixture page, served over HTTP for the session."""
    try:
        import jupyter_book  # noqa: F401
    except ImportError:
        unavailable("jupyter-book is not installed: cannot build the fixture book")
    html = _build_fixture_book(tmp_path_factory.mktemp("fixture-book"))
    base, stop = serve_dir(html)
    yield base + "formulas.html"
    stop()


@pytest.fixture(scope="session")
def book_site() -> Iterator[tuple[str, Path]]:
    """``(base_url, html_dir)`` of the real built book."""
    if not (BOOK_HTML / "index.html").exists():
        unavailable(f"no built book at {BOOK_HTML} (run `make book` first)")
    base, stop = serve_dir(BOOK_HTML)
    yield base, BOOK_HTML
    stop()


def chapter_pages(html: Path = BOOK_HTML) -> list[str]:
    """Paths (relative to the book's HTML root) of every chapter page."""
    root = html / "chapters"
    if not root.is_dir():
        return []
    return sorted(p.relative_to(html).as_posix() for p in root.rglob("*.html"))
