"""The index manifest (``manifest.json`` of a generation) as a typed object.

It says what the generation was built from and how: the format, Cairn's version, the repository,
the embedding model (vectors are only comparable with queries embedded the same way), the keyword
tokenizer (likewise for keyword search), chunking, the FAISS kind, counts, and per file the hash,
size, mtime and the run of chunk rows it owns (which is what makes a re-ingest incremental).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from typing_extensions import TypedDict

from ingest.tokens import LEGACY_TOKENIZER

FORMAT = "cairn-index"
FORMAT_VERSION = 2
#: A delta generation (``ingest/store.py``): only what changed since its base, which older Cairns cannot read.
DELTA_FORMAT_VERSION = 3


class FileRecord(TypedDict):
    """One indexed file: its content hash, the stat it was read at, and its rows in the chunk table."""

    sha256: str
    size: int
    mtime_ns: int
    first_chunk: int
    chunks: int


@dataclass(frozen=True, slots=True)
class EmbeddingInfo:
    """The model the vectors were made with, their dimension, and how much of each chunk it read."""

    model: str
    dimension: int
    max_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class ChunkingInfo:
    """The chunking options the chunks were cut with."""

    max_chars: int
    overlap_lines: int


@dataclass(frozen=True, slots=True)
class KeywordInfo:
    """How the keyword index was tokenized (``ingest.tokens.tokenizer``): queries must be tokenized the same way."""

    tokenizer: str


@dataclass(frozen=True, slots=True)
class Counts:
    """How many files and chunks the generation holds, and files skipped by reason."""

    files: int
    chunks: int
    skipped: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a generation was built from and how; ``files`` is kept apart from the summary (``summary()``)."""

    format: str
    format_version: int
    cairn_version: str
    created_at: str
    scanned_at_ns: int
    repo_root: str
    embedding: EmbeddingInfo
    chunking: ChunkingInfo
    faiss_index: str
    counts: Counts
    files: dict[str, FileRecord] = field(default_factory=dict)
    # Indexes written before the manifest named a tokenizer were built with the legacy one.
    keyword: KeywordInfo = field(default_factory=lambda: KeywordInfo(LEGACY_TOKENIZER))
    #: A delta generation names the whole generation it adds to (``gen-<ns>``); None for a whole one.
    base: str | None = None
    #: The walk's content checks the files passed (``SecretPolicy.fingerprint``): while they are the same,
    #: a file unchanged since (size and mtime) is not read again by the next walk.
    walk_checks: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """Build a manifest from its JSON form; KeyError or TypeError when a field is missing or wrong."""
        embedding = data["embedding"]
        return cls(
            format=data["format"],
            format_version=int(data["format_version"]),
            cairn_version=str(data.get("cairn_version", "")),
            created_at=str(data.get("created_at", "")),
            scanned_at_ns=int(data.get("scanned_at_ns", 0)),
            repo_root=str(data["repo_root"]),
            embedding=EmbeddingInfo(str(embedding["model"]), int(embedding["dimension"]), embedding.get("max_tokens")),
            chunking=ChunkingInfo(**data["chunking"]),
            faiss_index=str(data.get("faiss_index", "flat")),
            counts=Counts(**data["counts"]),
            files=data.get("files", {}),
            keyword=KeywordInfo(str(data.get("keyword", {}).get("tokenizer", LEGACY_TOKENIZER))),
            base=str(data["base"]) if data.get("base") else None,
            walk_checks=str(data["walk_checks"]) if data.get("walk_checks") else None,
        )

    @classmethod
    def read(cls, path: Path) -> Manifest:
        """Read ``manifest.json``; ValueError when it is not JSON, KeyError/TypeError when fields are off."""
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form (what ``manifest.json`` holds)."""
        return asdict(self)

    def write(self, path: Path) -> None:
        """Write ``manifest.json``."""
        path.write_text(json.dumps(self.to_dict(), indent=1), encoding="utf-8")

    def summary(self) -> dict[str, Any]:
        """Return the manifest without the per-file table (for `cairn info`, reports and /ready)."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "files"}
        return {
            name: asdict(value) if is_dataclass(value) and not isinstance(value, type) else value
            for name, value in values.items()
        }
