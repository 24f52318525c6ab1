# Two commands on a fresh machine:
#   make demo   create .venv, install pdlab (CPU torch by default), run `pdlab demo`
#   make test   install the test tools, run every test: unit, kernels (CUDA simulator), labs (nbval), browser
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU-only machines: a CPU build of torch keeps the install small (see README for the index URL).
TORCH ?= torch==2.13.0
PYTEST_ARGS ?=
# extras `make test` installs; CI adds "ptx" (CUDA compilers as wheels: kernel compile checks without a GPU)
EXTRAS ?= test

.PHONY: demo test test-gpu labs-html clean

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.test-installed: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/pdlab demo

# Without a GPU, tests/conftest.py turns on Numba's CUDA simulator; PDLAB_FAST=1 keeps lab workloads small.
test: $(VENV)/.test-installed
	PDLAB_FAST=1 $(BIN)/python -m pytest -n 2 --dist loadscope -p no:cacheprovider \
		--nbval-lax --nbval-current-env --nbval-cell-timeout=600 tests labs $(PYTEST_ARGS)

# On a CUDA machine: the GPU-marked tests at real sizes.
test-gpu: $(VENV)/.test-installed
	$(BIN)/python -m pytest -m gpu tests

# A static copy of the labs (HTML with PNG figures) under site/.
labs-html: $(VENV)/.test-installed
	$(BIN)/python scripts/labs_html.py

clean:
	rm -rf $(VENV) site .pytest_cache
