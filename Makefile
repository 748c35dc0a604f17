# The README's two commands: `make demo` and `make test`. Both set up what they need.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: demo test lint deps bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

deps:
	@bash .ci/install-debian-packages

demo: deps $(VENV)/.installed
	$(PY) -m bench.demo

lint: $(VENV)/.installed
	$(PY) -m ruff check .

test: deps $(VENV)/.installed lint
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
