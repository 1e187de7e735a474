# Two commands do all the set-up on a fresh clone:
#   make serve   installs Maestro into .venv and starts the server on the JSON-file store
#   make test    installs the test dependencies and runs the whole test suite
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: serve test install install-test bench lint clean

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
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) -m bench --help

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
