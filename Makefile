# The two commands of the README: `make run` and `make test`.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python

.PHONY: run test test-fast system-deps clean

run: system-deps $(VENV)/.installed
	VENV=$(VENV) scripts/dev_run.sh

test: system-deps $(VENV)/.installed
	$(PY) -m pytest

# Unit tests only: no processes started.
test-fast: $(VENV)/.installed
	$(PY) -m pytest tests/unit -q

system-deps:
	@scripts/install_system_deps.sh

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache
