"""Chunks stored as columns plus one text blob, so unchanged chunks are copied as bytes, not re-parsed."""

from __future__ import annotations

import json
import mmap
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np

from ingest.chunking import Chunk

HASH_BYTES = 16


def _interned(values: Sequence[str]) -> tuple[list[str], np.ndarray]:
    table: dict[str, int] = {}
    ids = np.fromiter((table.setdefault(v, len(table)) for v in values), dtype=np.int32, count=len(values))
    return list(table), ids


class ChunkTable(Sequence[Chunk]):
    """The chunks of one generation: metadata columns, a UTF-8 text blob and each chunk's content hash.

    Indexing returns a ``Chunk`` (its text decoded on demand); the columns serve bulk work (filters,
    incremental ingest) without materialising sixty thousand objects.
    """

    def __init__(
        self,
        *,
        paths: list[str],
        path_ids: np.ndarray,
        starts: np.ndarray,
        ends: np.ndarray,
        languages: list[str],
        language_ids: np.ndarray,
        kinds: list[str],
        kind_ids: np.ndarray,
        symbols: list[str | None],
        texts: bytes | mmap.mmap | memoryview,
        text_offsets: np.ndarray,
        hashes: np.ndarray,
    ) -> None:
        self.paths, self.path_ids = paths, path_ids
        self.starts, self.ends = starts, ends
        self.languages, self.language_ids = languages, language_ids
        self.kinds, self.kind_ids = kinds, kind_ids
        self.symbols = symbols
        self.texts = texts
        self.text_offsets = text_offsets
        self.hashes = hashes

    def __len__(self) -> int:
        return len(self.starts)

    @overload
    def __getitem__(self, index: int) -> Chunk: ...
    @overload
    def __getitem__(self, index: slice) -> list[Chunk]: ...
    def __getitem__(self, index: int | slice) -> Chunk | list[Chunk]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return Chunk(
            self.paths[self.path_ids[index]],
            int(self.starts[index]),
            int(self.ends[index]),
            self.languages[self.language_ids[index]],
            self.symbols[index],
            self.kinds[self.kind_ids[index]],
            self.text(index),
        )

    def __iter__(self) -> Iterator[Chunk]:
        for index in range(len(self)):
            yield self[index]

    def text(self, index: int) -> str:
        """Return chunk ``index``'s text."""
        return bytes(self.texts[self.text_offsets[index] : self.text_offsets[index + 1]]).decode("utf-8")

    def text_run(self, begin: int, end: int) -> tuple[bytes | memoryview, np.ndarray]:
        """Return the text bytes of rows ``begin:end`` back to back (one slice, no copy) and each row's length."""
        first, last = int(self.text_offsets[begin]), int(self.text_offsets[end])
        return memoryview(self.texts)[first:last], np.diff(self.text_offsets[begin : end + 1])

    def take(self, rows: np.ndarray) -> ChunkTable:
        """Return a new table of ``rows`` in that order (consecutive rows copied as one run)."""
        builder = ChunkTableBuilder()
        for begin, end in runs(rows):
            builder.add_rows(self, int(rows[begin]), int(rows[end - 1]) + 1)
        return builder.build()

    def language_column(self) -> np.ndarray:
        """Return each chunk's language name."""
        return np.asarray(self.languages, dtype=object)[self.language_ids]

    # ------------------------------------------------------------ disk

    def save(self, folder: Path) -> None:
        """Write chunks.json (columns), texts.bin, text_offsets.npy and hashes.npy into ``folder``."""
        columns = {
            "paths": self.paths, "path_ids": self.path_ids.tolist(),
            "starts": self.starts.tolist(), "ends": self.ends.tolist(),
            "languages": self.languages, "language_ids": self.language_ids.tolist(),
            "kinds": self.kinds, "kind_ids": self.kind_ids.tolist(),
            "symbols": self.symbols,
        }  # fmt: skip
        (folder / "chunks.json").write_text(json.dumps(columns, ensure_ascii=False), encoding="utf-8")
        with (folder / "texts.bin").open("wb") as handle:
            handle.write(self.texts)
        np.save(folder / "text_offsets.npy", self.text_offsets)
        np.save(folder / "hashes.npy", self.hashes)

    @classmethod
    def load(cls, folder: Path) -> ChunkTable:
        """Read a table written by ``save``; the text blob is memory-mapped, not read."""
        columns = json.loads((folder / "chunks.json").read_text(encoding="utf-8"))
        with (folder / "texts.bin").open("rb") as handle:
            size = handle.seek(0, 2)
            texts: bytes | mmap.mmap = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        return cls(
            paths=columns["paths"],
            path_ids=np.asarray(columns["path_ids"], dtype=np.int32),
            starts=np.asarray(columns["starts"], dtype=np.int32),
            ends=np.asarray(columns["ends"], dtype=np.int32),
            languages=columns["languages"],
            language_ids=np.asarray(columns["language_ids"], dtype=np.int32),
            kinds=columns["kinds"],
            kind_ids=np.asarray(columns["kind_ids"], dtype=np.int32),
            symbols=columns["symbols"],
            texts=texts,
            text_offsets=np.load(folder / "text_offsets.npy"),
            hashes=np.load(folder / "hashes.npy"),
        )

    @classmethod
    def from_chunks(cls, chunks: Sequence[Chunk]) -> ChunkTable:
        """Build a table from Chunk objects."""
        builder = ChunkTableBuilder()
        for chunk in chunks:
            builder.add(chunk)
        return builder.build()


class ChunkTableBuilder:
    """Assemble a new table from runs of an old table's rows and from new chunks, in order."""

    def __init__(self) -> None:
        self._paths: list[str] = []
        self._starts: list[np.ndarray] = []
        self._ends: list[np.ndarray] = []
        self._languages: list[str] = []
        self._kinds: list[str] = []
        self._symbols: list[str | None] = []
        self._text_parts: list[bytes | memoryview] = []
        self._text_lengths: list[np.ndarray] = []
        self._hashes: list[np.ndarray] = []

    def add(self, chunk: Chunk) -> None:
        """Append a new chunk."""
        encoded = chunk.text.encode("utf-8", "surrogatepass")
        self._paths.append(chunk.path)
        self._starts.append(np.array([chunk.start_line], dtype=np.int32))
        self._ends.append(np.array([chunk.end_line], dtype=np.int32))
        self._languages.append(chunk.language)
        self._kinds.append(chunk.kind)
        self._symbols.append(chunk.symbol)
        self._text_parts.append(encoded)
        self._text_lengths.append(np.array([len(encoded)], dtype=np.int64))
        self._hashes.append(np.frombuffer(bytes.fromhex(chunk.content_hash), dtype=np.uint8).reshape(1, HASH_BYTES))

    def add_rows(self, table: ChunkTable, begin: int, end: int) -> None:
        """Append rows ``begin:end`` of an existing table, copying their text bytes as one slice."""
        if end <= begin:
            return
        self._paths.extend(table.paths[i] for i in table.path_ids[begin:end])
        self._starts.append(table.starts[begin:end])
        self._ends.append(table.ends[begin:end])
        self._languages.extend(table.languages[i] for i in table.language_ids[begin:end])
        self._kinds.extend(table.kinds[i] for i in table.kind_ids[begin:end])
        self._symbols.extend(table.symbols[begin:end])
        part, lengths = table.text_run(begin, end)
        self._text_parts.append(part)
        self._text_lengths.append(lengths)
        self._hashes.append(table.hashes[begin:end])

    def build(self) -> ChunkTable:
        """Return the assembled table (its text blob joined in memory)."""
        paths, path_ids = _interned(self._paths)
        languages, language_ids = _interned(self._languages)
        kinds, kind_ids = _interned(self._kinds)
        lengths = np.concatenate(self._text_lengths) if self._text_lengths else np.zeros(0, dtype=np.int64)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return ChunkTable(
            paths=paths,
            path_ids=path_ids,
            starts=np.concatenate(self._starts) if self._starts else np.zeros(0, dtype=np.int32),
            ends=np.concatenate(self._ends) if self._ends else np.zeros(0, dtype=np.int32),
            languages=languages,
            language_ids=language_ids,
            kinds=kinds,
            kind_ids=kind_ids,
            symbols=self._symbols,
            texts=b"".join(self._text_parts),
            text_offsets=offsets,
            hashes=np.concatenate(self._hashes) if self._hashes else np.zeros((0, HASH_BYTES), dtype=np.uint8),
        )


class JoinedChunkTable(ChunkTable):
    """Rows ``base_rows`` of a base table followed by every row of a second one: a delta generation's chunks.

    The metadata columns are joined in memory (names interned again, so a file is listed once and a
    file whose base rows were all dropped is not listed); the texts stay where they are, the base's
    memory-mapped, and are read from whichever table holds the row.
    """

    def __init__(self, base: ChunkTable, base_rows: np.ndarray, delta: ChunkTable) -> None:
        self._base, self._base_rows, self._delta = base, base_rows, delta
        rows = base_rows
        paths, path_ids = _reinterned(base.paths, base.path_ids[rows], delta.paths, delta.path_ids)
        languages, language_ids = _reinterned(base.languages, base.language_ids[rows], delta.languages,
                                              delta.language_ids)  # fmt: skip
        kinds, kind_ids = _reinterned(base.kinds, base.kind_ids[rows], delta.kinds, delta.kind_ids)
        base_symbols = base.symbols
        super().__init__(
            paths=paths,
            path_ids=path_ids,
            starts=np.concatenate([base.starts[rows], delta.starts]),
            ends=np.concatenate([base.ends[rows], delta.ends]),
            languages=languages,
            language_ids=language_ids,
            kinds=kinds,
            kind_ids=kind_ids,
            symbols=[base_symbols[row] for row in rows.tolist()] + list(delta.symbols),
            texts=b"",
            text_offsets=np.zeros(0, dtype=np.int64),  # not used: text() and text_run() ask the two tables
            hashes=np.concatenate([base.hashes[rows], delta.hashes]),
        )

    def text(self, index: int) -> str:
        """Return chunk ``index``'s text, from the base table or the delta."""
        kept = len(self._base_rows)
        if index < kept:
            return self._base.text(int(self._base_rows[index]))
        return self._delta.text(index - kept)

    def text_run(self, begin: int, end: int) -> tuple[bytes | memoryview, np.ndarray]:
        """Return rows ``begin:end``'s text bytes: one slice where they are consecutive in one table."""
        kept = len(self._base_rows)
        if end <= begin:
            return b"", np.zeros(0, dtype=np.int64)
        if begin >= kept:
            return self._delta.text_run(begin - kept, end - kept)
        rows = self._base_rows[begin:end]
        if end <= kept and bool((np.diff(rows) == 1).all()):
            return self._base.text_run(int(rows[0]), int(rows[-1]) + 1)
        parts = [self.text(i).encode("utf-8", "surrogatepass") for i in range(begin, end)]
        return b"".join(parts), np.array([len(part) for part in parts], dtype=np.int64)

    def save(self, folder: Path) -> None:
        """Write the joined rows as one plain table."""
        self.take(np.arange(len(self))).save(folder)


def runs(rows: np.ndarray) -> list[tuple[int, int]]:
    """Return the (begin, end) positions of each run of consecutive values in ``rows``."""
    if not len(rows):
        return []
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    begins = [0, *breaks.tolist()]
    return list(zip(begins, [*breaks.tolist(), len(rows)], strict=True))


def _reinterned(
    names_a: list[str], ids_a: np.ndarray, names_b: list[str], ids_b: np.ndarray
) -> tuple[list[str], np.ndarray]:
    """Intern the names two tables' id columns point at as one list (each used name once, in first-id order)."""
    names = [*names_a, *names_b]
    ids = np.concatenate([ids_a.astype(np.int64), ids_b.astype(np.int64) + len(names_a)])
    table: dict[str, int] = {}
    remap = np.full(max(len(names), 1), -1, dtype=np.int32)
    for old in np.unique(ids).tolist():
        remap[old] = table.setdefault(names[old], len(table))
    return list(table), remap[ids] if len(ids) else np.zeros(0, dtype=np.int32)


def legacy_rows_to_table(rows: Sequence[list[Any]]) -> ChunkTable:
    """Build a table from format-1 ``chunks.jsonl`` rows (path, start, end, language, symbol, kind, text)."""
    return ChunkTable.from_chunks(
        [Chunk(p, int(s), int(e), lang, sym, kind, text) for p, s, e, lang, sym, kind, text in rows]
    )
