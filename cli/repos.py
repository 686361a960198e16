"""``cairn info``, ``cairn repos`` and ``cairn version``: what is indexed, and where."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from cairn import __version__
from cairn.errors import CairnError, ExitCode
from cli.app import IndexOption, RepoOption, _index_specs, _reports_errors, _settings, app, err, out
from config import Settings

JsonOption = Annotated[bool, typer.Option("--json", help="Print as JSON.")]


@app.command()
@_reports_errors
def info(index: IndexOption = None, repo: RepoOption = None) -> None:
    """Describe the index: where it came from, the embedding model, counts."""
    from ingest.store import open_generation

    specs = _index_specs(_settings(index, repo))
    if len(specs) > 1:
        raise CairnError("cairn info describes one index", f"name one with --repo: {', '.join(specs)}")
    generation = open_generation(next(iter(specs.values())).index_dir)
    out.print_json(json.dumps({**generation.manifest.summary(), "generation": generation.path.name}))


repos_app = typer.Typer(help="The repositories under DATA_DIR/repos: list them, remove one.")
app.add_typer(repos_app, name="repos")


def _size(size: int) -> str:
    """Return a byte count for people: 812 B, 4.1 MB."""
    value = float(size)
    for unit in ("B", "KB", "MB"):
        if value < 1024:
            return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


@repos_app.callback(invoke_without_command=True)
@_reports_errors
def repos(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the repositories as JSON.")] = False,
) -> None:
    """List the repositories: name, source folder, chunks, files, last ingest, embedding model, size on disk."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from ingest.repos import Repositories, default_repo

    settings = Settings()
    infos = Repositories.of(settings).describe_all(settings.embedding_model)
    default = default_repo(settings)  # None: the index folder (CAIRN_INDEX_DIR, or DATA_DIR/index)
    if as_json:
        out.print_json(json.dumps({"default": default, "repos": [info.as_dict() for info in infos]}))
        return
    if not infos:
        out.print(f"No repositories in {Repositories.of(settings).root}; add one with: cairn ingest PATH [--name NAME]")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("name", "source", "chunks", "files", "last ingest", "embedding model", "size"):
        numeric = column in {"chunks", "files", "size"}
        table.add_column(column, justify="right" if numeric else "left", overflow="fold", no_wrap=numeric)
    for info in infos:
        name = f"{info.name} (default)" if info.name == default else info.name
        source = info.source or "-"
        if info.source and not info.source_exists:
            source += " [red](missing)[/]"
        when = info.last_ingest.replace("T", " ")[:16] if info.last_ingest else "-"  # to the minute, UTC
        table.add_row(name, source, str(info.chunks or "-"), str(info.files or "-"), when,
                      info.embedding_model or "-", _size(info.size_bytes))  # fmt: skip
    out.print(table)
    if default is None:
        out.print(f"Commands without --repo use the index folder {settings.resolved_index_dir}.", highlight=False)
    elif default == "*":
        out.print("Commands without --repo, and the model cairn-agent, search all of them.")
    for info in infos:
        if not info.ok:
            out.print(f"[red]{info.name}[/]: {info.problem} (hint: {info.hint})", highlight=False)
        elif not info.source_exists:
            out.print(f"[yellow]{info.name}[/]: the source folder {info.source} is missing; the index still serves "
                      f"(hint: re-ingest it from where it moved: cairn ingest NEW_PATH --name {info.name})",
                      highlight=False)  # fmt: skip


@repos_app.command("remove")
@_reports_errors
def repos_remove(
    name: Annotated[str, typer.Argument(help="The repository to delete (its index; the source folder is untouched).")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a repository's index from DATA_DIR/repos (asks first, unless --yes)."""
    from ingest.repos import Repositories

    repositories = Repositories.of(Settings())
    index_dir = repositories.get(name)  # an unknown name lists the ones there are
    if not yes:
        if not sys.stdin.isatty():
            raise CairnError(f"Not deleting repository {name!r} without a confirmation", "add --yes")
        if not typer.confirm(f"Delete the index of repository {name!r} ({index_dir})?"):
            err.print("nothing deleted")
            raise typer.Exit(ExitCode.OTHER)
    removed = repositories.remove(name)
    out.print(f"Removed repository {name} ({removed}); its source folder is untouched.")


@app.command()
def version() -> None:
    """Print Cairn's version."""
    out.print(__version__)


@app.command()
@_reports_errors
def tools(index: IndexOption = None, repo: RepoOption = None, as_json: JsonOption = False) -> None:
    """List the tools the agent may use: Cairn's own and the allowed tools of the MCP servers configured.

    An MCP server (CAIRN_MCP_SERVERS) is started to list its tools; one that fails is reported, not fatal.
    Only read-only tools are allowed unless a server's allow_writes names one.
    """
    from tools.mcp import agent_tools

    rows, statuses = agent_tools(_settings(index, repo).mcp_servers)
    if as_json:
        out.print_json(json.dumps({"tools": rows, "mcp_servers": statuses}))
        return
    for row in rows:
        out.print(f"{row['name']:<28} {row['source']:<14} {'read-only' if row['read_only'] else 'WRITES'}",
                  highlight=False)  # fmt: skip
    for name, status in statuses.items():
        if not status["ok"]:
            err.print(f"[yellow]warning:[/] MCP server {name} is unavailable: {status['error']}", highlight=False)
