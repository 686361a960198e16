"""Write the parts of the docs that the code knows: the settings table, the exit codes, the command reference.

    .venv/bin/python docs/generate.py           # rewrite them in place
    .venv/bin/python docs/generate.py --check   # exit 1 and say which differ (make lint)

Each generated part sits between two markers in its page::

    <!-- generated: settings (docs/generate.py writes this part; edit the code, then make docs) -->
    ...
    <!-- end generated: settings -->

and is rendered from the code alone: the ``Settings`` fields (name, default, description), the
``ExitCode`` table in ``cairn/errors.py`` (each member and the docstring under it), and the Typer app
(every command, its arguments and options, their defaults and help). What is around the markers is
written by hand.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BEGIN = "<!-- generated: {name} (docs/generate.py writes this part; edit the code, then make docs) -->"
END = "<!-- end generated: {name} -->"

#: The settings table's sections: a heading, and the first field under it (fields keep their order in Settings).
SETTING_GROUPS = {
    "data_dir": "Where things are kept",
    "embedding_model": "Embedding",
    "chunk_max_chars": "Ingest",
    "faiss_index": "Search",
    "model": "Models",
    "embedded_model_path": "The embedded model",
    "agent_retriever": "The agent",
    "serve_host": "The service",
    "trace_content": "Traces and metrics",
    "eval_k": "Evaluation",
}


def _cell(text: str) -> str:
    """Return text fit for one Markdown table cell (pipes escaped, one line)."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _default(field: Any) -> str:
    from pydantic_core import PydanticUndefined

    value = field.default
    if value is PydanticUndefined:  # a default_factory (an empty list)
        value = field.default_factory() if field.default_factory else None
    if value is None or value == []:
        return "(none)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def settings_table() -> str:
    """The CAIRN_* settings, grouped, each with its default and the description ``--help`` shows."""
    from config import Settings

    lines: list[str] = []
    for name, field in Settings.model_fields.items():
        if name in SETTING_GROUPS:
            lines += ["", f"### {SETTING_GROUPS[name]}", "", "| setting | default | what it does |", "|---|---|---|"]
        lines.append(f"| `CAIRN_{name.upper()}` | {_cell(_default(field))} | {_cell(field.description or '')} |")
    return "\n".join(lines).strip()


def exit_codes() -> dict[int, str]:
    """Return each ``ExitCode`` value and the docstring written under its member in cairn/errors.py."""
    from cairn.errors import ExitCode

    tree = ast.parse((ROOT / "cairn" / "errors.py").read_text())
    enum = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ExitCode")
    meanings: dict[str, str] = {}
    for statement, following in zip(enum.body, [*enum.body[1:], None], strict=True):
        if isinstance(statement, ast.Assign) and isinstance(following, ast.Expr):
            meanings[statement.targets[0].id] = " ".join(str(following.value.value).split())  # type: ignore[attr-defined]
    return {member.value: meanings[member.name] for member in ExitCode}


def exit_code_table() -> str:
    """The exit codes of every `cairn` command."""
    rows = ["| code | meaning |", "|---|---|", "| 0 | success |"]
    rows += [f"| {code} | {_cell(meaning)} |" for code, meaning in exit_codes().items()]
    return "\n".join(rows)


def _option(param: Any) -> tuple[str, str, str]:
    """One argument or option as table cells: its flags, its default, its help (Typer's own click, duck-typed)."""
    if param.param_type_name == "argument":
        name = f"`{param.name.upper()}`" + ("" if param.required else " (optional)")
    else:
        name = " / ".join(f"`{flag}`" for flag in [*param.opts, *param.secondary_opts])
    default = param.default
    bare_flag = getattr(param, "is_flag", False) and not param.secondary_opts
    if bare_flag or default is None or default == () or callable(default):
        shown = ""
    else:
        shown = f"`{str(default).lower() if isinstance(default, bool) else default}`"
    return name, shown, _cell(getattr(param, "help", None) or "")


def _commands(command: Any, path: list[str]) -> list[tuple[list[str], Any]]:
    """Every command under ``command`` with its path, in the order ``--help`` lists them."""
    subcommands = getattr(command, "commands", None)
    if subcommands is None:
        return [(path, command)]
    found: list[tuple[list[str], Any]] = []
    if path and getattr(command, "invoke_without_command", False):  # a group that is a command too (cairn repos)
        found.append((path, command))
    for name, sub in subcommands.items():
        found += _commands(sub, [*path, name])
    return found


def command_reference() -> str:
    """Every `cairn` command: its purpose, usage, arguments and options, from the Typer app."""
    import typer.main

    from cli import app

    root = typer.main.get_command(app)
    sections: list[str] = []
    for path, command in _commands(root, []):
        name = " ".join(["cairn", *path])
        params = [p for p in command.params if p.name != "help"]
        args = " ".join(p.name.upper() for p in params if p.param_type_name == "argument")
        help_text = (command.help or "").strip()
        lines = [f"### `{name}`", "", f"    {name}{' [OPTIONS]' if params else ''}{' ' + args if args else ''}", ""]
        lines.append(help_text.replace("\b\n", ""))
        rows = [_option(p) for p in params]
        if rows:
            lines += ["", "| argument / option | default | what it does |", "|---|---|---|"]
            lines += [f"| {flag} | {default} | {text} |" for flag, default, text in rows]
        sections.append("\n".join(lines))
    return "\n\n".join(sections)


#: Generated part → (its page, what renders it).
BLOCKS: dict[str, tuple[str, Callable[[], str]]] = {
    "settings": ("docs/settings.md", settings_table),
    "exit-codes": ("docs/commands.md", exit_code_table),
    "commands": ("docs/commands.md", command_reference),
}


def render(text: str, name: str, body: str) -> str:
    """Return ``text`` with the generated part ``name`` replaced by ``body``."""
    begin, end = BEGIN.format(name=name), END.format(name=name)
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"docs/generate.py: no '{begin}' ... '{end}' markers for {name!r}")
    return pattern.sub(lambda _: f"{begin}\n{body}\n{end}", text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a page is out of date")
    args = parser.parse_args(argv)
    pages: dict[str, str] = {}
    for name, (page, renderer) in BLOCKS.items():
        text = pages.get(page) or (ROOT / page).read_text()
        pages[page] = render(text, name, renderer())
    stale = [page for page, text in pages.items() if (ROOT / page).read_text() != text]
    if args.check:
        for page in stale:
            print(f"{page} is out of date with the code: run `make docs` and commit it", file=sys.stderr)
        return 1 if stale else 0
    for page in stale:
        (ROOT / page).write_text(pages[page])
        print(f"wrote {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
