"""Start Arize Phoenix, the local trace viewer, on loopback only: ``make traces`` runs this.

It runs in Phoenix's own virtual environment (``.venv-phoenix``; Phoenix pins its own FastAPI) and
imports nothing from Cairn. Phoenix's UI and OTLP/HTTP receiver bind ``PHOENIX_HOST`` (127.0.0.1 here),
but its OTLP/gRPC receiver binds every interface (``[::]:4317``) whatever that setting says; this
launcher rewrites that address to 127.0.0.1 before Phoenix starts, so nothing listens beyond the machine.
Its telemetry and external resources are switched off by the Makefile's environment
(``PHOENIX_TELEMETRY_ENABLED=false``, ``PHOENIX_ALLOW_EXTERNAL_RESOURCES=false``).

    .venv-phoenix/bin/python serving/trace_viewer.py     # then OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:6006
"""

from __future__ import annotations

import os
import sys
from typing import Any

LOOPBACK = "127.0.0.1"


def _on_loopback(address: str) -> str:
    """Return a gRPC listen address with an any-interface host replaced by 127.0.0.1."""
    for anywhere in ("[::]", "0.0.0.0"):
        if address.startswith(anywhere + ":"):
            return LOOPBACK + address[len(anywhere) :]
    return address


def _loopback_grpc() -> None:
    import grpc

    make_server = grpc.aio.server

    def server(*args: Any, **kwargs: Any) -> Any:
        created = make_server(*args, **kwargs)
        insecure, secure = created.add_insecure_port, created.add_secure_port
        created.add_insecure_port = lambda address: insecure(_on_loopback(address))
        created.add_secure_port = lambda address, credentials: secure(_on_loopback(address), credentials)
        return created

    grpc.aio.server = server


def main() -> None:
    for name, value in {"PHOENIX_HOST": LOOPBACK, "PHOENIX_TELEMETRY_ENABLED": "false",
                        "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false"}.items():  # fmt: skip
        os.environ.setdefault(name, value)
    if os.environ["PHOENIX_HOST"] not in (LOOPBACK, "localhost", "::1"):
        sys.exit(f"PHOENIX_HOST={os.environ['PHOENIX_HOST']} would expose the traces beyond this machine")
    _loopback_grpc()
    from phoenix.server.main import main as phoenix

    sys.argv = ["phoenix", "serve"]
    phoenix()


if __name__ == "__main__":
    main()
