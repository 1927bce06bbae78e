# Two commands on a fresh machine with nothing but Python 3.11+:
#   make demo   set up .venv, then train dense and DSL side by side on the built-in synthetic data
#   make test   set up .venv, then run the whole test suite
#   make mutants   check the suite: deliberate protocol breakages in a temporary copy must each fail a test
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of torch, pinned; the project's other dependencies come from pyproject.toml.
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.dslrec-installed

.PHONY: demo test mutants bench clean

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m dslrec.demo

test: $(STAMP)
	$(BIN)/python -m pytest tests

mutants: $(STAMP)
	$(BIN)/python scripts/mutants.py

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) runs
