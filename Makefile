# The two commands of the README: `make run` and `make test`.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python

.PHONY: run test test-core test-fast lint bench screenshots system-deps clean

run: system-deps $(VENV)/.installed
	VENV=$(VENV) scripts/dev_run.sh

test: system-deps $(VENV)/.installed lint
	$(PY) -m pytest

# Lint and format check (configuration in pyproject.toml); part of make test.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The unit, integration and ops tiers only: what .ci/run also runs on a second
# Python, e.g. make test-core PYTHON=python3.13 VENV=.venv-3.13 (README, Python versions).
test-core: system-deps $(VENV)/.installed
	$(PY) -m pytest tests/unit tests/integration tests/ops

# Unit tests only: no processes started.
test-fast: $(VENV)/.installed
	$(PY) -m pytest tests/unit -q

# Benchmarks, not tests: the web page against Flask baselines with wrk and in-process, then
# warm runs for 100, 1,000 and 10,000 members. Prints tables; see README.
bench: system-deps $(VENV)/.bench-installed
	@command -v wrk >/dev/null || scripts/install_system_deps.sh wrk
	$(PY) -m bench.web_bench
	$(PY) -m bench.inprocess_bench
	$(PY) -m bench.frontdoor_bench
	$(PY) -m bench.warm_bench --plot docs/warm-time.png --budget-cycles 3
	$(PY) -m bench.schedule_bench

# The README's pictures (docs/screenshots/): the fresh page, light, on a phone
# and a desktop, from the browser test that takes them into artifacts/. Tests
# never write into the work tree; run this when the page's look changes.
README_SHOTS := fresh-390x844.png fresh-1280x800.png
screenshots: system-deps $(VENV)/.installed
	$(PY) -m pytest tests/browser/test_states.py -q -k "says_what_visitors_need_to_know and fresh"
	cp $(addprefix artifacts/screenshots/,$(README_SHOTS)) docs/screenshots/

$(VENV)/.bench-installed: $(VENV)/.installed requirements-bench.txt
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-bench.txt
	touch $@

system-deps:
	@scripts/install_system_deps.sh

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache
