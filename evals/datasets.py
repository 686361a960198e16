"""Load eval datasets and the pinned corpora they ask about.

A dataset is a versioned JSONL file in ``evals/datasets/``, one question per line::

    {"id": "s-01", "corpus": "sample", "question": "...", "reference": "a reference answer",
     "files": ["path/answering/it.py"], "symbols": ["function_or_class"]}

``corpus`` names a pinned, offline corpus (see CORPORA); one dataset asks about one corpus.
``files`` are paths relative to the corpus root. Reference contexts are the corpus chunks of
``files`` whose symbol matches one of ``symbols`` (all chunks of those files when none does).
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from cairn.errors import DatasetError

if TYPE_CHECKING:
    from retrievers import SearchIndex

DATASETS_DIR = Path(__file__).parent / "datasets"
ROOT = Path(__file__).resolve().parents[1]

#: The most reference contexts one question gets (the first ones in corpus order).
MAX_REFERENCE_CONTEXTS = 6


@dataclass(frozen=True, slots=True)
class EvalQuestion:
    """A question, its reference answer, and the files (and symbols in them) that answer it."""

    id: str
    corpus: str
    question: str
    reference: str
    files: tuple[str, ...]
    symbols: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Corpus:
    """A pinned corpus: where its files are and which version they are."""

    name: str
    root: Path
    version: str


def _package_corpus(package: str) -> Callable[[], Corpus]:
    def locate() -> Corpus:
        module = importlib.import_module(package)
        if module.__file__ is None:  # a namespace package has no one folder to index
            raise DatasetError(f"Corpus package {package!r} is a namespace package", "install it as a regular package")
        return Corpus(package, Path(module.__file__).parent, metadata.version(package))

    return locate


#: Corpus name -> how to locate it (located lazily: a corpus may be an installed package).
CORPORA: dict[str, Callable[[], Corpus]] = {
    "sample": lambda: Corpus("sample", ROOT / "examples" / "sample-repo", "in-repo"),
    "httpx": _package_corpus("httpx"),
    "rich": _package_corpus("rich"),
    "transformers": _package_corpus("transformers"),
}


def resolve_dataset(name_or_path: str | Path) -> Path:
    """Return the dataset file of a path, or of a dataset name in evals/datasets (with or without .jsonl)."""
    path = Path(name_or_path)
    if path.exists():
        return path
    for candidate in (DATASETS_DIR / f"{name_or_path}.jsonl", DATASETS_DIR / str(name_or_path)):
        if candidate.exists():
            return candidate
    names = ", ".join(sorted(p.stem for p in DATASETS_DIR.glob("*.jsonl")))
    raise DatasetError(f"No dataset {str(name_or_path)!r}", f"give a JSONL path or one of: {names}")


def load_dataset(path: Path) -> list[EvalQuestion]:
    """Read and check a dataset; a bad line is reported with its number."""
    questions: list[EvalQuestion] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            question = EvalQuestion(
                id=str(row["id"]),
                corpus=str(row["corpus"]),
                question=str(row["question"]),
                reference=str(row["reference"]),
                files=tuple(row["files"]),
                symbols=tuple(row.get("symbols", ())),
            )
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DatasetError(
                f"{path}:{number} is not a valid question ({type(exc).__name__}: {exc})",
                "each line needs id, corpus, question, reference and files",
            ) from exc
        if question.corpus not in CORPORA:
            raise DatasetError(f"{path}:{number} names unknown corpus {question.corpus!r}",
                               f"use one of: {', '.join(CORPORA)}")  # fmt: skip
        questions.append(question)
    if not questions:
        raise DatasetError(f"{path} has no questions", "add one JSON object per line")
    if len({q.corpus for q in questions}) != 1:
        raise DatasetError(f"{path} mixes corpora", "keep one corpus per dataset file")
    return questions


def reference_contexts(index: SearchIndex, question: EvalQuestion) -> list[str]:
    """Return the corpus chunks that answer a question: reference files' chunks whose symbol matches."""
    in_files = [c for c in index.chunks if c.path in question.files]
    if question.symbols:
        pattern = re.compile("|".join(rf"\b{re.escape(s)}\b" for s in question.symbols))
        matched = [c for c in in_files if c.symbol and pattern.search(c.symbol)]
        if matched:
            return [c.text for c in matched[:MAX_REFERENCE_CONTEXTS]]
    return [c.text for c in in_files[:MAX_REFERENCE_CONTEXTS]]
