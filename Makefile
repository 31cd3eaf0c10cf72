# statecache developer commands. The quick start is `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv test lint typecheck unit soak demo serve bench clean

venv: $(STAMP)

# Re-install when the project metadata changes; otherwise reuse the environment.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), \
		"statecache needs CPython 3.11 (umbral-pre 0.11 ships wheels up to 3.11); found " + sys.version' 
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy pre client_sdk cache_service

unit: venv
	$(BIN)/pytest

test: lint typecheck unit

# The reliability and security battery at full size (tens of minutes; `make test` runs it
# at CI size): API fuzzing, decoder fuzzing (hypothesis and atheris), cross-account attacks,
# resource limits (tests/security); state machine, crash durability, node faults
# (tests/reliability). Each check writes its figures to bench-results/battery/<check>.json
# and <check>-soak.json; docs/SECURITY.md quotes them.
soak: venv
	SOAK=1 $(BIN)/pytest tests/security tests/pre/test_decoders_fuzz.py tests/reliability

demo: venv
	$(BIN)/python -m client_sdk.demo

serve: venv
	$(BIN)/statecache serve

bench: venv
	$(BIN)/python -m tests.perf

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache bench-results
