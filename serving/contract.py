"""The service's OpenAPI document, made to say exactly what the service answers.

FastAPI documents a 422 for every validation error; Cairn answers them as OpenAI does, with a 400
and an OpenAI error body (``serving/errors.py``). Every operation may also be refused before it
runs, by the access middleware (401 without a valid key, 413 over the body limit, 429 over the rate
limit); those answers are documented on every operation here, once, rather than on each route.
Unknown query parameters are refused with a 400 (``known_query_only``): a misspelt ``limt=5``
is an error, not a silently ignored option.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from serving.errors import ServiceError, documented

_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
_STREAMS = ("/stream", "/stream_log", "/stream_events")
_ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR_REF}}}


def _reasons() -> dict[int | str, str]:
    return {status: entry["description"] for status, entry in documented(400, 401, 413, 429).items()}


def cairn_openapi(app: FastAPI) -> dict[str, Any]:
    """Return (and cache on the app) the OpenAPI document with Cairn's error answers on every operation."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes, tags=app.openapi_tags
    )
    reasons = _reasons()
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            if method not in _METHODS:
                continue
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            if path != "/health":  # it takes nothing that could be malformed
                responses.setdefault("400", _error(reasons[400]))
            if path not in {"/health", "/"} and not path.startswith("/static"):
                responses.setdefault("401", _error(reasons[401]))
                responses.setdefault("429", _error(reasons[429]))
            if "requestBody" in operation:
                responses.setdefault("413", _error(reasons[413]))
            if method == "post" and path.endswith(_STREAMS):  # LangServe's streams: server-sent events
                responses["200"]["content"] = {"text/event-stream": {}}
    components = schema.setdefault("components", {}).setdefault("schemas", {})  # ErrorResponse: routes document it
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    app.openapi_schema = schema
    return schema


#: id(route) -> the query parameters it declares (routes are not hashable; they live as long as the app).
_DECLARED: dict[int, frozenset[str]] = {}


def _query_names(route: APIRoute) -> frozenset[str]:
    """The query parameters a route declares (its dependencies' included), by their aliases."""
    if (declared := _DECLARED.get(id(route))) is not None:
        return declared
    names: set[str] = set()
    todo: list[Dependant] = [route.dependant]
    while todo:
        dependant = todo.pop()
        names.update(param.alias for param in dependant.query_params)
        todo.extend(dependant.dependencies)
    _DECLARED[id(route)] = frozenset(names)
    return _DECLARED[id(route)]


async def known_query_only(request: Request) -> None:
    """Refuse a request to a documented operation that carries a query parameter it does not declare."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not route.include_in_schema or not request.query_params:
        return
    unknown = sorted(set(request.query_params) - _query_names(route))
    if unknown:
        takes = ", ".join(sorted(_query_names(route))) or "none"
        raise ServiceError(
            400,
            f"Unknown query parameter{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"this operation takes: {takes}",
            "unknown_parameter",
        )
