"""The agent graph as LangServe routes at /agent: invoke, batch, stream, stream_events, playground."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI, Request
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, SystemMessage
from pydantic import BaseModel, Field, ValidationError, field_validator

from serving.errors import ServiceError, describe_errors
from serving.security import RateLimit, client_of
from serving.service import Service

#: The context fields a LangServe client may set for its run. Never folders or endpoints: a client
#: must not make the service read another index or send code to a model it was not configured with.
CLIENT_FIELDS = frozenset({"repo", "retriever", "k", "max_rounds", "plan", "temperature", "max_tokens", "stop"})


#: The messages the agent reads (their chunk classes are subclasses, and become these).
_KINDS = (HumanMessage, AIMessage, SystemMessage)


class AgentInput(BaseModel):
    """What a LangServe client sends: the conversation, ending with the user's question.

    The graph's own input state (``graphs.agent.state.InputState``) takes any messages; over HTTP a
    run without a question is refused with a 400 before it starts, not failed half-way through a
    stream.
    """

    messages: list[AnyMessage] = Field(min_length=1, description="The conversation; the last is the question.")

    @field_validator("messages")
    @classmethod
    def _ends_with_question(cls, value: list[AnyMessage]) -> list[AnyMessage]:
        last = value[-1]
        if not isinstance(last, HumanMessage) or not str(last.text).strip():
            raise ValueError("the last message must be a non-empty human message (the question)")
        # The agent reads who said what and the text; whatever else a client attached (metadata,
        # non-text parts, tool messages) is dropped, as the OpenAI route drops it, rather than echoed.
        return [kind(content=str(m.text)) for m in value for kind in _KINDS if isinstance(m, kind)]


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


async def checked_body(request: Request) -> None:
    """Refuse, with a 400, a run request whose body LangServe would fail on with a 500.

    LangServe validates ``input`` against the input schema but takes ``config`` and ``kwargs`` on
    trust: ``"config": null`` or a list of configs of another length than the inputs broke it.
    """
    if request.method != "POST":
        return
    try:
        body = await request.json()  # cached on the request: LangServe reads the same body
    except ValueError as exc:
        raise ServiceError(400, f"The request body is not JSON: {exc}", "invalid_json") from exc
    if not isinstance(body, dict):
        raise ServiceError(400, "The request body must be a JSON object", "invalid_request")
    batch = request.url.path.endswith("/batch")
    config = body.get("config", {})
    inputs: list[Any] = []
    if batch:  # LangServe validates a batch's inputs outside its error handling: a bad one was a 500
        if not isinstance(given := body.get("inputs"), list):
            raise ServiceError(400, "`inputs` must be a list of inputs", "invalid_request")
        inputs = given
        limit = request.app.state.cairn.settings.max_batch_inputs
        if len(inputs) > limit:
            raise ServiceError(400, f"A batch of {len(inputs)} inputs is over the limit of {limit} "
                               "(CAIRN_MAX_BATCH_INPUTS): send several batches", "batch_too_large")  # fmt: skip
        for number, one in enumerate(inputs):
            _check_input(one, f"inputs[{number}]: ")
        # each input is a run: the request counted as one, the others count now
        rate: RateLimit | None = request.app.state.cairn_rate
        if (
            rate is not None
            and len(inputs) > 1
            and (wait := await rate.take(client_of(request.scope), len(inputs) - 1))
        ):
            raise rate.refusal(wait)
    elif "input" in body:
        _check_input(body["input"], "")
    if batch and isinstance(config, list):
        if len(config) != len(inputs):
            raise ServiceError(400, f"{len(config)} configs for {len(inputs)} inputs: send one config, or one per "
                               "input", "invalid_config")  # fmt: skip
        if not all(isinstance(one, dict) for one in config):
            raise ServiceError(400, "Every config must be a JSON object", "invalid_config")
    elif not isinstance(config, dict):
        raise ServiceError(400, "`config` must be a JSON object", "invalid_config")
    if not isinstance(body.get("kwargs", {}), dict):
        raise ServiceError(400, "`kwargs` must be a JSON object", "invalid_request")


def _check_input(value: Any, where: str) -> None:
    """Validate one run input as LangServe will, turning every failure into a 400.

    Building LangChain messages can fail with a TypeError rather than a ValidationError (an AI
    message chunk whose ``tool_call_chunks`` carry unknown keys did: a 500 found by Schemathesis).
    """
    try:
        AgentInput.model_validate(value)
    except ValidationError as exc:
        raise ServiceError(400, f"Invalid request: {where}{describe_errors(exc.errors())}", "invalid_request") from exc
    except (TypeError, ValueError, KeyError) as exc:
        raise ServiceError(400, f"Invalid request: {where}input: {exc}", "invalid_request") from exc


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
        service.graph.with_types(input_type=AgentInput),
        path="/agent",
        per_req_config_modifier=with_service_context,
        dependencies=[Depends(checked_body)],
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
