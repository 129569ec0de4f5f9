# featstore: set-up, demo and tests. Every target builds the virtual environment from the lock first.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO_OUT ?= demo
DEMO_N ?= 3000

export PYSPARK_PYTHON := $(abspath $(PY))
export PYSPARK_DRIVER_PYTHON := $(abspath $(PY))
# TensorFlow/absl/Spark start-up noise is silenced by featstore itself (featstore/quiet.py; -v
# shows it): no TF_CPP_MIN_LOG_LEVEL here, so -v really shows everything

.PHONY: venv demo test lint check-java browser bench clean

$(STAMP): requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 (or run make PYTHON=/path/to/python3.11)" >&2; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=23"
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

venv: $(STAMP)

check-java:
	@./scripts/check_java.sh

# Headless Chromium for the report's browser test (Debian's package when root; else a warning).
browser:
	@./scripts/ensure_chromium.sh

# The whole chain on built-in synthetic CelebA-format data.
demo: $(STAMP) check-java
	$(VENV)/bin/featstore demo --out $(DEMO_OUT) --n $(DEMO_N)

test: $(STAMP) check-java browser lint
	$(PY) -m pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check featstore jobs tests bench

bench: $(STAMP) check-java
	$(PY) bench/bench_extract_cpu.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
