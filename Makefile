# Set-up and entry points. Every target installs what it needs into .venv first.
# torch stays pinned to the CPU build by constraints.txt for every pip call (PIP_CONSTRAINT).

VENV   ?= .venv
PY     := $(VENV)/bin/python
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install demo test test-fast lint bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test,demo,integrations]"
	$(PY) -c "import torchvision" 2>/dev/null || $(PY) -m pip uninstall -q -y torchvision
	touch $@

install: $(VENV)/.installed

## the main job: train the demo and watch it live in the browser (Ctrl+C stops the dashboard)
demo: install
	$(PY) demos/train_digits.py --run runs/digits --steps 1500 --delay 0.02 --dashboard

## the test suite (installs Debian's chromium + chromedriver for the browser tests)
test: install
	bash .ci/install-chromium
	$(PY) -m pytest -q

## the quick loop: everything but the browser, distributed, slow and framework (integrations) tests
test-fast: install
	$(PY) -m pytest -q -m "not browser and not distributed and not slow and not integrations"

## pyflakes, complexity, import order, pyupgrade (configured in pyproject.toml)
lint: install
	$(VENV)/bin/ruff check .

## overhead benchmarks (see README)
bench: install
	$(PY) benchmarks/overhead.py

clean:
	rm -rf $(VENV) runs .pytest_cache
