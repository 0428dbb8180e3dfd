# Two commands: `make demo` runs the whole pipeline on built-in data, `make test` runs the tests.
# Both create (or reuse) .venv and install the pinned, tested versions: torch first,
# so pip never replaces the CPU build with a multi-GB CUDA one.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.etspipe-installed
TORCH := $(shell grep '^torch==' constraints.txt)

.PHONY: demo test install java chromium compiler lint clean

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt "$(TORCH)"
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

java:
	@bash scripts/ensure_java.sh

# The viewer's browser tests: installs Chromium on Debian as root; elsewhere they are skipped with a
# message saying how to install it (under CI=true a missing browser fails instead).
chromium:
	@bash scripts/ensure_chromium.sh || test -z "$(CI)"

# decode.compile's tests build inductor's C++ kernels: installs g++ on Debian/Ubuntu as root; elsewhere they are
# skipped with a message saying how to install one (under CI=true a missing compiler fails instead).
compiler:
	@bash scripts/ensure_compiler.sh || test -z "$(CI)"

demo: install java
	$(VENV)/bin/etspipe demo

test: install java chromium compiler
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) demo_out .pytest_cache
