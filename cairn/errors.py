"""Errors a user can act on: each says what happened and what to do next."""

from __future__ import annotations


class CairnError(Exception):
    """An error with a one-line explanation and a hint; the CLI prints both and exits non-zero."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class RepositoryNotFound(CairnError):
    """The path given to ingest is missing or not a folder."""

    exit_code = 2


class IndexMissing(CairnError):
    """No index exists where one was expected."""

    exit_code = 3


class IndexCorrupted(CairnError):
    """The index folder exists but is not a readable Cairn index."""

    exit_code = 4


class EmbeddingModelMismatch(CairnError):
    """The index was built with another embedding model than the one configured."""

    exit_code = 5


class EmbeddingModelUnavailable(CairnError):
    """The configured embedding model cannot be loaded offline."""

    exit_code = 6


class IndexLocked(CairnError):
    """Another ingest is writing the same index."""

    exit_code = 7
