# The two commands of the README. Both create .venv and install tokenforge into it when needed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?= -n 2 -m "not gpu"

.PHONY: demo test install parity clean

$(STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)
	$(PY) tools/check_parity.py --all

demo: $(STAMP)
	$(PY) -m tokenforge demo --out outputs/demo

clean:
	rm -rf outputs/demo demo_out logs .pytest_cache
