# The two commands: `make demo` runs the tutorial, `make test` runs the whole suite.
# Both create .venv and install what they need on a machine that has only python3
# (and Java 17+ for the Spark backend).

PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.unipar-installed
BACKEND ?= native
# `make demo` ends by comparing the tutorial across these backends (default: every installed one).
COMPARE ?=
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
	@echo; echo "== The same tutorial on every installed backend (timings ignored):"
	$(BIN)/unipar compare docs/examples/tutorial.py --ignore '^time:' $(if $(COMPARE),--backends $(COMPARE))

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
