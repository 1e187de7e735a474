# Two commands do all the set-up on a fresh clone:
#   make serve   installs Maestro into .venv and starts the server on the JSON-file store
#   make test    installs the test dependencies and runs the whole test suite
#                (TEST_WORKERS test processes at once, by file; TEST_WORKERS=0 runs them in one)
#   make test-fast   the layers that run in-process: domain, service and store (seconds)
#   make test-LAYER  one layer: domain, service, store, api, e2e or browser
VENV ?= .venv
LAYERS := domain service store api e2e browser
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# Most tests wait on real servers, agents and browsers rather than compute: four processes
# keep two cores busy. Each takes whole files (module-scoped servers stay shared).
TEST_WORKERS ?= 4
XDIST := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

.PHONY: serve test test-fast $(addprefix test-,$(LAYERS)) install install-test bench lint clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e .
	touch $@

install: $(VENV)/.installed

serve: $(VENV)/.installed
	$(VENV)/bin/maestro serve

$(VENV)/.test-installed: $(VENV)/.installed pyproject.toml scripts/install-test-deps.sh
	$(PIP) install -q -e '.[test]'
	bash scripts/install-test-deps.sh
	touch $@

install-test: $(VENV)/.test-installed

test: $(VENV)/.test-installed
	HYPOTHESIS_PROFILE=thorough $(PY) -m pytest -q $(XDIST)

test-fast: $(VENV)/.test-installed
	$(PY) -m pytest -q tests/domain tests/service tests/store

$(addprefix test-,$(LAYERS)): test-%: $(VENV)/.test-installed
	$(PY) -m pytest -q tests/$*

bench: $(VENV)/.installed
	$(PY) -m bench --help

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
