# On a fresh machine: `make demo`, `make lint` and `make test`. Each builds the venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Caches and config dirs the tools would otherwise scatter over $HOME.
export MPLCONFIGDIR := $(CURDIR)/.cache/matplotlib
export HF_HOME := $(CURDIR)/.cache/huggingface
export HF_HUB_OFFLINE := 1
export SCIKIT_LEARN_DATA := $(CURDIR)/.cache/sklearn
export MEMAUDIT_CACHE := $(CURDIR)/.cache/memaudit

.PHONY: venv lint format test test-floors demo bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned, so that nothing later pulls a CUDA build.
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[test,lint]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: $(STAMP)
	$(PY) -m pytest -q

# The lowest declared versions (constraints-floors.txt), in a venv of their own outside the
# checkout, and the part of the suite that exercises every dependency but ray and diffusers.
FLOORS_VENV ?= $(or $(TMPDIR),/tmp)/memaudit-floors-venv
FLOORS_PY := $(FLOORS_VENV)/bin/python
FLOORS_STAMP := $(FLOORS_VENV)/.installed
FLOORS_TESTS := tests/test_scoring.py tests/test_attacks.py tests/test_metrics.py \
	tests/test_data.py tests/test_config.py tests/test_models.py tests/test_lab.py

$(FLOORS_STAMP): pyproject.toml constraints-floors.txt
	$(PYTHON) -m venv --clear $(FLOORS_VENV)
	$(FLOORS_PY) -m pip install -q --upgrade pip
	$(FLOORS_PY) -m pip install -q -c constraints-floors.txt torch==2.13.0
	# the package and pytest only: the test extra's ray and diffusers are not at their floors
	$(FLOORS_PY) -m pip install -q -c constraints-floors.txt -e . pytest
	$(FLOORS_PY) -m pip check
	touch $(FLOORS_STAMP)

test-floors: $(FLOORS_STAMP)
	$(FLOORS_PY) -m pytest -x -q $(FLOORS_TESTS)

demo: $(STAMP)
	$(VENV)/bin/memaudit demo

bench: $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e '.[bench]'
	$(PY) benchmarks/bench_mia.py
	$(PY) benchmarks/bench_architectures.py
	$(PY) benchmarks/bench_attacks.py
	$(PY) benchmarks/bench_recall.py
	$(PY) benchmarks/bench_shadows.py
	$(PY) benchmarks/bench_lab.py
	$(PY) benchmarks/bench_traps.py
	$(PY) benchmarks/bench_index.py
	$(PY) benchmarks/bench_ray.py
	$(PY) benchmarks/bench_unlearn.py
	$(PY) benchmarks/bench_diffusion.py

clean:
	rm -rf $(VENV) .cache runs
