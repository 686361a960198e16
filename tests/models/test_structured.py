"""Structured judgements: each provider's request shape, auto's fallback order, the tolerant parse."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai
import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_ollama import ChatOllama
from langchain_openai import ChatOpenAI
from pydantic import Field

from config import Settings
from graphs.agent.judgements import AnalyzeJudgement, PlanJudgement
from models import ModelConfig, build_judge
from models.structured import StructuredJudge, parse_reply, request_for

MESSAGES = [HumanMessage("Where is the cache evicted?")]


def test_each_mechanism_asks_in_its_servers_own_form() -> None:
    openai_model = ChatOpenAI(model="m", base_url="http://127.0.0.1:9/v1", api_key="k")
    payload = openai_model._get_request_payload(MESSAGES, **request_for("json_schema", PlanJudgement))
    assert payload["response_format"]["type"] == "json_schema"  # OpenAI's form: vLLM, llama-server, LM Studio
    assert payload["response_format"]["json_schema"]["schema"] == PlanJudgement.model_json_schema()

    payload = openai_model._get_request_payload(MESSAGES, **request_for("json_object_schema", PlanJudgement))
    assert payload["response_format"] == {"type": "json_object", "schema": PlanJudgement.model_json_schema()}

    ollama = ChatOllama(model="qwen3")
    params = ollama._chat_params(MESSAGES, **request_for("ollama_format", AnalyzeJudgement))
    assert params["format"] == AnalyzeJudgement.model_json_schema()  # Ollama's native `format`

    assert request_for("none", PlanJudgement) == {}
    with pytest.raises(ValueError, match="auto, json_schema"):
        request_for("grammar", PlanJudgement)


def test_the_factory_picks_each_providers_mechanism() -> None:
    def judge(spec: str, **settings: Any) -> StructuredJudge:
        return build_judge(ModelConfig.from_settings(Settings(_env_file=None, **settings), spec), PlanJudgement)

    assert judge("embedded").mechanism == "json_object_schema"  # llama-cpp-python's server
    assert judge("ollama/qwen3").mechanism == "ollama_format"
    assert judge("openai-compatible/m@http://127.0.0.1:9/v1").mechanism == "auto"
    forced = judge("openai-compatible/m@http://127.0.0.1:9/v1", model_structured_output="json_schema")
    assert forced.mechanism == "json_schema"
    assert judge("instant").mechanism == "none"


class PickyServer(BaseChatModel):
    """A server that refuses OpenAI's json_schema form (400) and constrains json_object replies."""

    seen: list[Any] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "picky"

    def _generate(self, messages, stop=None, run_manager=None, response_format=None, **kwargs) -> ChatResult:
        self.seen.append(response_format)
        if response_format and response_format["type"] == "json_schema":
            request = httpx.Request("POST", "http://picky/v1/chat/completions")
            raise openai.BadRequestError(
                "unknown response_format type", response=httpx.Response(400, request=request), body=None
            )
        reply = '{"question": "Where is the cache evicted?", "queries": ["evict"]}'
        return ChatResult(generations=[ChatGeneration(message=AIMessage(reply))])


def test_auto_moves_on_only_when_refused_and_remembers_what_worked() -> None:
    server = PickyServer(seen=[])
    judge = StructuredJudge(server, PlanJudgement, "auto", endpoint="http://picky/v1")
    first = judge.invoke(MESSAGES)
    assert first.parsed is not None and first.parsed.queries == ["evict"]
    assert first.mechanism == "json_object_schema"
    assert [f and f["type"] for f in server.seen] == ["json_schema", "json_object"]
    second = StructuredJudge(server, PlanJudgement, "auto", endpoint="http://picky/v1").invoke(MESSAGES)
    assert second.mechanism == "json_object_schema" and len(server.seen) == 3  # no second refusal


def test_other_failures_are_not_taken_for_a_refusal() -> None:
    class Down(PickyServer):
        def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
            raise ConnectionError("connection refused")

    with pytest.raises(ConnectionError):
        StructuredJudge(Down(seen=[]), PlanJudgement, "auto", endpoint="http://down/v1").invoke(MESSAGES)


def test_replies_parse_tolerantly_and_thinking_is_kept_apart() -> None:
    reply = '<think>The user wants evict.</think>\n```json\n{"relevant": [2], "sufficient": true}```'
    thinking_inline = AIMessage(reply)
    judged = parse_reply(thinking_inline, AnalyzeJudgement, "none")
    assert judged.parsed == AnalyzeJudgement(relevant=[2], sufficient=True)
    assert judged.thinking == "The user wants evict." and judged.error is None

    apart = AIMessage('{"relevant": [1], "sufficient": false, "missing": "the caller"}',
                      additional_kwargs={"reasoning_content": "Excerpt 1 defines it."})  # fmt: skip
    judged = parse_reply(apart, AnalyzeJudgement, "json_schema")
    assert judged.parsed is not None and judged.parsed.missing == "the caller"
    assert judged.thinking == "Excerpt 1 defines it."

    rambling = parse_reply(AIMessage("I think excerpt one looks good"), AnalyzeJudgement, "none")
    assert rambling.parsed is None and "no JSON object" in rambling.error
    too_many = parse_reply(AIMessage('{"question": "q", "queries": ["a", "b", "c", "d"]}'), PlanJudgement, "none")
    assert too_many.parsed is None and "ValidationError" in too_many.error  # the schema's bounds hold


@pytest.mark.integration
def test_the_real_llama_cpp_server_constrains_judgements(llama) -> None:
    """The embedded model through its own mechanism; auto against the same server finds that mechanism."""
    config = ModelConfig.from_settings(llama.settings, "embedded", max_tokens=120).with_spec("embedded")
    judged = build_judge(config, AnalyzeJudgement).invoke(
        [HumanMessage("Excerpts: (1) def evict(): ... (2) def put(): ...\nWhich help with eviction? Reply JSON.")]
    )
    assert judged.mechanism == "json_object_schema" and judged.parsed is not None, judged.error

    spec = f"openai-compatible/smollm2-135m@{llama.base_url}"
    auto = build_judge(ModelConfig.from_settings(llama.settings, spec, max_tokens=120).with_spec(spec), PlanJudgement)
    judged = auto.invoke([HumanMessage("Rewrite as JSON with a question and search queries: how are entries evicted?")])
    # llama-cpp-python answers OpenAI's json_schema form with a 500 naming response_format; auto moves on
    assert judged.mechanism == "json_object_schema" and judged.parsed is not None, judged.error


def test_a_reply_cut_at_its_token_limit_is_a_failed_judgement_not_an_error() -> None:
    """openai raises LengthFinishReasonError for a structured reply cut at max_tokens (a 500 at turn 6 of 30)."""
    from openai.types.chat import ChatCompletion

    cut = ChatCompletion.model_validate({
        "id": "c", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "finish_reason": "length",
                     "message": {"role": "assistant", "content": '{"question": "Where is the cache ev'}}],
    })  # fmt: skip

    class Cut(PickyServer):
        def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
            raise openai.LengthFinishReasonError(completion=cut)

    judge = StructuredJudge(Cut(seen=[]), PlanJudgement, "json_schema", endpoint="http://cut/v1")
    for judgement in (judge.invoke(MESSAGES), asyncio.run(judge.ainvoke(MESSAGES))):
        assert judgement.parsed is None and "token limit" in (judgement.error or "")
        assert judgement.raw.content.startswith('{"question"')
