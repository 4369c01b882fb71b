# Two entry points: `make demo` and `make test`. Both install everything they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
# The real Label Studio, in a venv of its own (its Django pins must not meet the project's), for the e2e test.
LS_VENV := .venv-ls
LABEL_STUDIO_VERSION := 1.23.2
export DAGSTER_HOME ?= $(CURDIR)/.labelops/dagster
# The demo's days (2024-06-01 to 14) bound the partitions of demo, ui and backfill, so the UI shows them and not
# years of empty days; set LABELOPS_START_DATE / LABELOPS_END_DATE (empty: up to yesterday) for your own data.
LABELOPS_START_DATE ?= 2024-06-01
LABELOPS_END_DATE ?= 2024-06-15
DEMO_DAYS := LABELOPS_START_DATE=$(LABELOPS_START_DATE) LABELOPS_END_DATE=$(LABELOPS_END_DATE)

.PHONY: install label-studio system-deps demo test test-fast lint ui backfill bench lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Bytecode is compiled at install: where PYTHONDONTWRITEBYTECODE is set (CI images often set it), every process,
# each `dagster` subprocess and run worker included, would otherwise compile Dagster and pandas again (12 s of the
# 73 s `make test-fast` took here).
$(VENV)/.installed: requirements.lock pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $@

install: $(VENV)/.installed

$(LS_VENV)/.installed: | $(VENV)/.installed
	$(PYTHON) -m venv $(LS_VENV)
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(LS_VENV)/bin/python label-studio==$(LABEL_STUDIO_VERSION)
	touch $@

label-studio: $(LS_VENV)/.installed

# Debian packages the tests drive for real: Chromium for the UI test, PostgreSQL for instance storage.
system-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing Debian packages:$$missing (run 'sudo apt-get install$$missing')" >&2; exit 1; \
	  fi; \
	fi

demo: install
	mkdir -p $(DAGSTER_HOME)
	$(DEMO_DAYS) $(BIN)/python -m pipelines.demo

test: install system-deps label-studio
	LABELOPS_LABEL_STUDIO=$(CURDIR)/$(LS_VENV)/bin/label-studio $(BIN)/pytest

# The tests without real Dagster runs or servers (pytest -m e2e runs those): under a minute on 2 cores.
test-fast: install
	$(BIN)/pytest -m "not e2e"

# Formatting, lint rules and types (pinned in requirements.lock); basedpyright reports only errors that are not in
# its baseline (.basedpyright/baseline.json), which shrinks as code is fixed: `basedpyright --writebaseline`.
lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/basedpyright

ui: install
	mkdir -p $(DAGSTER_HOME)
	$(DEMO_DAYS) $(BIN)/dagster dev -w workspace.yaml

# After a guideline change: recompute the days computed under another version, then a snapshot (ARGS=--dry-run lists them).
backfill: install
	mkdir -p $(DAGSTER_HOME)
	$(DEMO_DAYS) $(BIN)/python -m pipelines.guideline_backfill $(ARGS)

bench: install
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.validate
	$(BIN)/python -m bench.quality
	$(BIN)/python -m bench.drift
	$(BIN)/python -m bench.pipeline --annotations 100000 1000000 5000000
	$(BIN)/python -m bench.nights
	$(BIN)/python -m bench.production --rows 50000000

# Re-resolve the lock after changing dependencies in pyproject.toml.
lock: | $(BIN)/python
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)
	$(BIN)/uv pip compile pyproject.toml --extra test --extra lint --python-version 3.11 --quiet -o requirements.lock

clean:
	rm -rf .labelops .pytest_cache test-output
