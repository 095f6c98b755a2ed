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

.PHONY: book test extract colab clean

# The Colab setup cells are regenerated first: they follow repository.url in _config.yml.
book: $(INSTALLED)
	$(BIN)/python -m d2ldw.colab
	$(BIN)/jupyter-book build . -W -n --keep-going

test: $(INSTALLED)
	$(BIN)/python -m pytest

# Regenerate d2ldw's modules from the chapters' #@save cells (run as a script, so that it
# works even when a generated module is broken or missing).
extract: $(INSTALLED)
	$(BIN)/python d2ldw/extract.py

# Rewrite the Colab setup cell at the top of every chapter (after editing imports or the URL).
colab: $(INSTALLED)
	$(BIN)/python -m d2ldw.colab

$(INSTALLED): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --progress-bar off -r requirements.txt
	$(BIN)/python -m pip install --quiet --progress-bar off --no-deps -e .
	touch $@

clean:
	rm -rf _build
