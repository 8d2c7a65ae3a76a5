# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RECIPE ?= models/defects-mobilenetv2.yaml
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install run test test-fast lint bench clean arm64-root

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

# The arm64 root of the litert-arm64 / onnxruntime-arm64 runtimes (docs/arm64.md): built once (~1 min, as
# root: installs qemu-user-static and debootstrap with apt-get if missing), cached in ~/.cache/edgecnn.
# Optional: the first evaluation that needs it builds it too.
arm64-root: install
	$(BIN)/python -m edgecnn.runtime.arm64_root

bench: install
	$(BIN)/python benchmarks/latency_table.py export/defects-mobilenetv2

clean:
	rm -rf $(VENV) export/* data/defects .pytest_cache
