"""The ``cairn`` command line (the roof of the house: it imports every layer, and none imports it).

``app`` is the Typer app; importing this package registers every command on it, in the order
``cairn --help`` lists them.
"""

# each registers its commands on app, in the order `cairn --help` lists them
from cli import index, ask, eval, serve, repos  # noqa: F401, I001
from cli.app import app


def main() -> None:  # pragma: no cover - console-script shim
    """Run the command line."""
    app()


__all__ = ["app", "main"]
