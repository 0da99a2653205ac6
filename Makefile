# Two commands matter for a newcomer: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv demo demo-study test lint typecheck unit bench bench-hub soak fuzz sbom wheel clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "cryod needs Python >= 3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,report,research,hub]'
	@touch $@

demo: $(STAMP)
	$(BIN)/cryod demo $(DEMO_ARGS)

# the whole study on one machine: three rooms, a broker, the collector, follow-up, exports
demo-study: $(STAMP)
	$(BIN)/cryohub demo $(DEMO_STUDY_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy -p cryod

unit: $(STAMP)
	$(BIN)/pytest -q $(PYTEST_ARGS)

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python -m tests.bench.run $(BENCH_ARGS)

# the study collector on PostgreSQL: rooms sustained at real rate (docs/collector.md)
bench-hub: $(STAMP)
	$(BIN)/python -m tests.hub.bench $(BENCH_HUB_ARGS)

soak: $(STAMP)
	$(BIN)/python -m tests.soak.run $(SOAK_ARGS)

fuzz: $(STAMP)
	$(BIN)/python -m pip install --quiet atheris
	$(BIN)/python tests/fuzz/fuzz_decoders.py -max_total_time=$${FUZZ_SECONDS:-300}

# the runtime closure of cryod only (no test or developer tools)
sbom: $(STAMP)
	$(BIN)/python -m tests.security.runtime_deps | $(BIN)/cyclonedx-py requirements --pyproject pyproject.toml --output-format JSON --output-file sbom.json -
	@echo "wrote sbom.json (runtime dependencies of cryod)"

wheel: $(STAMP)
	$(BIN)/python -m build --wheel --outdir dist .

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .hypothesis
