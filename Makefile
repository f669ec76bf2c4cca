# Two commands on a fresh machine: `make run` and `make test` (both set everything up).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
# the torch pair is installed first and pinned for every later install
TORCH := torch==2.14.1 torchvision==0.29.1
export WANDB_MODE ?= offline
export HF_HUB_OFFLINE ?= 1
export MPLBACKEND ?= Agg

.PHONY: help install run test test-all browser lint format docs bench reproduce clean

help:
	@echo "make run       set up .venv and run the default experiment (Grad-CeAM on UCR Trace)"
	@echo "make test      set up .venv and run the fast tests"
	@echo "make test-all  all tests, the slow ones too (installs Chromium for the report's browser test)"
	@echo "make browser   Debian's Chromium, for the report's headless-browser test (apt-get, as root)"
	@echo "make bench     benchmarks -> benchmarks/RESULTS.md"
	@echo "make reproduce both papers' tables and figures (~45 min on 2 cores) -> outputs/reproduction/"
	@echo "make lint      ruff"
	@echo "make docs      the documentation site -> site/ (mkdocs build --strict)"

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install $(TORCH)
	$(PIP) install -c constraints.txt -e '.[dev]'
	touch $(STAMP)

run: install
	$(PY) -m clustercam.train experiment=trace $(ARGS)

test: install
	$(PY) -m pytest -m "not slow" -q $(ARGS)

test-all: install browser
	$(PY) -m pytest -q $(ARGS)

# the report's headless-browser test uses Debian's Chromium; where it cannot be installed
# (not root, no apt) the test is skipped and says so
browser:
	@command -v chromium >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
	  || echo "no Chromium: the report's browser test will be skipped"

lint: install
	$(VENV)/bin/ruff check src tests benchmarks

format: install
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

# the documentation site: MkDocs + Material, the API reference from the docstrings, the
# notebooks rendered as stored; --strict: a broken link, anchor or reference fails the build
docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

bench: install
	$(PY) -m benchmarks.run_all $(ARGS)

# two jobs at a time, one thread each: on 2 cores, 2-thread jobs slow each other down
# (the concept run after the sweeps takes every core: see clustercam.studies.reproduce.run_concept_study)
reproduce: install
	OMP_NUM_THREADS=1 $(PY) -m clustercam.reproduce --launcher joblib_local $(ARGS)

clean:
	rm -rf outputs site .pytest_cache .ruff_cache
