# The few targets people type. `make install` is idempotent: it reinstalls only when pyproject.toml or
# constraints.txt changed. constraints.txt is the lock: torch 2.14.1 + torchvision 0.29.1 (a known-good
# pair) and every other package pinned; it also pins setuptools<81 for the isolated build of visdom
# (imported by adv-lib 0.2.8), whose setup.py needs pkg_resources. PIP_CONSTRAINT reaches those builds.
# attackbenchlib (the reference of the optimality test: its numpy-only attackbench/metrics/distances.py) is
# installed without its dependencies: importing the package would pull in wandb, and the test never does.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install demo test test-fast test-portable lint format bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps attackbenchlib
	touch $(STAMP)

demo: install
	$(PY) cli.py compare --attack deepfool

# The whole suite, on a pytest-xdist worker per core with one thread each (it passes serially too, and under
# OMP_NUM_THREADS=1 as another machine would run it): 14 min on this project's 2-core VM (17 min serially).
test: install
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n auto

# The inner loop: the unit and agreement tests, without those marked slow (training, subprocess CLI runs, the
# pip install, torchrun, whole audits, the long benches; pyproject.toml [tool.pytest.ini_options] markers), on
# one pytest-xdist worker per core with one thread each (the suite also passes under OMP_NUM_THREADS=1: another
# machine's view). Under 2 minutes on 2 cores; `make test` runs everything.
test-fast: install
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n auto -m "not slow"

# Other CPUs round differently: PyTorch picks its kernels per instruction set. The agreement, property and
# generative-defense tests (on committed models) run once per capability this CPU has (ATEN_CPU_CAPABILITY;
# those above it, and any torch does not honour, are skipped, saying so) and once with one thread:
# tests/portable.py.
PORTABLE_TESTS := tests/agreement tests/properties tests/defenses/test_generative_defend.py
test-portable: install
	$(PY) tests/portable.py $(PORTABLE_TESTS)

# mypy checks the whole package (pyproject.toml [tool.mypy]): advbridge/ and the card's folders through its links.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: install
	$(PY) cli.py bench

clean:
	rm -rf $(VENV) .pytest_cache results
