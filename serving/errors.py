"""HTTP errors in OpenAI's error body, and the one mapping from what went wrong to a status code."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import redis.exceptions
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from openai.types.shared import ErrorObject
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from cairn.errors import CairnError, ModelUnreachable
from cairn.telemetry import trace_id_of
from models.errors import translate_model_error

log = logging.getLogger("cairn.serving")

#: What a lost or refused Redis connection raises (redis-py's own errors, or the socket's), and what a
#: cluster raises while a slot has no master (a master down without a replica, or a failover too slow).
REDIS_ERRORS = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.SlotNotCoveredError,
)


class ErrorResponse(BaseModel):
    """An error as the OpenAI API reports one: ``{"error": {"message", "type", "param", "code"}}``."""

    error: ErrorObject


class ServiceError(Exception):
    """An error with an HTTP status and an OpenAI-style body."""

    def __init__(
        self, status: int, message: str, code: str, kind: str = "invalid_request_error", headers: dict | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.kind = status, message, code, kind
        self.headers = headers or {}


def error_body(message: str, code: str, kind: str = "invalid_request_error") -> dict:
    """Return the JSON body of an error, with the request's trace id (``error.trace_id``) when it has one."""
    body = ErrorResponse(error=ErrorObject(message=message, type=kind, param=None, code=code)).model_dump()
    if trace_id := trace_id_of():
        body["error"]["trace_id"] = trace_id
    return body


def error_response(
    status: int, message: str, code: str, kind: str = "invalid_request_error", headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """Return an error as a JSON response in OpenAI's shape."""
    return JSONResponse(error_body(message, code, kind), status_code=status, headers=headers)


def redis_down(redis_url: str, exc: BaseException) -> ServiceError:
    """Return the 503 for a session request while Redis is unavailable."""
    return ServiceError(
        503,
        f"The session store (Redis at {redis_url}) is unavailable: {exc}. "
        "Start Redis (make run starts one), or send the request without a session to use it statelessly.",
        "session_store_unavailable",
        "server_error",
    )


def translate(exc: BaseException, *, model: str, timeout: float, redis_url: str, retries: int = 0) -> ServiceError:
    """Return the HTTP error for an exception raised while answering (model, Redis, Cairn, anything else)."""
    if isinstance(exc, ServiceError):
        return exc
    model_error = translate_model_error(exc, model=model, timeout=timeout, retries=retries)
    if model_error is not None:
        return ServiceError(
            model_error.http_status,
            f"{model_error.message} ({model_error.hint})",
            "model_timeout" if model_error.timed_out else "model_unavailable",
            "server_error",
        )
    if isinstance(exc, REDIS_ERRORS):
        return redis_down(redis_url, exc)
    if isinstance(exc, CairnError):
        kind = "invalid_request_error" if exc.http_status < 500 else "server_error"
        return ServiceError(exc.http_status, str(exc), type(exc).__name__, kind)
    log.exception("request failed", exc_info=exc)
    # the details are in the log (under the trace id the body carries), not in the client's reply
    return ServiceError(500, f"Internal error ({type(exc).__name__}); the service log has the details",
                        "internal_error", "server_error")  # fmt: skip


def describe_errors(errors: Sequence[Any]) -> str:
    """Return validation errors (pydantic's or FastAPI's) as one line: ``where: what; where: what``."""
    problems = []
    for error in errors:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        problems.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
    return "; ".join(problems)


def add_error_handlers(app: FastAPI) -> None:
    """Answer every error in OpenAI's body shape: ours, validation errors, HTTP errors, model errors."""

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.code, exc.kind, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, "Invalid request: " + describe_errors(exc.errors()), "invalid_request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # a 422 raised by a library route (LangServe's checks) is a malformed request, which this API answers 400
        status = 400 if exc.status_code == 422 else exc.status_code
        return error_response(status, str(exc.detail), f"http_{status}", headers=exc.headers)

    @app.exception_handler(ModelUnreachable)
    async def _model(request: Request, exc: ModelUnreachable) -> JSONResponse:
        return error_response(exc.http_status, f"{exc.message} ({exc.hint})", "model_unavailable", "server_error")

    @app.exception_handler(CairnError)
    async def _cairn(request: Request, exc: CairnError) -> JSONResponse:
        # any other error Cairn names for a user (an invalid pattern, an unknown repository): its own status
        kind = "invalid_request_error" if exc.http_status < 500 else "server_error"
        return error_response(exc.http_status, str(exc), type(exc).__name__, kind)


def documented(*statuses: int) -> dict[int | str, dict]:
    """Return ``responses`` entries for the given error statuses, each with the error body's schema."""
    reasons = {
        400: "The request is malformed (invalid JSON, a field out of range, an unknown parameter value).",
        401: "A key is required (CAIRN_API_KEYS is set) and was missing or wrong.",
        404: "No such model, session, file or repository.",
        409: "The request asks for something this service is not set up for (rerank without CAIRN_RERANK_MODEL).",
        413: "The request body is over CAIRN_MAX_BODY_BYTES.",
        429: "Over CAIRN_RATE_LIMIT requests per minute; retry after the Retry-After header's seconds.",
        503: "A part the request needs is unavailable (index, model endpoint, Redis); the message says which.",
        504: "The model endpoint did not answer within CAIRN_MODEL_TIMEOUT.",
    }
    return {status: {"model": ErrorResponse, "description": reasons[status]} for status in statuses}
