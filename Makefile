# `make demo`: set up .venv if needed, then distil the shipped Fashion-MNIST teacher (runs/demo/).
# `make test`: same set-up, then the test suite.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.rgal-installed

.PHONY: demo test lint bench-clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { apt-get install -y python3-venv && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e ".[test]"
	@touch $(STAMP)

demo: $(STAMP)
	rm -rf runs/demo
	$(VENV)/bin/rgal distill

test: $(STAMP)
	$(PY) -m pytest -q -n auto

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests
