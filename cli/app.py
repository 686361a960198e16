"""The ``cairn`` command line's shell: the Typer app, its consoles and shared options, and one way to report errors.

The commands live beside it by group (``cli/index.py``: ingest, search, navigation; ``ask.py``;
``eval.py``; ``serve.py``: the service, the model server, sessions; ``repos.py``); each registers on
``app``, and ``cli/__init__.py`` imports them all. Nothing below this package imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console

from cairn import telemetry
from cairn.errors import CairnError, ExitCode
from config import Settings

app = typer.Typer(
    name="cairn",
    help="Cairn: index a code repository and search it (and, with a model, ask about it) offline.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

P = ParamSpec("P")
R = TypeVar("R")

IndexOption = Annotated[
    Path | None,
    typer.Option("--index", help="Index folder (default: CAIRN_INDEX_DIR or CAIRN_DATA_DIR/index)."),
]
RepoOption = Annotated[
    str | None,
    typer.Option(
        "--repo",
        help="A repository by name (see cairn repos), or '*' for all of them (default: CAIRN_DEFAULT_REPO, "
        "the only one, or all).",
    ),
]


#: Commands traced as one trace each (a server's requests are traced one by one instead).
TRACED_COMMANDS = frozenset({"ingest", "search", "ask", "eval"})


def _reports_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn Cairn's errors into one line on stderr and the error's exit code."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            if func.__name__.rstrip("_") not in TRACED_COMMANDS:
                return func(*args, **kwargs)
            telemetry.configure()  # one trace per command, exported where OTEL_EXPORTER_OTLP_ENDPOINT says
            try:
                with telemetry.span(f"cairn {func.__name__.rstrip('_')}"):
                    return func(*args, **kwargs)
            finally:
                telemetry.flush()  # the SDK shuts the provider down at exit
        except CairnError as exc:
            err.print(f"[bold red]error:[/] {exc.message}", highlight=False)
            if exc.hint:
                err.print(f"  hint: {exc.hint}", highlight=False)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("interrupted; the index on disk is unchanged unless a new one was completed")
            raise typer.Exit(ExitCode.INTERRUPTED) from None

    return wrapper


def _settings(index: Path | None, repo: str | None = None) -> Settings:
    settings = Settings()
    if index is not None and repo is not None:
        raise CairnError("--index and --repo name two different indexes", "give one of them")
    if index is not None:
        settings = settings.model_copy(update={"index_dir": index})
    if repo is not None:  # a repository asked for by name is looked up under DATA_DIR, whatever INDEX_DIR says
        settings = settings.model_copy(update={"index_dir": None, "default_repo": repo})
    return settings


def _index_specs(settings: Settings) -> dict[str, Any]:
    """Return repository name → IndexSpec of what a command reads ("" for the index folder)."""
    from ingest.repos import Repositories, default_repo
    from retrievers import IndexSpec

    repo = default_repo(settings)
    if repo is None:
        return {"": IndexSpec.from_settings(settings)}
    paths = Repositories.of(settings).resolve(repo)
    return {name: IndexSpec.from_settings(settings, path) for name, path in paths.items()}


def _load_indexes(settings: Settings) -> dict[str, Any]:
    """Load what a command searches; across repositories, one that cannot serve is reported and left out."""
    from retrievers import load_search_index

    specs = _index_specs(settings)
    if len(specs) == 1:
        return {name: load_search_index(spec) for name, spec in specs.items()}
    loaded, errors = {}, []
    for name, spec in specs.items():
        try:
            loaded[name] = load_search_index(spec)
        except CairnError as exc:
            err.print(f"[yellow]warning:[/] repository {name} left out: {exc.message}", highlight=False)
            errors.append(exc)
    if not loaded:
        raise errors[0]
    return loaded
