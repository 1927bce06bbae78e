# Two commands on a fresh machine with nothing but Python 3.11+:
#   make demo   set up .venv, then train dense and DSL side by side on the built-in synthetic data
#   make test   set up .venv, then run the whole test suite
#   make mutants   check the suite: deliberate protocol breakages in a temporary copy must each fail a test
#   make recbole-env   optional: RecBole 1.2.1 in its own .venv-recbole, for bench_eval.py's comparison
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of torch, pinned; the project's other dependencies come from pyproject.toml.
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.dslrec-installed

.PHONY: demo test mutants bench recbole-env clean

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

# RecBole 1.2.1, only for benchmarks/bench_eval.py's side-by-side timing (issue 13): its own venv,
# never a dslrec dependency. recbole is installed without its declared dependencies (ray<=2.6.3,
# tensorboard, plotly, thop, tabulate, psutil: tuning, logging, plots and FLOP counts, none of which
# evaluation imports), then what importing it and evaluating needs. pandas<3: RecBole fills missing
# values in place, which pandas 3's copy-on-write silently ignores. Newer numpy/scipy/torch need
# small shims, kept in benchmarks/recbole_eval.py. pip then lists the left-out dependencies as
# conflicts; that is expected, and the --check import below is what must pass.
RECBOLE_VENV  ?= .venv-recbole
RECBOLE_STAMP := $(RECBOLE_VENV)/.recbole-installed

$(RECBOLE_STAMP): Makefile
	@test -x $(RECBOLE_VENV)/bin/python || $(PYTHON) -m venv $(RECBOLE_VENV)
	$(RECBOLE_VENV)/bin/python -m pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(RECBOLE_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps "recbole==1.2.1"
	$(RECBOLE_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
		numpy scipy "pandas<3" scikit-learn pyyaml tqdm texttable "colorlog==4.7.2" "colorama==0.4.4"
	$(RECBOLE_VENV)/bin/python benchmarks/recbole_eval.py --check
	@touch $@

recbole-env: $(RECBOLE_STAMP)

clean:
	rm -rf $(VENV) $(RECBOLE_VENV) runs
