"""The agent graph as LangServe routes at /agent: invoke, batch, stream, stream_events, playground."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request

from graphs.agent.state import InputState
from serving.errors import ServiceError
from serving.service import Service

#: The context fields a LangServe client may set for its run. Never folders or endpoints: a client
#: must not make the service read another index or send code to a model it was not configured with.
CLIENT_FIELDS = frozenset({"repo", "retriever", "k", "max_rounds", "plan", "temperature", "max_tokens", "stop"})


async def sent_configurable(request: Request) -> dict[str, Any]:
    """Return the ``config.configurable`` a client sent, as sent.

    LangServe validates a request's config against the graph's config schema, which declares no
    configurable fields (the graph's settings are its context schema), so it would drop them all;
    the request body still has them.
    """
    if request.method != "POST":
        return {}
    try:
        body = await request.json()
    except ValueError:
        return {}
    config = body.get("config") if isinstance(body, dict) else None
    configurable = config.get("configurable") if isinstance(config, dict) else None
    return dict(configurable) if isinstance(configurable, dict) else {}


def add_langserve(app: FastAPI, service: Service) -> None:
    """Mount the stateless agent at /agent; a run's ``configurable`` overrides the service's settings."""
    from langserve import add_routes

    async def with_service_context(config: dict[str, Any], request: Request) -> dict[str, Any]:
        # LangServe passes no runtime context, only a config: the graph reads the run's settings from
        # `configurable` (graphs.agent.context.run_context), the service's first, the client's on top.
        # `configurable.repo` picks the repository (a name, or "*"); an unknown one is a 404 listing them.
        sent = {**await sent_configurable(request), **(config.get("configurable") or {})}
        asked = {k: v for k, v in sent.items() if k in CLIENT_FIELDS and v is not None}
        base = service.context_for_repo(asked.get("repo"))
        try:
            run = base.override(**asked)
        except ValueError as exc:  # a field out of its setting's bounds
            raise ServiceError(400, f"Invalid configurable: {exc}", "invalid_configurable") from exc
        callbacks = [*(config.get("callbacks") or []), service.run_telemetry()]  # traced like /v1 runs
        return {**config, "configurable": run.as_configurable(), "callbacks": callbacks}

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
