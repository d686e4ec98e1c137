# Two commands from a fresh clone: `make reproduce` (the main result) and `make test`. Each creates .venv with
# Python 3.11+ and installs requirements*.txt and the project (pip install -e .) the first time; nothing else is
# needed, and nothing outside the checkout changes but JAX's compilation cache (~/.cache/jax-training). Optional, each saying what it does: `make data` (Debian's offline Fashion-MNIST) and
# `make onednn` (oneDNN's convolutions for the CPU, trainnets/kernels/onednn.py).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
WORKDIR ?= workdirs/hidden_units

# The fewest MiB free on the file systems of the paths given (pip fills both the venv's and the temporary one).
free_mib = df -Pk $(1) 2>/dev/null | awk 'NR > 1 { print int($$4 / 1024) }' | sort -n | head -1

.PHONY: setup data onednn reproduce test test-slow lint bench clean

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is needed, found " + sys.version.split()[0] + ": run make PYTHON=python3.11") if sys.version_info < (3, 11) else None'
	@[ -w . ] || { echo "error: $(CURDIR) is not writable: clone the project where you can write (make creates $(VENV) and workdirs/ here)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip || echo "pip could not upgrade itself; going on with $$($(BIN)/python -m pip --version)"
	@$(BIN)/python -m pip install --quiet -r requirements.txt -r requirements-dev.txt || { \
	  free=$$($(call free_mib,. "$${TMPDIR:-/tmp}")); \
	  if [ -n "$$free" ] && [ "$$free" -lt 1024 ]; then echo "error: pip could not install requirements.txt: only $$free MiB are free" \
	    "here or in $${TMPDIR:-/tmp} ($(VENV) needs about 3 GiB): free some space, or clone elsewhere and set TMPDIR"; \
	  else echo "error: pip could not install requirements.txt: is a package index reachable (or set PIP_INDEX_URL)?"; fi; \
	  exit 1; }
	@# The project itself, editable: nets, experiments and trainnets import from any directory, as the checkout is now.
	@$(BIN)/python -m pip install --quiet --no-deps -e . || { echo "error: pip install -e . failed (see above)"; exit 1; }
	touch $@

# Fashion-MNIST's four original files from Debian's package dataset-fashion-mnist, where trainnets/data/fashion_mnist.py
# looks for them; as root with apt-get only.
FASHION_MNIST_DIR ?= /usr/share/datasets/fashion-mnist
data:
	@if [ -d $(FASHION_MNIST_DIR) ]; then echo "Fashion-MNIST's files are in $(FASHION_MNIST_DIR)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's dataset-fashion-mnist (apt-get install)"; \
	  apt-get install -y -q dataset-fashion-mnist || { echo "apt-get install failed: run apt-get update first," \
	  "or see docs/fashion_mnist.md for other ways to get the files"; exit 1; }; \
	else echo "make data needs root and apt-get (Debian's dataset-fashion-mnist); see docs/fashion_mnist.md for other ways"; \
	  exit 1; fi

# oneDNN's convolutions for JAX on the CPU (trainnets/kernels/onednn.py), built against oneDNN's headers (Debian and Ubuntu:
# libdnnl-dev, which this installs with apt-get where it runs as root); model.kernels=auto then uses them.
CXX ?= g++
ONEDNN_LIB := trainnets/kernels/onednn_conv.so
HAVE_ONEDNN = echo '\#include <oneapi/dnnl/dnnl.hpp>' | $(CXX) -std=c++17 -fsyntax-only -x c++ - >/dev/null 2>&1
onednn: $(VENV)/.installed
	@if ! $(HAVE_ONEDNN); then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's libdnnl-dev (apt-get install) for oneDNN's headers"; \
	    apt-get install -y -q libdnnl-dev || { echo "apt-get install libdnnl-dev failed: run apt-get update" \
	    "first"; exit 1; }; \
	  else echo "$(CXX) does not find oneDNN's headers: install libdnnl-dev (Debian/Ubuntu) or oneDNN"; exit 1; fi; \
	fi
	@$(MAKE) -s --no-print-directory $(ONEDNN_LIB)

$(ONEDNN_LIB): trainnets/kernels/onednn_conv.cc $(VENV)/.installed
	@echo "building $@ (oneDNN's convolutions for the CPU)"
	@$(CXX) -O2 -std=c++17 -Wall -shared -fPIC -fopenmp \
	  -isystem "$$($(BIN)/python -c 'import jax.ffi; print(jax.ffi.include_dir())')" $< -o $@ -ldnnl

setup: $(VENV)/.installed

reproduce: setup
	$(BIN)/python train.py --config=experiments/hidden_units.py --workdir=$(WORKDIR)

# PYTEST_ARGS=--require-onednn: the oneDNN kernel's tests fail, instead of skipping, where it is not built.
# `make test` is the suite every change passes; `make test-slow` the longer end-to-end runs (marked slow).
# `make test` spreads its tests over up to 4 cores (pytest-xdist); the slow tests run one at a time, since some
# of them time how fast a job notices a dead process.
test: setup
	$(BIN)/python -m pytest -q -m "not slow" -n auto --maxprocesses=4 --dist worksteal $(PYTEST_ARGS)

test-slow: setup
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

# The linter's rules are in pyproject.toml ([tool.ruff]); `ruff check --fix` sorts imports and drops stale noqa.
lint: setup
	$(BIN)/ruff check .

bench: setup onednn
	$(BIN)/python -m pip install --quiet -r requirements-bench.txt
	$(BIN)/python benchmarks/toy_sgd.py
	$(BIN)/python benchmarks/fashion_mnist_cnn.py
	$(BIN)/python benchmarks/imagenet_input.py
	$(BIN)/python benchmarks/alexnet_throughput.py

clean:
	rm -rf $(VENV) workdirs $(ONEDNN_LIB)
