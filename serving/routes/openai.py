"""The OpenAI-compatible API: the model list and chat completions."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from openai.types import Model
from openai.types.chat import ChatCompletion

from serving.chat import chat
from serving.errors import documented
from serving.openai_compat import ChatCompletionRequest, ModelList, model_card
from serving.service import ServiceDep

router = APIRouter(prefix="/v1", tags=["openai"])

STREAM_DOC = {
    "description": "With `stream: true`: server-sent events, one `chat.completion.chunk` per `data:` line, "
    "ending with `data: [DONE]`.",
    "content": {"text/event-stream": {}},
}


@router.get("/models", response_model=ModelList, responses=documented(401))
async def list_models(service: ServiceDep) -> ModelList:
    """The agent as models: `cairn-agent` (the default repository), `cairn/<name>` per repository, `cairn/*`."""
    return ModelList(data=[model_card(model_id) for model_id in service.model_ids()])


@router.get("/models/{model_id:path}", response_model=Model, responses=documented(401, 404))
async def get_model(model_id: str, service: ServiceDep) -> Model:
    """One model by id (404 listing the ids there are)."""
    service.context_for_model(model_id)
    return model_card(model_id)


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses={200: STREAM_DOC, **documented(400, 401, 404, 413, 429, 503, 504)},
)
async def chat_completions(body: ChatCompletionRequest, request: Request, service: ServiceDep) -> Response:
    """OpenAI-compatible chat completions, streaming or not; answers cite path:start-end.

    A conversation is kept server-side when the request names a session (``X-Session-Id`` header,
    or the ``user`` field); then only the new user turn is taken from ``messages``. The model picks
    the repository: ``cairn-agent`` the default one, ``cairn/<name>`` that one, ``cairn/*`` all of them;
    a session keeps to the repository of its first turn (400 for another). The response carries an
    extra ``cairn`` field: the checked citations, the sources, what the agent searched.
    """
    return await chat(service, body, request)
