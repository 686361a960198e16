"""The OpenAI-compatible API: the model list, chat completions and embeddings."""

from __future__ import annotations

import asyncio
import base64

from fastapi import APIRouter, Request
from fastapi.responses import Response
from openai.types import Model
from openai.types.chat import ChatCompletion

from ingest.embedding_endpoints import identity
from retrievers import cached_embedder
from serving.chat import chat
from serving.errors import ServiceError, documented
from serving.openai_compat import (
    EMBEDDING_MODEL_ID,
    MAX_EMBEDDING_CHARS,
    MAX_EMBEDDING_INPUTS,
    PASSTHROUGH_MODEL_ID,
    ChatCompletionRequest,
    EmbeddingData,
    EmbeddingList,
    EmbeddingRequest,
    EmbeddingUsage,
    ModelList,
    model_card,
    tools_note,
)
from serving.passthrough import passthrough
from serving.responses_api import ResponsesRequest, responses
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
    """One model by id (404 listing the ids there are); `cairn-embedding` is the embeddings route's."""
    if model_id != EMBEDDING_MODEL_ID:
        service.context_for_model(model_id)
    return model_card(model_id)


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses={200: STREAM_DOC, **documented(400, 401, 404, 413, 429, 503, 504)},
)
async def chat_completions(body: ChatCompletionRequest, request: Request, service: ServiceDep) -> Response:
    """OpenAI-compatible chat completions, streaming or not; answers cite path:start-end.

    A conversation is kept server-side when the request names a session (``X-Session-Id`` header);
    then only the new user turn is taken from ``messages``. Without one the resent history is the
    conversation; ``user`` never selects a session (it is recorded as the trace's ``enduser.id``). The model picks
    the repository: ``cairn-agent`` the default one, ``cairn/<name>`` that one, ``cairn/*`` all of them;
    a session keeps to the repository of its first turn (400 for another). The response carries an
    extra ``cairn`` field: the checked citations, the sources, what the agent searched.
    """
    request.state.cairn_model = body.model  # for the request's log line
    note = tools_note(body)  # 400 when tool_choice demands a call of the client's tools
    if body.model == PASSTHROUGH_MODEL_ID:  # a client's chores: the chat model alone, no agent, no session
        return await passthrough(service, body, request, note)
    return await chat(service, body, request, note)


@router.post("/embeddings", response_model=EmbeddingList, responses=documented(400, 401, 404, 413, 503))
async def embeddings(body: EmbeddingRequest, service: ServiceDep) -> EmbeddingList:
    """Embed texts with the model Cairn searches with (``cairn-embedding``, or the model's own name).

    For clients that need embeddings (Open WebUI's RAG, Continue's indexing, ``llm embed``): the same
    vectors Cairn's index holds (L2-normalised; the document form, with an endpoint family's document
    prefix). ``usage.prompt_tokens`` counts the word-pieces the model read (its tokenizer, at
    CAIRN_EMBEDDING_MAX_TOKENS each) when the model is local, the words when it is an endpoint.
    """
    settings = service.settings
    accepted = {EMBEDDING_MODEL_ID, settings.embedding_model, identity(settings.embedding_model)}
    if body.model not in accepted:
        message = f"Model {body.model!r} does not embed here; use {EMBEDDING_MODEL_ID!r}"
        raise ServiceError(404, message, "model_not_found")
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts or len(texts) > MAX_EMBEDDING_INPUTS:
        raise ServiceError(400, f"input: give 1 to {MAX_EMBEDDING_INPUTS} texts, not {len(texts)}", "invalid_input")
    longest = next((i for i, text in enumerate(texts) if len(text) > MAX_EMBEDDING_CHARS), None)
    if longest is not None:
        raise ServiceError(413, f"input[{longest}] is over {MAX_EMBEDDING_CHARS:,} characters", "input_too_long")
    embedder = await asyncio.to_thread(cached_embedder, settings)
    if body.dimensions is not None and body.dimensions != embedder.dimension:
        raise ServiceError(400, f"dimensions: this model makes {embedder.dimension}-dimensional vectors only",
                           "invalid_dimensions")  # fmt: skip
    vectors = await asyncio.to_thread(embedder.embed_documents, texts, batch_size=min(len(texts), 32))
    tokens = await asyncio.to_thread(_count_tokens, embedder, texts, settings.embedding_max_tokens)
    data = [
        EmbeddingData(
            index=i,
            # base64: the little-endian float32 bytes, as OpenAI sends them (the official client's default)
            embedding=base64.b64encode(vector.astype("<f4").tobytes()).decode()
            if body.encoding_format == "base64"
            else vector.tolist(),
        )
        for i, vector in enumerate(vectors)
    ]
    usage = EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens)
    return EmbeddingList(model=body.model, data=data, usage=usage)


def _count_tokens(embedder: object, texts: list[str], max_tokens: int) -> int:
    tokenizer = getattr(getattr(embedder, "_model", None), "tokenizer", None)
    if tokenizer is None:
        return sum(len(text.split()) for text in texts)
    return sum(min(len(ids), max_tokens) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"])


@router.post(
    "/responses",
    responses={200: {"description": "A response; with `stream: true`, the Responses API's server-sent events.",
                     "content": {"text/event-stream": {}}}, **documented(400, 401, 404, 413, 429, 503, 504)},
)  # fmt: skip
async def create_response(body: ResponsesRequest, request: Request, service: ServiceDep) -> Response:
    """OpenAI's Responses API over the agent: one turn, whole or streamed; `previous_response_id` continues it.

    Each response is kept as a turn of its own session (under the caller's key), named by its id, so a
    chain of `previous_response_id`s is one conversation and two chains never meet (`store: false` on a
    new conversation keeps nothing). The models are the chat ones (`cairn-agent`, `cairn/<name>`, `cairn/*`).
    """
    request.state.cairn_model = body.model
    if body.model == PASSTHROUGH_MODEL_ID:
        raise ServiceError(400, "cairn-chat answers chat completions only; use cairn-agent here", "model_not_supported")
    tools_note(body)  # 400 when tool_choice demands a call of the client's tools
    return await responses(service, body, request)
