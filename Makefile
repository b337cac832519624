# The two commands: `make demo` runs the tutorial, `make test` runs the whole suite.
# Both create .venv and install what they need on a machine that has only python3
# (and Java 17+ for the Spark backend).

PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.unipar-installed
BACKEND ?= native
# Backends `make demo` compares the tutorial across at the end (each must be installed).
COMPARE ?= native,dask,spark,ray,local
PYTEST_ARGS ?=

.PHONY: demo test venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	UNIPAR_BACKEND=$(BACKEND) $(BIN)/python docs/examples/tutorial.py

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
