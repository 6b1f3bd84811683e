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

# The whole suite, what CI runs (.ci/run), in one pytest-xdist worker per core: each worker builds its own fixtures
# in its own temporary directories, and every test that changes directory does so through monkeypatch.
test: setup
	$(BIN)/python -m pytest -q -n auto

# The inner loop, under a minute: the suite without the tests marked slow, i.e. those that run the dvc CLI, a stage or
# the console script in a subprocess, or build or train a model (tests/conftest.py marks them), and those marked by
# hand for taking over a second. It lists the tests that still took over a second. CI runs `make test`, everything.
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" --durations=5 --durations-min=1

clean:
	rm -rf $(VENV)
