# statecache developer commands. The quick start is `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
# Two installs, each remembered by a stamp: what statecache runs on (`make demo`, `make
# serve`), and the dev tools on top (tests, linters, type checker, the benchmark's plots).
RUNTIME := $(VENV)/.installed-runtime
DEV     := $(VENV)/.installed-dev
MLS     := $(VENV)/.installed-mls

.PHONY: venv runtime test lint lint-deploy typecheck unit soak demo demo-mls serve bench clean

venv: $(DEV)
runtime: $(RUNTIME)

# Re-install when the project metadata changes; otherwise reuse the environment.
$(RUNTIME): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), \
		"statecache needs CPython 3.11 (umbral-pre 0.11 ships wheels up to 3.11); found " + sys.version' 
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUNTIME)

$(DEV): $(RUNTIME) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev,mls-rs]'
	touch $(DEV)

# The runtime plus real MLS clients (mls-rs), for `make demo-mls`.
$(MLS): $(RUNTIME) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[mls-rs]'
	touch $(MLS)

lint: venv lint-deploy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# deploy/, offline (no Docker daemon, no cluster): the Dockerfile's linter, the Compose
# schema, Kubernetes' schemas in strict mode, systemd's own checks. tests/deploy runs the
# same and more (in `make test`). `verify` wants ExecStart's binary to exist: it checks a
# copy of the unit that starts this venv's statecache, and any complaint fails.
lint-deploy: venv
	$(BIN)/hadolint --failure-threshold warning deploy/Dockerfile
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec deploy/compose*.yaml
	$(BIN)/kubernetes-validate --strict --quiet --kubernetes-version 1.29.0 deploy/k8s/*.yaml
	$(BIN)/kubernetes-validate --strict --quiet deploy/k8s/*.yaml
	@command -v systemd-analyze >/dev/null || { echo "systemd-analyze not found: install systemd"; exit 1; }
	systemd-analyze security --offline=yes --threshold=15 --no-pager deploy/systemd/statecache.service >/dev/null
	@d=$$(mktemp -d) && sed 's|^ExecStart=/opt/statecache/bin/statecache |ExecStart=$(abspath $(BIN))/statecache |' \
		deploy/systemd/statecache.service >$$d/statecache.service && \
		out=$$(systemd-analyze verify --man=no --generators=no $$d/statecache.service 2>&1); \
		rc=$$?; rm -rf $$d; [ $$rc -eq 0 ] && [ -z "$$out" ] || { echo "$$out"; exit 1; }

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

# Only what the demo runs: no dev tools.
demo: runtime
	$(BIN)/python -m client_sdk.demo

# The multi-device story with real mls-rs clients (default 50 groups).
demo-mls: $(MLS)
	$(BIN)/python -m client_sdk.mlsrs.demo

serve: runtime
	$(BIN)/statecache serve

bench: venv
	$(BIN)/python -m tests.perf

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache bench-results
