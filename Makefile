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

.PHONY: demo test venv clean fuzz

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

# `make fuzz`: the differential tester (tests/differential) on BACKEND for FUZZ_MINUTES, in
# batches of FUZZ_EXAMPLES generated programs with fresh seeds (FUZZ_SEED fixes the first;
# FUZZ_MINUTES=0 runs that one batch). Every get in a program has a timeout, so no pytest one.
FUZZ_MINUTES  ?= 30
FUZZ_EXAMPLES ?= 50
FUZZ_SEED     ?=

fuzz: $(STAMP)
	UNIPAR_FUZZ_MINUTES=$(FUZZ_MINUTES) UNIPAR_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) \
	$(if $(FUZZ_SEED),UNIPAR_FUZZ_SEED=$(FUZZ_SEED)) \
	$(BIN)/python -m pytest -x --timeout=0 --unipar-backends=$(BACKEND) \
		tests/differential/test_differential.py::test_fuzz $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
