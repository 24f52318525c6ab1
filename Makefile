# Two commands on a fresh machine:
#   make demo   create .venv, install pdlab with the lab extra, run `pdlab demo`, print how to open the labs
#   make lab    the same install, then open lab 00 in JupyterLab
#   make test   install the test tools, run every test: unit, kernels (CUDA simulator), labs (nbval), browser
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
# Where torch comes from. On Linux without a GPU (no nvidia-smi) the CPU build from PyTorch's CPU
# index (about 200 MB); anywhere else PyPI's default build: macOS and Windows get a CPU/MPS build,
# but on Linux that is the CUDA build (over 2 GB with its CUDA libraries). Override, e.g.:
#   make demo TORCH_INDEX=                                          (PyPI's default build)
#   make demo TORCH_INDEX=https://download.pytorch.org/whl/cu128    (a chosen CUDA build)
TORCH_INDEX ?= $(shell if [ "$$(uname -s)" = Linux ] && ! command -v nvidia-smi >/dev/null 2>&1; then echo https://download.pytorch.org/whl/cpu; fi)
PYTEST_ARGS ?=
# extras `make test` installs; CI adds "ptx" (CUDA compilers as wheels: kernel compile checks without a GPU)
EXTRAS ?= test
LAB_CMD := $(BIN)/jupyter lab labs/00_welcome.ipynb

.PHONY: demo lab test test-gpu labs-html clean

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
ifneq ($(strip $(TORCH_INDEX)),)
	@echo "installing $(TORCH) from $(TORCH_INDEX) (override with TORCH_INDEX=..., see the Makefile)"
	$(BIN)/pip install -q --retries 1 "$(TORCH)" --index-url $(TORCH_INDEX) || { \
		echo "$(TORCH_INDEX) not reachable: installing $(TORCH) from pip's configured index instead"; \
		$(BIN)/pip install -q "$(TORCH)"; }
else
	@echo "installing $(TORCH) from PyPI (on Linux: the CUDA build, over 2 GB; TORCH_INDEX=... chooses another)"
	$(BIN)/pip install -q "$(TORCH)"
endif
	$(BIN)/pip install -q -e ".[lab]"
	touch $@

$(VENV)/.test-installed: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/pdlab demo
	@echo
	@echo "The labs are ready. Open lab 00 with:  make lab   (or: $(LAB_CMD))"

lab: $(VENV)/.installed
	$(LAB_CMD)

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
