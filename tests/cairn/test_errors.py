"""One table of exit codes: every error class uses it, and the docs document exactly it."""

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

    page = (ROOT / "docs" / "commands.md").read_text()
    table = page[page.index("## Exit codes") : page.index("## Reference")]
    documented = {int(code): meaning for code, meaning in re.findall(r"^\| (\d+) \| (.+) \|$", table, re.MULTILINE)}
    assert set(documented) == {0} | {code.value for code in ExitCode}, "docs/commands.md's exit codes are out of date"
