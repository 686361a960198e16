"""Run the Cairn service with the instant fake model (for kill/restart tests and the benchmarks).

    python -m tests.serving.fake_service --port 8123 [--delay 0.0]

Settings come from CAIRN_* as usual; CAIRN_MODEL should be ``instant/fake``.
"""

from __future__ import annotations

import argparse

import uvicorn

from models import register_provider
from tests.fakes import InstantChatModel


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds each fake model call takes")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    model = InstantChatModel(delay=args.delay)
    register_provider("instant", lambda spec, settings: model)

    from serving.app import create_app

    uvicorn.run(create_app(), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
