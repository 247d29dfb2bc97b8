"""Tests of the book itself: table of contents, chapter pairs, chapter anatomy, configuration."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import jupytext
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(p for p in (ROOT / "chapters").rglob("*.md") if p.name != "verification.md")
PARTS = ["optimizers", "scaling", "lowrank", "architectures", "generative", "miscellany"]


def _config() -> dict:
    return yaml.safe_load((ROOT / "_config.yml").read_text())


def _toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = []
    for part in toc.get("parts", []):
        for chapter in part.get("chapters", []):
            files.append(chapter["file"])
    return files


def _ids(paths):
    return [str(p.relative_to(ROOT)) for p in paths]


def test_there_are_chapters():
    assert CHAPTERS, "no chapters found under chapters/"


def test_toc_and_files_agree():
    toc = _toc_files()
    listed = set(toc)
    assert len(listed) == len(toc), "a file is listed twice in _toc.yml"
    on_disk = {str(p.relative_to(ROOT).with_suffix("")) for p in CHAPTERS} | {"chapters/verification"}
    assert on_disk - listed == set(), "chapters missing from _toc.yml"
    assert listed - on_disk == set(), "_toc.yml lists files that do not exist"
    assert toc[-1] == "chapters/verification", "the verification report is the last page"


def test_parts_are_known_and_in_order():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    folders = []
    for part in toc["parts"]:
        for chapter in part["chapters"]:
            pieces = chapter["file"].split("/")
            if len(pieces) == 3:
                folders.append(pieces[1])
    assert set(folders) <= set(PARTS)
    order = [PARTS.index(f) for f in folders]
    assert order == sorted(order), "parts must appear in the order " + ", ".join(PARTS)
    for part in toc["parts"]:
        assert part["chapters"], f"part {part.get('caption')} has no chapter"


def test_chapters_live_in_part_folders_with_slug_names():
    for md in CHAPTERS:
        rel = md.relative_to(ROOT / "chapters")
        assert len(rel.parts) == 2 and rel.parts[0] in PARTS, f"{md}: not in a part folder"
        assert re.fullmatch(r"[a-z][a-z0-9-]*\.md", rel.name), f"{md}: file names are slugs (no numbers first)"


@pytest.mark.parametrize("md", CHAPTERS, ids=_ids(CHAPTERS))
def test_pair_is_in_sync_and_has_no_outputs(md: Path):
    ipynb = md.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb} is missing: run `make sync`"
    stored = json.loads(ipynb.read_text())
    for cell in stored["cells"]:
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"{ipynb}: stored outputs (pairs are kept output-free)"
            assert cell.get("execution_count") is None, f"{ipynb}: stored execution counts"
    expected = jupytext.read(md)
    actual = jupytext.read(ipynb)

    def cells(nb):
        return [(c.cell_type, c.source.strip(), sorted(c.metadata.get("tags", []))) for c in nb.cells]

    assert cells(expected) == cells(actual), f"{md} and {ipynb} differ: run `make sync`"


@pytest.mark.parametrize("md", CHAPTERS, ids=_ids(CHAPTERS))
def test_chapter_anatomy(md: Path):
    nb = jupytext.read(md)
    text = md.read_text()
    assert re.search(r"https://kexue\.fm/archives/\d+", text), f"{md}: no link to the original post"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.lstrip().startswith("# "), (
        f"{md}: must start with the title"
    )
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert len(code) >= 3
    setup = code[0]
    assert "remove-cell" in setup.metadata.get("tags", []), f"{md}: first code cell must be the hidden setup cell"
    assert '"google.colab" in sys.modules' in setup.source, f"{md}: setup cell must act only in Colab"
    config = _config()
    url = config["repository"]["url"].rstrip("/")
    branch = config["repository"]["branch"]
    assert f"git+{url}@{branch}" in setup.source, f"{md}: setup cell must install kexue from {url}@{branch}"
    imports = code[1]
    assert "hide-input" in imports.metadata.get("tags", [])
    assert f'kexue.begin("{md.stem}")' in imports.source, f"{md}: imports cell must call kexue.begin({md.stem!r})"
    assert code[-1].source.strip() == "claims.summary()", f"{md}: the last cell must be claims.summary()"
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    for needed in ("The question", "What was verified"):
        assert needed in headings, f"{md}: missing the section '## {needed}'"
    assert any(h.startswith("Beyond the post") for h in headings), f"{md}: missing '## Beyond the post'"
    assert not re.search(r"manual_seed\(\s*\d{3,}", text), f"{md}: hand-picked seed; use kexue.runtime"


def test_config_matches_the_design():
    config = _config()
    assert config["execute"]["execute_notebooks"] == "cache"
    sphinx = config["sphinx"]
    assert sphinx["config"]["nb_execution_raise_on_error"] is True
    assert sphinx["config"]["nb_execution_show_tb"] is True
    assert "sphinx_proof" in sphinx["extra_extensions"]
    assert "kexue.sphinxext" in sphinx["extra_extensions"]
    assert {"*.ipynb", "**/*.ipynb"} <= set(config["exclude_patterns"])
    assert config["launch_buttons"]["colab_url"].startswith("https://colab.research.google.com")
    assert ["html", "text/latex", 35] in sphinx["config"]["nb_mime_priority_overrides"]


def test_requirements_pin_torch_and_bound_the_rest():
    lines = [
        line.split("#")[0].strip()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.split("#")[0].strip()
    ]
    assert "torch==2.13.0" in lines
    for line in lines:
        if line.startswith("torch=="):
            continue
        assert ">=" in line and "<" in line, f"requirements.txt: {line!r} needs a lower and an upper bound"


def test_ci_script_runs_tests_and_strict_build():
    run = ROOT / ".ci" / "run"
    assert os.access(run, os.X_OK)
    text = run.read_text()
    assert "make test" in text
    assert "jupyter-book build . -W -n --keep-going" in text


@pytest.mark.parametrize("md", CHAPTERS, ids=_ids(CHAPTERS))
def test_citing_chapters_have_their_own_bibliography(md: Path):
    text = md.read_text()
    if re.search(r"\{cite(?::\w+)?\}`", text):
        assert re.search(r"```\{bibliography\}\s*\n:filter: docname in docnames", text), (
            f"{md}: cites papers but has no bibliography block with `:filter: docname in docnames`"
        )


def test_cited_keys_exist():
    bib = (ROOT / "references.bib").read_text()
    keys = set(re.findall(r"@\w+\{([^,]+),", bib))
    for md in [*CHAPTERS, ROOT / "intro.md"]:
        for group in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", md.read_text()):
            for key in group.split(","):
                assert key.strip() in keys, f"{md}: cites unknown key {key.strip()!r}"
