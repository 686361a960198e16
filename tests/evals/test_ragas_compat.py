"""The one RAGAS workaround: it is still needed, and it makes ragas import (with analytics off)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_ragas_imports_through_the_compat_module_with_tracking_off() -> None:
    result = _python(
        "import os; from evals.ragas_compat import load_ragas, metrics; r = load_ragas(); m = metrics();"
        "assert os.environ['RAGAS_DO_NOT_TRACK'] == 'true'; print(r.__version__, m.RougeScore.__name__)"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["0.4.3", "RougeScore"]


def test_upstream_still_needs_the_workaround() -> None:
    """When this fails, ragas imports cleanly: delete the stub in evals/ragas_compat.py."""
    result = _python("import ragas")
    assert result.returncode != 0, "ragas now imports without the stub: remove the workaround in evals/ragas_compat.py"
    assert "langchain_community.chat_models.vertexai" in result.stderr
