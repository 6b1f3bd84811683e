# One command to set up and run the pipeline (`make repro`), one to set up and run the tests (`make test`).
# Both work from a plain shell: no venv needs to be active.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
# dvc.yaml's stages run `python -m stages.X`: the first `python` on PATH must be the venv's, whatever the shell has.
export PATH := $(BIN):$(PATH)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

# PyPI's Linux torch wheel is the CUDA build (GBs of nvidia-* packages). Without an NVIDIA driver the CPU
# build comes from PyTorch's CPU index instead; with one (nvidia-smi found), PyPI's CUDA build. Force either:
# `make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu` or `make setup TORCH_INDEX=` (PyPI).
TORCH_INDEX ?= $(if $(shell command -v nvidia-smi 2>/dev/null),,https://download.pytorch.org/whl/cpu)

.PHONY: setup repro test test-fast clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first and exactly: any looser spec lets the next install pull another build.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0 $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
	$(BIN)/pip install --quiet -e '.[embedded,test]'
	touch $@

setup: $(VENV)/.installed

repro: setup
	$(BIN)/dvc repro

test: setup
	$(BIN)/python -m pytest -q

# The inner loop: no dvc CLI, no subprocess of the project, no model built or trained (CI runs `make test`, everything).
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV)
