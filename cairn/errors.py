"""Errors a user can act on: each says what happened and what to do next, and maps to one exit code.

``ExitCode`` is the one table of the CLI's exit codes (the README's table is checked against it);
every error Cairn raises for a user is a ``CairnError`` subclass defined here, whichever layer
raises it, so the table and the classes stay together.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What a ``cairn`` command's exit status means."""

    OTHER = 1
    """other error (e.g. unknown `--mode`)"""
    REPOSITORY_NOT_FOUND = 2
    """the repository path does not exist or is not a folder"""
    INDEX_MISSING = 3
    """no index where one was expected (run `cairn ingest`)"""
    INDEX_CORRUPTED = 4
    """the index folder is damaged or not a Cairn index (Cairn never overwrites a foreign folder)"""
    EMBEDDING_MODEL_MISMATCH = 5
    """the index was built with another embedding model than the configured one (`--rebuild`)"""
    EMBEDDING_MODEL_UNAVAILABLE = 6
    """the embedding model cannot be loaded offline"""
    INDEX_LOCKED = 7
    """another ingest is writing the same index"""
    MODEL_CONFIG = 8
    """a model setting cannot be understood (the message shows the accepted forms)"""
    EMBEDDED_MODEL = 9
    """the embedded model server cannot be started or died (llama-cpp-python or the model file missing, port taken,
    killed by a signal: the message names it, e.g. SIGILL → `make rebuild-model`)"""
    MODEL_UNREACHABLE = 10
    """the model endpoint is unreachable, timed out or does not know the model"""
    UNSAFE_BIND = 11
    """`cairn serve` refused an unsafe access setting: a non-loopback address without an API key, or an empty,
    blank or repeated key in `CAIRN_API_KEYS`"""
    GATE_FAILED = 12
    """`cairn eval`: a score fell below its gate threshold (the failing questions are listed)"""
    DATASET_INVALID = 13
    """`cairn eval`: the dataset is missing or a line of it is not a valid question"""
    REDIS_UNAVAILABLE = 14
    """`cairn serve` could not start the local `redis-server` it needed (the message has its log's last lines), or
    `cairn sessions migrate` could not reach Redis"""
    UNKNOWN_REPOSITORY = 15
    """no repository of that name (the message lists the names; `cairn repos`)"""
    REPOSITORY_NAME_TAKEN = 16
    """another source folder is already indexed under that name (choose one with `--name`)"""
    SYMBOL_NOT_FOUND = 17
    """`cairn def` / `cairn refs`: the symbol graph has no definition or use of that name"""
    INVALID_PATTERN = 18
    """a path filter (`cairn search --path`, `path=` of `/api/search`) is not a valid gitignore-style pattern"""
    SESSION_REPOSITORY_MISMATCH = 19
    """`cairn ask --session`: the session is about another repository than the one asked about (a session keeps to
    one)"""
    RERANKER_UNAVAILABLE = 20
    """the reranker (`CAIRN_RERANK_MODEL`) cannot be loaded or reached (a search keeps its fused order and warns
    instead)"""
    INTERRUPTED = 130
    """interrupted (Ctrl-C); the index on disk is unchanged unless a new one was completed"""


class CairnError(Exception):
    """An error with a one-line explanation and a hint; the CLI prints both and exits non-zero."""

    exit_code: ExitCode = ExitCode.OTHER
    http_status: int = 500

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


# ---------------------------------------------------------------- ingest and the index


class RepositoryNotFound(CairnError):
    """The path given to ingest is missing or not a folder."""

    exit_code = ExitCode.REPOSITORY_NOT_FOUND
    http_status = 404


class IndexMissing(CairnError):
    """No index exists where one was expected."""

    exit_code = ExitCode.INDEX_MISSING
    http_status = 503


class SymbolNotFound(CairnError):
    """No definition or use of a name in the symbol graph."""

    exit_code = ExitCode.SYMBOL_NOT_FOUND
    http_status = 404


class SessionRepositoryMismatch(CairnError):
    """A turn that asks a session about another repository than the one it is about."""

    exit_code = ExitCode.SESSION_REPOSITORY_MISMATCH
    http_status = 400


class InvalidPattern(CairnError):
    """A path filter that is not a valid gitignore-style pattern."""

    exit_code = ExitCode.INVALID_PATTERN
    http_status = 400


class IndexCorrupted(CairnError):
    """The index folder exists but is not a readable Cairn index."""

    exit_code = ExitCode.INDEX_CORRUPTED
    http_status = 503


class EmbeddingModelMismatch(CairnError):
    """The index was built with another embedding model than the one configured."""

    exit_code = ExitCode.EMBEDDING_MODEL_MISMATCH
    http_status = 503


class RerankUnavailable(CairnError):
    """The reranker cannot score (an endpoint down, a folder that is not a CrossEncoder): the fused order stands."""

    exit_code = ExitCode.RERANKER_UNAVAILABLE
    http_status = 503


class EmbeddingModelUnavailable(CairnError):
    """The configured embedding model cannot be loaded offline."""

    exit_code = ExitCode.EMBEDDING_MODEL_UNAVAILABLE
    http_status = 503


class IndexLocked(CairnError):
    """Another ingest is writing the same index."""

    exit_code = ExitCode.INDEX_LOCKED
    http_status = 409


class UnknownRepository(CairnError):
    """No repository of that name in the data folder (the message lists the ones there are)."""

    exit_code = ExitCode.UNKNOWN_REPOSITORY
    http_status = 404


class RepositoryNameTaken(CairnError):
    """Another source folder is already indexed under the name asked for."""

    exit_code = ExitCode.REPOSITORY_NAME_TAKEN
    http_status = 409


# ---------------------------------------------------------------- models


class ModelConfigError(CairnError):
    """A model setting that cannot be understood."""

    exit_code = ExitCode.MODEL_CONFIG
    http_status = 400


class EmbeddedModelError(CairnError):
    """The embedded model server cannot be started."""

    exit_code = ExitCode.EMBEDDED_MODEL
    http_status = 503


class ModelUnreachable(CairnError):
    """The model endpoint did not answer (down, timing out, or not serving the model)."""

    exit_code = ExitCode.MODEL_UNREACHABLE

    def __init__(self, message: str, hint: str | None = None, *, timed_out: bool = False) -> None:
        super().__init__(message, hint)
        self.timed_out = timed_out
        self.http_status = 504 if timed_out else 503  # timed out, or down / refused


# ---------------------------------------------------------------- service and eval


class UnsafeBind(CairnError):
    """Serving beyond this machine without an API key, or with a key that would let anyone in."""

    exit_code = ExitCode.UNSAFE_BIND


class RedisUnavailable(CairnError):
    """The local redis-server that sessions need could not be started."""

    exit_code = ExitCode.REDIS_UNAVAILABLE
    http_status = 503


class GateFailed(CairnError):
    """Eval scores fell below the configured thresholds."""

    exit_code = ExitCode.GATE_FAILED


class DatasetError(CairnError):
    """An eval dataset that cannot be found or read."""

    exit_code = ExitCode.DATASET_INVALID
    http_status = 400
