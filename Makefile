# Each target sets itself up: it creates the virtual environment and installs on first use
# (and again whenever pyproject.toml or this file changes), then runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.robustlab-installed
PYTEST_ARGS ?=

.PHONY: setup test book bench zoo clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,book,grading]"
	# Test-only peer for agreement checks and bench/. --no-deps: its pinned old requests
	# would break jupyter and nbgrader in this environment.
	$(BIN)/python -m pip install --quiet --no-deps "torchattacks==3.5.1"
	$(BIN)/python -c "import robustlab, torchvision; print('robustlab', robustlab.__version__, 'torchvision', torchvision.__version__)"
	touch $@

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

book: $(STAMP)
	$(BIN)/jupyter-book build --all -W --keep-going .

bench: $(STAMP)
	$(BIN)/python bench/attacks.py
	$(BIN)/python bench/train.py

# Retrain every zoo model from scratch (needs the full MNIST under $$ROBUSTLAB_DATA).
zoo: $(STAMP)
	$(BIN)/robustlab zoo build

clean:
	rm -rf _build .pytest_cache
