"""One table of exit codes: every error class uses it, and the README documents exactly it."""

from __future__ import annotations

import re

import cairn.errors
from cairn.errors import CairnError, ExitCode
from tests.conftest import ROOT


def test_every_error_has_its_own_documented_exit_code() -> None:
    classes = [c for c in vars(cairn.errors).values() if isinstance(c, type) and issubclass(c, CairnError)]
    codes = {c: c.exit_code for c in classes if c is not CairnError}
    assert all(isinstance(code, ExitCode) for code in codes.values())
    assert len(set(codes.values())) == len(codes), "two error classes share an exit code"

    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("### Exit codes") :].split("\n\n")[2]
    documented = {int(code): meaning for code, meaning in re.findall(r"^\| (\d+) \| (.+) \|$", table, re.MULTILINE)}
    assert set(documented) == {code.value for code in ExitCode}, "the README's exit-code table is out of date"
