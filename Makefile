# featstore: set-up, demo and tests. Every target builds the virtual environment from the lock first.
# Two locks: requirements.lock (Spark 3.5, petastorm; .venv, the default) and
# requirements-spark4.lock (Spark 4.x, NumPy 2, no petastorm; .venv-spark4): make test LOCK=spark4
PYTHON ?= python3.11
LOCK   ?=
ifeq ($(strip $(LOCK)),)
LOCKFILE := requirements.lock
VENV     := .venv
else
LOCKFILE := requirements-$(LOCK).lock
VENV     := .venv-$(LOCK)
endif
ifeq ($(wildcard $(LOCKFILE)),)
$(error LOCK=$(LOCK): no $(LOCKFILE); the locks are $(wildcard requirements*.lock))
endif
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO_OUT ?= demo
DEMO_N ?= 3000

export PYSPARK_PYTHON := $(abspath $(PY))
export PYSPARK_DRIVER_PYTHON := $(abspath $(PY))
# TensorFlow/absl/Spark start-up noise is silenced by featstore itself (featstore/quiet.py; -v
# shows it): no TF_CPP_MIN_LOG_LEVEL here, so -v really shows everything

.PHONY: venv demo test lint check-java browser bench clean

$(STAMP): $(LOCKFILE) pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 (or run make PYTHON=/path/to/python3.11)" >&2; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=23"
	$(PY) -m pip install --quiet -r $(LOCKFILE)
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
	$(VENV)/bin/ruff check featstore jobs tests bench scripts
	$(VENV)/bin/ruff format --check featstore jobs tests bench scripts notebooks
	$(PY) scripts/check_shape.py

bench: $(STAMP) check-java
	$(PY) bench/bench_extract_cpu.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
