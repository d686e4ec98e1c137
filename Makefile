# Two commands from a fresh clone: `make reproduce` (the main result) and `make test`.
# Each creates .venv with Python 3.11+ and installs requirements*.txt the first time.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
WORKDIR ?= workdirs/hidden_units

.PHONY: setup data onednn reproduce test bench clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is needed, found " + sys.version.split()[0] + ": run make PYTHON=python3.11") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	touch $@

# Fashion-MNIST's four original files from Debian's package, where this machine lets us (root and apt-get);
# elsewhere, data/fashion_mnist.py says how to get them when an experiment needs them.
FASHION_MNIST_DIR ?= /usr/share/datasets/fashion-mnist
data:
	@if [ -d $(FASHION_MNIST_DIR) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	  (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1) || \
	  echo "note: could not install Debian's dataset-fashion-mnist; Fashion-MNIST tests will be skipped"; \
	else echo "note: not root or no apt-get: install Debian's dataset-fashion-mnist yourself, or see README.md"; fi

# oneDNN's convolutions for JAX on the CPU (nets/onednn.py), built where oneDNN's headers are found (Debian and
# Ubuntu: libdnnl-dev, installed here where root and apt-get allow); elsewhere XLA's convolutions are used.
CXX ?= g++
ONEDNN_LIB := nets/onednn_conv.so
HAVE_ONEDNN = echo '\#include <oneapi/dnnl/dnnl.hpp>' | $(CXX) -std=c++17 -fsyntax-only -x c++ - >/dev/null 2>&1
onednn: $(VENV)/.installed
	@if ! $(HAVE_ONEDNN) && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get install -y -qq libdnnl-dev >/dev/null 2>&1 || \
	  (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq libdnnl-dev >/dev/null 2>&1) || true; fi
	@if $(HAVE_ONEDNN); then $(MAKE) -s --no-print-directory $(ONEDNN_LIB); \
	else echo "note: $(CXX) does not find oneDNN's headers (Debian/Ubuntu: apt-get install libdnnl-dev):" \
	  "convolutions on the CPU stay XLA's"; fi

$(ONEDNN_LIB): nets/onednn_conv.cc $(VENV)/.installed
	@echo "building $@ (oneDNN's convolutions for the CPU)"
	@$(CXX) -O2 -std=c++17 -Wall -shared -fPIC -fopenmp \
	  -isystem "$$($(BIN)/python -c 'import jax.ffi; print(jax.ffi.include_dir())')" $< -o $@ -ldnnl

setup: $(VENV)/.installed data onednn

reproduce: setup
	$(BIN)/python train.py --config=experiments/hidden_units.py --workdir=$(WORKDIR)

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python -m pip install --quiet -r requirements-bench.txt
	$(BIN)/python benchmarks/toy_sgd.py
	$(BIN)/python benchmarks/fashion_mnist_cnn.py
	$(BIN)/python benchmarks/imagenet_input.py
	$(BIN)/python benchmarks/alexnet_throughput.py

clean:
	rm -rf $(VENV) workdirs $(ONEDNN_LIB)
