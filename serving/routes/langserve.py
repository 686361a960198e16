"""The agent graph as LangServe routes at /agent: invoke, batch, stream, stream_events, playground."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request

from graphs.agent.state import InputState
from serving.service import Service


def add_langserve(app: FastAPI, service: Service) -> None:
    """Mount the stateless agent at /agent; a run's ``configurable`` overrides the service's settings."""
    from langserve import add_routes

    async def with_service_context(config: dict[str, Any], request: Request) -> dict[str, Any]:
        # LangServe passes no runtime context, only a config: the graph reads the run's settings from
        # `configurable` (graphs.agent.context.run_context), the service's first, the client's on top.
        asked = {k: v for k, v in (config.get("configurable") or {}).items() if v is not None}
        callbacks = [*(config.get("callbacks") or []), service.run_telemetry()]  # traced like /v1 runs
        return {**config, "configurable": {**service.context.as_configurable(), **asked}, "callbacks": callbacks}

    add_routes(
        app,
        service.graph.with_types(input_type=InputState),
        path="/agent",
        per_req_config_modifier=with_service_context,
        enabled_endpoints=[
            "invoke",
            "batch",
            "stream",
            "stream_log",
            "stream_events",
            "playground",
            "input_schema",
            "output_schema",
            "config_schema",
        ],
    )
