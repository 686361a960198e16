"""`cairn eval` with no network at all (unshare -n): the bundled models, RAGAS, the report, the gate."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def test_eval_runs_with_networking_disabled(tmp_path: Path) -> None:
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-n", "true"]).returncode != 0:
        pytest.fail("`unshare -n` is unavailable here; it is how this test proves the eval makes no connection")
    cairn = Path(sys.executable).with_name("cairn")
    out = tmp_path / "report"
    env = {**os.environ, "CAIRN_DATA_DIR": str(tmp_path / "data"), "CAIRN_EMBEDDED_PORT": "18765",
           "HF_HUB_OFFLINE": "1", "CAIRN_MODEL": "embedded"}  # fmt: skip
    env.pop("RAGAS_DO_NOT_TRACK", None)  # the eval must set it itself
    # Inside the new network namespace only loopback exists (brought up for the embedded model server).
    script = f"ip link set lo up && exec {cairn} eval sample --limit 2 --out {out}"
    result = subprocess.run(["unshare", "-n", "sh", "-c", script], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["questions"] == 2 and report["gate"]["passed"]
    assert (out / "report.md").exists() and (out / "scores.png").exists()
