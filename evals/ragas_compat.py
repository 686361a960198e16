"""Import RAGAS offline, with the one workaround ragas 0.4.3 needs. Import ragas through here only.

ragas 0.4.3 imports ``langchain_community.chat_models.vertexai``, a module current langchain-community
no longer has (ragas#2745, ragas#2995), so ``import ragas`` fails. Registering a stub under that name
before the import works: Cairn never uses Vertex AI. tests/evals/test_ragas_compat.py fails once
upstream no longer needs the stub, so it can be removed then.

RAGAS sends usage analytics unless ``RAGAS_DO_NOT_TRACK`` is set; it is set here, before the import.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
import warnings
from typing import Any

MISSING_MODULE = "langchain_community.chat_models.vertexai"


def needs_stub() -> bool:
    """Whether the module ragas 0.4.3 imports is missing from the installed langchain-community."""
    try:
        importlib.import_module(MISSING_MODULE)
    except ImportError:
        return True
    return False


def _install_stub() -> None:
    stub = types.ModuleType(MISSING_MODULE)

    class ChatVertexAI:  # only ever referenced in an isinstance check inside ragas
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("Vertex AI is not available in Cairn (offline)")

    stub.ChatVertexAI = ChatVertexAI  # type: ignore[attr-defined]  # a module made here: no declared attributes
    sys.modules[MISSING_MODULE] = stub


def load_ragas() -> types.ModuleType:
    """Return the ragas module, imported with analytics off and the stub in place when needed."""
    os.environ["RAGAS_DO_NOT_TRACK"] = "true"
    if "ragas" not in sys.modules and needs_stub():
        _install_stub()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return importlib.import_module("ragas")


def metrics() -> types.ModuleType:
    """Return ``ragas.metrics`` (the single-sample metric classes), deprecation notices silenced."""
    load_ragas()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return importlib.import_module("ragas.metrics")
