# Scientific Spaces, executed: the two commands are `make book` and `make test`.
# Both create .venv on first use and keep it in step with requirements.txt and pyproject.toml.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# jupyter-cache does not notice edits to src/: when the library's content hash changes,
# the execution cache is cleared so every chapter re-runs against the new library.
SRC_HASH_FILE := _build/.kexue-src-hash
CHAPTERS_MD   := $(shell find chapters -name '*.md' ! -name verification.md 2>/dev/null)

.PHONY: book test sync clean lint check-cache help preview test-browser

help:
	@echo "make book   build the HTML book into _build/html (executes the chapters)"
	@echo "make test   library tests, book tests and every chapter as a notebook"
	@echo "make test-browser  headless-Chromium tests of the built book (after make book)"
	@echo "make sync   re-pair chapters/*.md with their .ipynb (jupytext --sync)"
	@echo "make lint   ruff on the library and tests"
	@echo "make clean  remove the build and the execution cache (keeps .venv)"

$(STAMP): requirements.txt pyproject.toml
	@test -n "$(PYTHON)" || { echo "no python3.11 or python3 on PATH; run 'make PYTHON=/path/to/python3.11 ...'"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3" >/dev/null
	@touch $(STAMP)

check-cache: $(STAMP)
	@mkdir -p _build
	@new=$$(find src -name '*.py' -type f | LC_ALL=C sort | xargs cat | sha256sum | cut -d' ' -f1); \
	old=$$(cat $(SRC_HASH_FILE) 2>/dev/null); \
	if [ "$$new" != "$$old" ]; then \
	  if [ -d _build/.jupyter_cache ]; then echo "kexue changed: clearing the execution cache"; fi; \
	  rm -rf _build/.jupyter_cache _build/jupyter_execute; \
	  echo "$$new" > $(SRC_HASH_FILE); \
	fi

book: check-cache
	$(BIN)/jupyter-book build . --keep-going
	@echo
	@echo "The book is in _build/html. Open: file://$(CURDIR)/_build/html/index.html"

test: $(STAMP)
	$(BIN)/python -m pytest

# The reading experience of the built book in headless Chromium (Debian's /usr/bin/chromium,
# driven by Playwright; no browser download): formula fitting, no sideways scroll, maths typeset.
# Needs _build/html (make book). Skips locally when Chromium is missing; fails when CI is set.
test-browser: $(STAMP)
	$(BIN)/python -m pytest -o addopts="" -p no:cacheprovider --durations=10 tests/browser

sync: $(STAMP)
	$(BIN)/jupytext --sync $(CHAPTERS_MD)

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

clean:
	rm -rf _build .pytest_cache .ruff_cache

# Build one chapter alone (with the landing page) into /tmp, to look at it while writing:
#   make preview CHAPTER=chapters/optimizers/gradient-clipping.md
preview: $(STAMP)
	@test -n "$(CHAPTER)" || { echo "usage: make preview CHAPTER=chapters/<part>/<slug>.md"; exit 2; }
	@name=$$(basename $(CHAPTER) .md); toc=/tmp/kexue-preview-$$name.yml; \
	printf 'format: jb-book\nroot: intro\nchapters:\n  - file: %s\n' "$${CHAPTER%.md}" > $$toc; \
	$(BIN)/jupyter-book build . --toc $$toc --path-output /tmp/kexue-preview-$$name --keep-going && \
	echo "Preview: file:///tmp/kexue-preview-$$name/_build/html/$${CHAPTER%.md}.html"
