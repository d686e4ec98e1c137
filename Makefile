# Two commands from a fresh clone: `make reproduce` (the main result) and `make test`.
# Each creates .venv with Python 3.11+ and installs requirements*.txt the first time.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
WORKDIR ?= workdirs/hidden_units

.PHONY: setup reproduce test bench clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is needed, found " + sys.version.split()[0] + ": run make PYTHON=python3.11") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	touch $@

setup: $(VENV)/.installed

reproduce: setup
	$(BIN)/python train.py --config=experiments/hidden_units.py --workdir=$(WORKDIR)

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/toy_sgd.py

clean:
	rm -rf $(VENV) workdirs
