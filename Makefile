# Each target sets itself up: it creates the virtual environment and installs on first use
# (and again whenever pyproject.toml or this file changes), then runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.robustlab-installed
PYTEST_ARGS ?=

.PHONY: setup test book notebooks browser explore exercises autograde feedback grades bench zoo smoothing-results interpret-results evaluate-results bounds-results training-results clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,book,grading,explore]"
	# Test-only peer for agreement checks and bench/. --no-deps: its pinned old requests
	# would break jupyter and nbgrader in this environment.
	$(BIN)/python -m pip install --quiet --no-deps "torchattacks==3.5.1"
	$(BIN)/python -c "import robustlab, torchvision; print('robustlab', robustlab.__version__, 'torchvision', torchvision.__version__)"
	touch $@

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

book: $(STAMP)
	$(BIN)/jupyter-book build --all -W --keep-going .

# Debian's chromium for the browser tests (tests/test_book.py, tests/test_explorer.py); Playwright's
# own browser download is not used. Needs root and apt; a no-op where chromium is installed.
CHROMIUM ?= /usr/bin/chromium
browser:
	test -x $(CHROMIUM) || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	$(CHROMIUM) --version 2>/dev/null

# The .ipynb twin of every chapter with code, for Binder and Colab (the .md is the source;
# tests/test_book.py checks that the twins are in sync).
notebooks: $(STAMP)
	$(BIN)/jupytext --update --from myst --to ipynb $$(grep -l '{code-cell}' book/*.md)

# The explorer as a web app (Voila): http://localhost:$(EXPLORE_PORT)/. Each visitor gets a kernel;
# a cell may run 120 s, and kernels idle for 15 minutes are shut down (checked every minute).
EXPLORE_PORT ?= 8866
VOILA_FLAGS = --no-browser --port=$(EXPLORE_PORT) --VoilaExecutor.timeout=120 \
	--MappingKernelManager.cull_idle_timeout=900 --MappingKernelManager.cull_interval=60
explore: $(STAMP)
	$(BIN)/voila apps/explorer.ipynb $(VOILA_FLAGS)
print-voila-flags:  # for tests/test_explorer.py, which serves the app with the same settings
	@echo $(VOILA_FLAGS)

# nbgrader (see nbgrader_config.py and the book's "How to run the exercises"). nbgrader calls
# alembic for its gradebook, hence the virtual environment's scripts on PATH.
COURSE ?= .
ASSIGNMENTS ?= $(notdir $(patsubst %/,%,$(wildcard $(COURSE)/solutions/*/)))
NBGRADER := PATH="$(abspath $(BIN)):$$PATH" $(abspath $(BIN))/nbgrader
exercises: $(STAMP)
	for a in $(ASSIGNMENTS); do $(NBGRADER) generate_assignment $$a --force || exit 1; done
# Grades every submission of every assignment (in COURSE, the repository by default). A notebook
# nbgrader cannot grade does not stop the others: each assignment's log is in
# autograde-<assignment>.log, and the submissions that could not be graded are listed at the end.
autograde: $(STAMP)
	@failed=; for a in $(ASSIGNMENTS); do \
	  echo "autograding $$a"; \
	  (cd $(COURSE) && $(NBGRADER) autograde $$a) > $(COURSE)/autograde-$$a.log 2>&1 || failed="$$failed $$a"; \
	done; \
	if [ -n "$$failed" ]; then \
	  echo "not graded (see autograde-<assignment>.log):"; \
	  for a in $$failed; do grep -h "error processing" $(COURSE)/autograde-$$a.log || echo "  $$a: nbgrader failed"; done; \
	  exit 1; \
	fi; echo "every submission graded"
feedback: $(STAMP)
	for a in $(ASSIGNMENTS); do $(NBGRADER) generate_feedback $$a || exit 1; done
grades: $(STAMP)
	$(NBGRADER) export --to grades.csv

bench: $(STAMP)
	$(BIN)/python bench/attacks.py
	$(BIN)/python bench/evaluate.py
	$(BIN)/python bench/bounds.py
	$(BIN)/python bench/train.py
	$(BIN)/python bench/smoothing.py
	$(BIN)/python bench/saliency.py
	$(BIN)/python bench/book.py
	$(BIN)/python bench/explorer.py
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python bench/grading.py

# Retrain every zoo model from scratch (needs the full MNIST under $$ROBUSTLAB_DATA).
zoo: $(STAMP)
	$(BIN)/robustlab zoo build

# Randomized-smoothing certificates behind the book's figures and tables (results/smoothing/):
# about 45 minutes on a 2-core CPU; needs MNIST test under $$ROBUSTLAB_DATA (else it uses the
# embedded 5,000 digits and says so).
SMOOTH := results/smoothing
CERTIFY := $(BIN)/robustlab certify --n0 100 --n 10000 --alpha 0.001 -N 1000 --seed 0 --results-dir $(SMOOTH)
smoothing-results: $(STAMP)
	mkdir -p $(SMOOTH)
	for s in 0.25 0.5 1.0; do $(CERTIFY) mnist-gaussian-$$s --sigma $$s --markdown $(SMOOTH)/gaussian-$$s.md; done
	$(CERTIFY) mnist-standard mnist-pgd-linf-0.3 --sigma 0.25,0.5,1.0 --markdown $(SMOOTH)/standard-adversarial.md
	$(CERTIFY) mnist-pgd-l2-2.0 --sigma 0.5 --markdown $(SMOOTH)/pgd-l2.md
	$(BIN)/robustlab certify mnist-gaussian-0.5 --sigma 0.5 --n0 100 --n 100000 --alpha 0.001 -N 100 \
		--seed 0 --results-dir $(SMOOTH)/n100000 --markdown $(SMOOTH)/gaussian-0.5-n100000.md
	$(BIN)/python -c "import matplotlib; matplotlib.use('Agg'); from robustlab.smoothing import CertificationResults as R, plot_certified_accuracy as p; \
		ax = p({f'mnist-gaussian-{s}, sigma={s}': R.from_csv(f'$(SMOOTH)/mnist-gaussian-{s}-sigma{float(s):g}.csv') for s in ('0.25', '0.5', '1.0')}); \
		ax.figure.savefig('$(SMOOTH)/gaussian-curves.png', dpi=150, bbox_inches='tight')"

# The attack suite on every zoo classifier and threat model (results/evaluate/*.json, the first
# 1,000 MNIST test digits; results/evaluate/full/: all 10,000 for the trade-off chapter's curve,
# the standard and PGD Linf models at Linf 0.1/0.2/0.3),
# also stored in the cards. Hours on a 2-core CPU; finished records are reused and a killed run
# resumes. Needs MNIST test under $$ROBUSTLAB_DATA.
evaluate-results: $(STAMP)
	$(BIN)/robustlab evaluate $$($(BIN)/python -c "from robustlab import zoo; print(' '.join(zoo.classifiers()))") \
		-n 1000 --results-dir results/evaluate --update-cards --batch-size 1000 --markdown results/evaluate/zoo-1000.md
	$(BIN)/robustlab evaluate mnist-standard mnist-pgd-linf-0.1 mnist-pgd-linf-0.2 mnist-pgd-linf-0.3 -n 10000 \
		--threat-models linf:0.1,linf:0.2,linf:0.3 --results-dir results/evaluate/full \
		--update-cards --batch-size 1000 --markdown results/evaluate/curve-10000.md

# The lower/upper-bound table of the certified-robustness chapter (results/bounds/table.json):
# four small MLPs trained here, then attack suite, IBP, CROWN and exact MILP on the first 100
# MNIST test digits at Linf 0.1 and 0.3; resumable (finished rows are kept).
bounds-results: $(STAMP)
	$(BIN)/python -m robustlab.bounds.table --out results/bounds

# The robustness-interpretability experiments on the zoo (results/interpret/*.json): about an hour
# on a 2-core CPU, most of it the ROAR/KAR fill comparison (4 fills x ROAR and KAR x 3 retrainings
# x 6 rankings: the two gradients, three controls and random; resumable fill by fill). Then every
# claim, each measured with a control and a bootstrap interval (results/claims.json, about 5
# minutes; always remeasured, a killed run resumes claim by claim).
interpret-results: $(STAMP)
	$(BIN)/python -m robustlab.experiments --out results/interpret
	$(BIN)/python -m robustlab.claims --out results/claims.json

# The training chapter's robust-overfitting curve (results/training/robust_overfitting.json): PGD-AT
# of the small CNN on 4,000 embedded digits for 60 epochs with held-out PGD accuracy after each,
# about 18 minutes on one core; resumes after a kill.
training-results: $(STAMP)
	$(BIN)/python -m robustlab.experiments robust_overfitting --out results/training

clean:
	rm -rf _build .pytest_cache
