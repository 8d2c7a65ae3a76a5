# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RECIPE ?= models/defects-mobilenetv2.yaml
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install run test test-fast lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: install
	$(BIN)/edgecnn run $(RECIPE)

# One worker per core (at most 4). Work units are whole files (module fixtures are built once) or the
# groups a test names (tests/conftest.py: the zoo's models), slow units first, in the order collected.
PYTEST_PARALLEL ?= -n auto --maxprocesses 4 --dist loadgroup --no-loadscope-reorder

test: install lint
	$(BIN)/python -m pytest -q -ra $(PYTEST_PARALLEL)

lint: install
	$(BIN)/ruff check edgecnn tests benchmarks

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_PARALLEL)

bench: install
	$(BIN)/python benchmarks/latency_table.py export/defects-mobilenetv2

clean:
	rm -rf $(VENV) export/* data/defects .pytest_cache
