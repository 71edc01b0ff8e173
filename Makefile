# Two commands for a fresh machine: `make demo` and `make test` (both install what they need).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# setuptools says "Editable installation. Please be careful with folders ... with the same name
# as your package" on every editable install: information, not a problem (etl/ is the package).
$(BIN)/.installed: pyproject.toml
	@echo "installing desksync and its dependencies into $(VENV) (once; about a minute)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/pip install --quiet -e '.[test]'
	touch $@

.PHONY: demo test bench lint
demo: $(BIN)/.installed
	$(BIN)/desksync demo

# The whole suite, on SQLite and on a real PostgreSQL server (started, or installed, by the script),
# with a real Redis broker for the Celery workers' tests (installed by its script when missing).
test: $(BIN)/.installed
	scripts/redis-for-tests
	DESKSYNC_TEST_PG_URL="$$(scripts/postgres-for-tests)" $(BIN)/pytest -q -n 2 --durations=12

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_eddydesk.py

lint: $(BIN)/.installed
	$(BIN)/ruff check etl tests benchmarks scheduler.py
	$(BIN)/mypy etl tests
