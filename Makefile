# `make book` and `make test` do all set-up themselves on a fresh clone: they create .venv
# with Python 3.11, install requirements.txt and d2ldw (editable), then build or test.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Freed memory is reused instead of returned: without this, the page faults of fresh mappings
# can dominate PyTorch's timings on a virtual machine (see the performance chapter).
export MALLOC_MMAP_THRESHOLD_ := 1000000000
export MALLOC_TRIM_THRESHOLD_ := 1000000000
INSTALLED := $(VENV)/.installed
# npm's record of an install: the widget manager and require.js the book serves itself
NODE_MODULES := node_modules/.package-lock.json
# One folder for the benchmarks' results (d2ldw.bench_cli.cached_run): the book's pages, the
# strict build of `make test` and its Colab runs all read and fill it, so each benchmark is
# measured once, and again only when a module it depends on changes.
export D2LDW_BENCH_CACHE ?= $(CURDIR)/_build/bench

.PHONY: book test test-fast test-reduced-isa extract colab dist clean

# The package must match the chapters' #@save cells (else: make extract), and the Colab
# setup cells are regenerated: they follow repository.url in _config.yml.
book: $(INSTALLED) $(NODE_MODULES)
	$(BIN)/python tools/extract.py --check
	$(BIN)/python tools/colab.py
	$(BIN)/jupyter-book build . -W -n --keep-going

# With every framework installed, a test that would skip for a missing one fails instead
# (D2LDW_FULL_STACK, see tests/test_package.py). pytest-xdist spreads tests over the cores,
# but never while something is timed: the book times its benchmarks and several pages.
PYTEST := D2LDW_FULL_STACK=1 $(BIN)/python -m pytest -rs
PARALLEL := -n $(shell nproc) --dist loadgroup

# Lint first (seconds), then the whole suite in two phases (markers in pyproject.toml):
# 1. alone on the machine: the strict build of the book (it runs the benchmarks and times
#    pages), the browser and the prose checks that read it, whole benchmark commands;
# 2. on every core: the rest, the Colab runs of every chapter included (they time nothing
#    the book shows, and find the benchmarks measured in phase 1).
test: $(INSTALLED) $(NODE_MODULES)
	$(BIN)/ruff check
	$(PYTEST) -m "slow and not colab"
	$(PYTEST) -m "not slow or colab" $(PARALLEL)

# The inner loop: everything but the tests marked slow (the strict build of the book, the
# browser, the Colab runs, whole benchmarks). A few minutes.
test-fast: $(INSTALLED)
	$(BIN)/ruff check
	$(PYTEST) -m "not slow" $(PARALLEL)

# The CPU-dependent tests (marker cpu_dependent) again, as on a smaller CPU: PyTorch and
# oneDNN held to AVX2, TVM building for the generic x86-64 (SSE2, no FMA). Every x86-64 CPU
# with AVX2 can run it.
REDUCED_ISA := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 D2LDW_LLVM_MCPU=x86-64
test-reduced-isa: $(INSTALLED)
	env $(REDUCED_ISA) $(BIN)/python -m pytest -m cpu_dependent $(PARALLEL)

# Regenerate d2ldw's modules from the chapters' #@save cells (a script outside the package,
# so that it works even when a generated module is broken or missing).
extract: $(INSTALLED)
	$(BIN)/python tools/extract.py

# Rewrite the Colab setup cell at the top of every chapter (after editing imports or the URL).
colab: $(INSTALLED)
	$(BIN)/python tools/colab.py

# The sdist and the wheel, as the release workflow builds them on a tag (the wheel from the
# sdist) and checks them before PyPI gets them; the version is d2ldw/__init__.py's.
dist: $(INSTALLED)
	rm -rf dist
	$(BIN)/python -m build
	$(BIN)/python -m twine check --strict dist/*

$(INSTALLED): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --progress-bar off -r requirements.txt
	$(BIN)/python -m pip install --quiet --progress-bar off --no-deps -e .
	touch $@

# Needs Node.js (20) and npm; installs exactly package-lock.json's versions.
$(NODE_MODULES): package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund

clean:
	rm -rf _build
