"""Sphinx extension: the book's verification report, built from the executed chapters.

Each chapter ends with ``kexue.claims.summary()``, whose output carries a copy of the
chapter's claims as JSON in its ``text/plain`` part (the HTML page shows the table). When
Sphinx reads a chapter, MyST-NB turns every output into a mime bundle that still holds
all its mime types; this extension picks the claims out of it. The directive

.. code-block:: markdown

    ```{kexue-claims-report}
    ```

is replaced, once every chapter has been read, by an overview table and one table of
claims per chapter. Nothing in the report is typed by hand: a chapter that was not
executed, or that ended without its summary, is reported as a build warning.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
from typing import Any

from docutils import nodes
from docutils.parsers.rst import Directive

from .claims import REPORT_MARKER

ENV_KEY = "kexue_claims"


class claims_report(nodes.General, nodes.Element):
    """Placeholder for the report, filled in at ``doctree-resolved``."""


class ClaimsReportDirective(Directive):
    has_content = False

    def run(self) -> list[nodes.Node]:
        env = self.state.document.settings.env
        env.kexue_report_docs = getattr(env, "kexue_report_docs", set()) | {env.docname}
        return [claims_report("")]


def _store(env: Any) -> dict[str, Any]:
    if not hasattr(env, ENV_KEY):
        setattr(env, ENV_KEY, {})
    return getattr(env, ENV_KEY)


def collect_claims(app: Any, doctree: nodes.document) -> None:
    """``doctree-read``: find the claims JSON in the chapter's mime bundles."""
    env = app.env
    found = None
    for node in doctree.findall(nodes.container):
        if node.get("mime_type") != "text/plain":
            continue
        text = node.astext().strip()
        if text.startswith(REPORT_MARKER):
            found = json.loads(text[len(REPORT_MARKER) :])
    store = _store(env)
    if found is not None:
        store[env.docname] = found
    else:
        store.pop(env.docname, None)


def purge(app: Any, env: Any, docname: str) -> None:
    _store(env).pop(docname, None)


def merge(app: Any, env: Any, docnames: set[str], other: Any) -> None:
    _store(env).update(getattr(other, ENV_KEY, {}))


def always_outdated(app: Any, env: Any, added: set[str], changed: set[str], removed: set[str]) -> list[str]:
    """The report depends on every chapter: re-read it on every build."""
    return sorted(getattr(env, "kexue_report_docs", set()))


def _versions() -> str:
    parts = [f"Python {platform.python_version()}"]
    for pkg in ("torch", "sympy", "numpy", "scipy", "matplotlib", "jupyter-book", "myst-nb"):
        try:
            parts.append(f"{pkg} {importlib.metadata.version(pkg)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return ", ".join(parts)


def _table(headers: list[str], rows: list[list[nodes.Node | str]], widths: list[int]) -> nodes.table:
    table = nodes.table(classes=["kexue-report-table"])
    group = nodes.tgroup(cols=len(headers))
    table += group
    for w in widths:
        group += nodes.colspec(colwidth=w)
    thead = nodes.thead()
    group += thead
    row = nodes.row()
    for h in headers:
        row += nodes.entry("", nodes.paragraph(text=h))
    thead += row
    tbody = nodes.tbody()
    group += tbody
    for cells in rows:
        row = nodes.row()
        for cell in cells:
            entry = nodes.entry()
            entry += cell if isinstance(cell, nodes.Node) else nodes.paragraph(text=str(cell))
            row += entry
        tbody += row
    return table


def fill_report(app: Any, doctree: nodes.document, fromdocname: str) -> None:
    """``doctree-resolved``: replace the placeholder by the tables."""
    from sphinx.util import logging

    logger = logging.getLogger(__name__)
    env = app.env
    store = _store(env)
    placeholders = list(doctree.findall(claims_report))
    if not placeholders:
        return
    # Chapters in reading order of the table of contents; every chapter must report.
    ordered = [
        d for d in env.found_docs if d.startswith("chapters/") and d not in getattr(env, "kexue_report_docs", set())
    ]
    try:
        toc_order = {d: i for i, d in enumerate(env.toctree_includes.get(env.config.root_doc, []))}
        flat = []
        stack = list(env.toctree_includes.get(env.config.root_doc, []))
        while stack:
            doc = stack.pop(0)
            flat.append(doc)
            stack[0:0] = env.toctree_includes.get(doc, [])
        toc_order = {d: i for i, d in enumerate(flat)}
    except AttributeError:  # pragma: no cover
        toc_order = {}
    ordered.sort(key=lambda d: (toc_order.get(d, 10**6), d))

    overview_rows, sections = [], []
    total_claims = total_sym = 0
    for doc in ordered:
        title = env.titles[doc].astext() if doc in env.titles else doc
        ref = nodes.reference("", title, internal=True, refuri=app.builder.get_relative_uri(fromdocname, doc))
        para = nodes.paragraph()
        para += ref
        data = store.get(doc)
        if data is None:
            logger.warning(
                f"verification report: chapter {doc!r} reported no claims (no claims.summary() output)", location=doc
            )
            overview_rows.append([para, "-", "-", "missing", "-", "-", "-"])
            continue
        rows = data["claims"]
        n_sym = sum(c["kind"] == "symbolic" for c in rows)
        n_pass = sum(bool(c["passed"]) for c in rows)
        total_claims += len(rows)
        total_sym += n_sym
        run = data.get("run", {})
        status = f"{n_pass}/{len(rows)} hold" if n_pass == len(rows) else f"{len(rows) - n_pass} FAILED"
        overview_rows.append(
            [
                para,
                str(len(rows)),
                f"{n_sym} / {len(rows) - n_sym}",
                status,
                f"{data.get('seconds', 0):.1f}",
                f"{run.get('device', '?')}",
                str(run.get("seed", "?")),
            ]
        )
        section = nodes.section(ids=[f"claims-{doc.replace('/', '-')}"])
        heading = nodes.rubric()
        heading += nodes.Text(title + " ")
        section += heading
        meta = nodes.paragraph(
            text=f"Run: {run.get('summary', '?')}; {data.get('seconds', 0):.1f} s for the whole chapter."
        )
        section += meta
        claim_rows = []
        for c in rows:
            mark = "\u2714 " if c["passed"] else "\u2718 "
            if c["kind"] == "symbolic":
                # The expressions themselves are on the chapter's page; here, only the verdict.
                result = mark + ("proved" if c["passed"] else "not proved")
            else:
                result = mark + f"{c['measured']} (expected {c['expected']})"
            tolerance = c["tolerance"] + (f"; {c['why']}" if c.get("why") else "")
            claim_rows.append(
                [c["id"], c["statement"], c["kind"], result, tolerance, c["device"], f"{c['seconds']:.2f}"]
            )
        section += _table(
            ["id", "statement", "kind", "result", "tolerance and why", "device", "s"],
            claim_rows,
            [4, 30, 7, 25, 25, 5, 4],
        )
        sections.append(section)

    intro = nodes.paragraph(
        text=f"{total_claims} claims in {len(overview_rows)} chapters ({total_sym} symbolic, "
        f"{total_claims - total_sym} numeric). Book built with {_versions()}."
    )
    overview = _table(
        ["chapter", "claims", "symbolic / numeric", "status", "s", "device", "seed"],
        overview_rows,
        [30, 6, 10, 10, 5, 6, 4],
    )
    for placeholder in placeholders:
        placeholder.replace_self([intro, overview, *sections])


def use_local_mathjax(app: Any, config: Any) -> None:
    """``config-inited``: serve MathJax 3 from the book itself instead of a CDN.

    The PyPI package ``django-static-mathjax`` (no dependencies) ships MathJax 3's ``es5``
    build under ``mathjax/static/mathjax``; that folder is copied to ``_build/html/mathjax``
    through ``html_extra_path``, and ``mathjax_path`` points at it. Without the package
    the CDN default is kept. Set ``kexue_local_mathjax = False`` to keep the CDN anyway.
    """
    if not config.kexue_local_mathjax:
        return
    try:
        import mathjax  # provided by django-static-mathjax
    except ImportError:
        return
    from pathlib import Path

    static = Path(mathjax.__file__).parent / "static"
    if not (static / "mathjax" / "es5" / "tex-mml-chtml.js").exists():
        return
    config.html_extra_path = [*config.html_extra_path, str(static)]
    # Relative paths are taken relative to _static/ by Sphinx.
    config.mathjax_path = "../mathjax/es5/tex-mml-chtml.js"


def setup(app: Any) -> dict[str, Any]:
    app.add_config_value("kexue_local_mathjax", True, "html")
    app.connect("config-inited", use_local_mathjax)
    app.add_node(claims_report)
    app.add_directive("kexue-claims-report", ClaimsReportDirective)
    app.connect("doctree-read", collect_claims)
    app.connect("env-purge-doc", purge)
    app.connect("env-merge-info", merge)
    app.connect("env-get-outdated", always_outdated)
    app.connect("doctree-resolved", fill_report)
    return {"version": "0.1", "parallel_read_safe": True, "parallel_write_safe": True, "env_version": 1}
