# Set-up and everyday targets. `make demo` and `make test` work on a fresh machine (Python 3.11 or newer).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export NO_ALBUMENTATIONS_UPDATE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
DEMO_DIR ?= demo-work
# test-newest: the suite again on the newest Python here, with the newest release of every dependency
NEWEST_PY ?= $(shell $(PY) scripts/newest_python.py)
NEWEST_VENV := .venv-newest
# wheelhouse: wheels for an offline install; defaults are Kaggle's notebook image (Python 3.12 since
# Kaggle/docker-python #1516, December 2025) and manylinux x86-64
WHEELHOUSE ?= wheelhouse
WHEEL_PYTHON ?= 3.12
WHEEL_PLATFORM ?= manylinux_2_28_x86_64

.PHONY: install test test-newest test-wheelhouse test-all lint demo bench wheelhouse clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python scripts/stack_versions.py
	$(BIN)/python -m pytest -q

# A venv of its own, upgraded eagerly on every run: CI (a clean checkout) gets a fresh one anyway.
test-newest:
	@test -n "$(NEWEST_PY)" || { echo "test-newest: no Python newer than $$($(PY) -V) on this machine"; exit 1; }
	test -x $(NEWEST_VENV)/bin/python || $(NEWEST_PY) -m venv $(NEWEST_VENV)
	$(NEWEST_VENV)/bin/python -m pip install -q --upgrade pip
	$(NEWEST_VENV)/bin/python -m pip install -q --upgrade --upgrade-strategy eager -e ".[test]"
	$(NEWEST_VENV)/bin/python scripts/stack_versions.py
	$(NEWEST_VENV)/bin/python -m pytest -q -p no:cacheprovider

# Builds a wheelhouse for this Python and installs liverctl from it with no index (slow-marked test).
test-wheelhouse: $(STAMP)
	$(BIN)/python -m pytest -q -m slow tests/test_wheelhouse.py

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ""

lint: $(STAMP)
	$(BIN)/ruff check liverctl tests scripts

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh $(DEMO_DIR)

bench: $(STAMP)
	$(BIN)/liverctl bench

wheelhouse: $(STAMP)
	$(BIN)/python scripts/wheelhouse.py $(WHEELHOUSE) --python $(WHEEL_PYTHON) --platform $(WHEEL_PLATFORM)

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
