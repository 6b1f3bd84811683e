# One command to set up and run the pipeline (`make repro`), one to set up and run the tests (`make test`).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup repro test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first and exactly: any looser spec pulls a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[embedded,test]'
	touch $@

setup: $(VENV)/.installed

repro: setup
	$(BIN)/dvc repro

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV)
