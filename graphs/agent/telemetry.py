"""Traces and metrics of one agent run, from LangChain's callbacks: the graph, its nodes, model calls,
searches and tool calls.

Span names and attributes follow the OpenTelemetry GenAI semantic conventions
(``gen_ai.operation.name``, ``gen_ai.request.model``, ``gen_ai.usage.input_tokens`` …). Spans are
parented by LangChain's run tree (``parent_run_id``), not by whichever context happens to be current,
so async nodes and a stream consumed in another task keep their nesting. Model calls and searches are
also made the current span while they run, so the HTTP client span of the call to the model endpoint
(and its ``traceparent`` header) and the index's search spans nest under them. A streamed model span
ends when the stream ends; token usage is recorded when the endpoint reports it, left unset otherwise.
"""

from __future__ import annotations

import contextlib
import logging
import time
from contextvars import Token
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, StatusCode

from cairn.telemetry import ContentPolicy, tracer
from config import Node
from graphs.agent.graph import GRAPH_NAME

#: OpenInference's span kind, which trace viewers built on it (Arize Phoenix) show and filter by.
KIND = "openinference.span.kind"
NODES = {Node.PLAN, Node.RETRIEVE, Node.ANALYZE, Node.REFINE, Node.ANSWER}
#: Histogram buckets in seconds, from a cached search to a slow CPU model (vLLM's go to 80 s or more).
SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)
DOCUMENTS = (0, 1, 2, 4, 6, 8, 12, 16, 24, 32, 50)

log = logging.getLogger("cairn.agent")


class AgentMetrics:
    """The agent's Prometheus metrics (names follow vLLM's where they mean the same), in one registry."""

    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter, Histogram

        def histogram(name: str, doc: str, labels: tuple[str, ...] = (), buckets: tuple = SECONDS) -> Histogram:
            return Histogram(name, doc, labels, buckets=buckets, registry=registry)

        self.ttft = histogram(
            "cairn:time_to_first_token_seconds", "Time from the question to the answer's first token."
        )
        self.e2e = histogram("cairn:e2e_request_latency_seconds", "Time from the question to the whole answer.")
        self.node = histogram("cairn:node_duration_seconds", "Time each agent node takes.", ("node",))
        self.model = histogram(
            "cairn:model_request_duration_seconds", "Time of each model call, to its last token.", ("model", "node")
        )
        self.prompt_tokens = Counter("cairn:prompt_tokens", "Prompt tokens sent to models.", ("model",),
                                     registry=registry)  # fmt: skip
        self.generation_tokens = Counter("cairn:generation_tokens", "Tokens models generated.", ("model",),
                                         registry=registry)  # fmt: skip
        self.retrieval = histogram("cairn:retrieval_duration_seconds", "Time of each search.", ("retriever",))
        self.documents = histogram(
            "cairn:retrieval_documents", "Documents each search returned.", ("retriever",), DOCUMENTS
        )
        self.fallbacks = Counter("cairn:fallbacks", "Judgements that took their deterministic fallback.",
                                 ("node",), registry=registry)  # fmt: skip
        self.errors = Counter("cairn:errors", "Failures by where they happened and their type.",
                              ("node", "type"), registry=registry)  # fmt: skip
        self.empty_answers = Counter("cairn:empty_answers", "Answers the model gave no text for (the places listed).",
                                     registry=registry)  # fmt: skip


@dataclass
class _Run:
    span: Span | None
    parent: UUID | None
    started: float
    name: str
    node: str | None = None
    token: Token[otel_context.Context] | None = None  # the context token while this span is current
    first_token: float | None = None
    model: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class RunTelemetry(BaseCallbackHandler):
    """Turn one agent run's callbacks into spans (and metrics, when given); add it to the run's callbacks."""

    run_inline = True  # called in the task making the call, so a span it makes current is current there
    raise_error = False

    def __init__(
        self,
        *,
        content: ContentPolicy,
        metrics: AgentMetrics | None = None,
        conversation: str | None = None,
        user: str | None = None,
    ) -> None:
        self.content = content
        self.metrics = metrics
        self.conversation = conversation
        self.user = user
        self.runs: dict[UUID, _Run] = {}
        self.started = time.perf_counter()
        self.first_answer_token: float | None = None
        self.root_span: Span | None = None

    # ------------------------------------------------------------ spans

    def _nearest(self, parent: UUID | None, attribute: str) -> Any:
        """Return ``attribute`` of the closest run up the tree from ``parent`` that has it set, else None."""
        while parent is not None and (run := self.runs.get(parent)) is not None:
            if (value := getattr(run, attribute)) is not None:
                return value
            parent = run.parent
        return None

    def _parent_span(self, parent: UUID | None) -> Span | None:
        return self._nearest(parent, "span")

    def _node_of(self, parent: UUID | None) -> str | None:
        return self._nearest(parent, "node")

    def _start(
        self, run_id: UUID, parent: UUID | None, name: str, kind: SpanKind, attributes: dict[str, Any], *,
        current: bool = False,
    ) -> _Run:  # fmt: skip
        parent_span = self._parent_span(parent)
        ctx = trace.set_span_in_context(parent_span) if parent_span is not None else None
        span = tracer().start_span(name, context=ctx, kind=kind, attributes=_clean(attributes))
        run = _Run(span=span, parent=parent, started=time.perf_counter(), name=name)
        if current:
            run.token = otel_context.attach(trace.set_span_in_context(span))
        self.runs[run_id] = run
        return run

    def _end(self, run_id: UUID, error: BaseException | None = None) -> _Run | None:
        run = self.runs.get(run_id)
        if run is None:
            return None
        if run.token is not None:
            _detach(run.token)
            run.token = None
        if run.span is not None:
            if error is not None:
                run.span.record_exception(error)
                run.span.set_status(StatusCode.ERROR, f"{type(error).__name__}: {error}")
                run.span.set_attribute("error.type", type(error).__name__)
            run.span.end()
        return run

    # ------------------------------------------------------------ the graph and its nodes

    def on_chain_start(
        self, serialized: dict[str, Any] | None, inputs: dict[str, Any] | Any, *, run_id: UUID,
        parent_run_id: UUID | None = None, metadata: dict[str, Any] | None = None, name: str | None = None,
        **kwargs: Any,
    ) -> None:  # fmt: skip
        metadata = metadata or {}
        name = name or (serialized or {}).get("name") or ""
        if parent_run_id is None or (name == GRAPH_NAME and self._parent_span(parent_run_id) is None):
            attributes = {
                "gen_ai.operation.name": "invoke_agent",
                KIND: "AGENT",
                "gen_ai.agent.name": GRAPH_NAME,
                "gen_ai.conversation.id": self.conversation,
                "enduser.id": self.user,  # the request's `user`: who asked, never which conversation
            }
            if isinstance(inputs, dict) and (question := _last_user_text(inputs.get("messages") or [])):
                attributes["input.value"] = self.content.text(question, kind="query")  # shown by Phoenix
            run = self._start(run_id, parent_run_id, f"invoke_agent {GRAPH_NAME}", SpanKind.INTERNAL, attributes)
            self.root_span = run.span
            return
        if name in NODES and metadata.get("langgraph_node") == name:
            # current while the node runs (its start and end come in the node's own task), so spans
            # made below it without callbacks (the index's searches, query embedding) nest under it
            attributes = {"cairn.node": name, KIND: "CHAIN"}
            run = self._start(run_id, parent_run_id, f"node {name}", SpanKind.INTERNAL, attributes, current=True)
            run.node = name
            if name == Node.PLAN and isinstance(inputs, dict) and run.span is not None:
                question = _last_user_text(inputs.get("messages") or [])
                if question and (text := self.content.text(question, kind="query")):
                    run.span.set_attribute("cairn.question", text)
            return
        # LangGraph's own plumbing (channel writes, routers, sequences): no span, but keep the tree
        self.runs[run_id] = _Run(span=None, parent=parent_run_id, started=time.perf_counter(), name=name)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        run = self.runs.get(run_id)
        if run is None:
            return
        if run.node is not None and isinstance(outputs, dict):
            self._node_outputs(run, outputs)
        answer = outputs.get("answer") if isinstance(outputs, dict) else None
        text = self.content.text(str(answer), kind="message") if answer else None
        if text and run.span is not None and run.span is self.root_span:
            run.span.set_attribute("output.value", text)
        ended = self._end(run_id)
        if ended is None or ended.span is None:
            return
        elapsed = time.perf_counter() - ended.started
        if self.metrics is not None:
            if ended.node is not None:
                self.metrics.node.labels(ended.node).observe(elapsed)
            elif ended.span is self.root_span:
                self.metrics.e2e.observe(elapsed)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        run = self.runs.get(run_id)
        if run is not None and run.node is not None and self.metrics is not None:
            self.metrics.errors.labels(run.node, type(error).__name__).inc()
        self._end(run_id, error)

    def _node_outputs(self, run: _Run, outputs: dict[str, Any]) -> None:
        """Record what a node decided: queries, documents kept, relevance, fallbacks, citations."""
        span = run.span
        if span is None:
            return
        if queries := outputs.get("queries"):
            texts = [t for q in queries if (t := self.content.text(str(q), kind="query")) is not None]
            if texts:
                span.set_attribute("cairn.queries", texts)
        if "documents" in outputs and run.node == Node.RETRIEVE:
            documents = outputs["documents"]
            span.set_attribute("cairn.documents.kept", len(documents))
            span.set_attribute("cairn.documents.ids", [d.metadata.get("citation", "") for d in documents])
        if "relevant" in outputs and run.node == Node.ANALYZE:
            span.set_attribute("cairn.relevant", [int(i) + 1 for i in outputs["relevant"]])
            span.set_attribute("cairn.sufficient", bool(outputs.get("sufficient")))
        if outputs.get("planned_by"):
            span.set_attribute("cairn.planned_by", outputs["planned_by"])
        fallbacks = [f for f in outputs.get("fallbacks", []) if f == run.node]
        if fallbacks:
            span.set_attribute("cairn.fallback", True)
            log.warning("%s: the model's judgement did not fit its schema; took the deterministic fallback", run.node)
            if self.metrics is not None:
                self.metrics.fallbacks.labels(run.node).inc(len(fallbacks))
        if run.node == Node.ANSWER:
            if outputs.get("empty_answer") and self.metrics is not None:
                self.metrics.empty_answers.inc()
            span.set_attribute("cairn.citations", list(outputs.get("citations", [])))
            span.set_attribute("cairn.dropped_citations", list(outputs.get("dropped_citations", [])))
            if (answer := outputs.get("answer")) and (text := self.content.text(str(answer), kind="message")):
                span.set_attribute("cairn.answer", text)

    # ------------------------------------------------------------ model calls

    def on_chat_model_start(
        self, serialized: dict[str, Any] | None, messages: list[list[BaseMessage]], *, run_id: UUID,
        parent_run_id: UUID | None = None, metadata: dict[str, Any] | None = None,
        invocation_params: dict[str, Any] | None = None, **kwargs: Any,
    ) -> None:  # fmt: skip
        params = invocation_params or kwargs.get("invocation_params") or {}
        metadata = metadata or {}
        model = str(params.get("model") or params.get("model_name") or metadata.get("ls_model_name") or "unknown")
        provider = str(metadata.get("ls_provider") or params.get("_type") or "")
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            KIND: "LLM",
            "gen_ai.provider.name": provider or None,
            "gen_ai.request.model": model,
            "gen_ai.request.temperature": params.get("temperature"),
            "gen_ai.request.max_tokens": params.get("max_tokens") or (params.get("extra_body") or {}).get("max_tokens"),
            "gen_ai.conversation.id": self.conversation,
            "cairn.node": self._node_of(parent_run_id),
        }
        if self.content.messages and messages:
            attributes["gen_ai.input.messages"] = redacted_messages(messages[0], self.content)
        run = self._start(run_id, parent_run_id, f"chat {model}", SpanKind.CLIENT, attributes, current=True)
        run.model, run.node = model, None
        run.extra["node"] = attributes["cairn.node"]

    def on_llm_new_token(self, token: str | list[str | dict[str, Any]], *, run_id: UUID, **kwargs: Any) -> None:
        run = self.runs.get(run_id)
        if run is None or run.first_token is not None or not token:
            return
        run.first_token = time.perf_counter()
        if run.span is not None:
            run.span.set_attribute("gen_ai.response.time_to_first_chunk", run.first_token - run.started)
        if run.extra.get("node") == Node.ANSWER and self.first_answer_token is None:
            self.first_answer_token = run.first_token
            if self.metrics is not None:
                self.metrics.ttft.observe(self.first_answer_token - self.started)
            if self.root_span is not None:
                self.root_span.set_attribute("cairn.time_to_first_token", self.first_answer_token - self.started)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        run = self.runs.get(run_id)
        if run is not None and run.span is not None:
            usage, reasons, output = _response_facts(response)
            if usage.get("input_tokens") or usage.get("output_tokens"):
                run.span.set_attribute("gen_ai.usage.input_tokens", int(usage.get("input_tokens", 0)))
                run.span.set_attribute("gen_ai.usage.output_tokens", int(usage.get("output_tokens", 0)))
                run.span.set_attribute("llm.token_count.prompt", int(usage.get("input_tokens", 0)))  # OpenInference
                run.span.set_attribute("llm.token_count.completion", int(usage.get("output_tokens", 0)))
                if self.metrics is not None:
                    self.metrics.prompt_tokens.labels(run.model).inc(int(usage.get("input_tokens", 0)))
                    self.metrics.generation_tokens.labels(run.model).inc(int(usage.get("output_tokens", 0)))
            if reasons:
                run.span.set_attribute("gen_ai.response.finish_reasons", reasons)
            if output and (text := self.content.text(output, kind="message")):
                run.span.set_attribute("gen_ai.output.messages", [f"assistant: {text}"])
            if self.metrics is not None:
                node = run.extra.get("node") or "none"
                self.metrics.model.labels(run.model, node).observe(time.perf_counter() - run.started)
        self._end(run_id)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        run = self.runs.get(run_id)
        if run is not None and self.metrics is not None and isinstance(error, Exception):
            self.metrics.errors.labels(run.extra.get("node") or "none", type(error).__name__).inc()
        self._end(run_id, error)

    # ------------------------------------------------------------ searches and tools

    def on_retriever_start(
        self, serialized: dict[str, Any] | None, query: str, *, run_id: UUID, parent_run_id: UUID | None = None,
        name: str | None = None, **kwargs: Any,
    ) -> None:  # fmt: skip
        method = (name or "retriever").removesuffix("Retriever").lower() or "retriever"
        attributes = {"gen_ai.operation.name": "retrieval", KIND: "RETRIEVER", "cairn.retriever": method,
                      "cairn.query": self.content.text(query, kind="query")}  # fmt: skip
        run = self._start(run_id, parent_run_id, f"search {method}", SpanKind.INTERNAL, attributes, current=True)
        run.model = method

    def on_retriever_end(self, documents: Any, *, run_id: UUID, **kwargs: Any) -> None:
        run = self.runs.get(run_id)
        if run is not None and run.span is not None:
            documents = list(documents or [])
            run.span.set_attribute("cairn.documents.count", len(documents))
            run.span.set_attribute("cairn.documents.ids", [d.metadata.get("citation", "") for d in documents])
            run.span.set_attribute("cairn.documents.scores", [float(d.metadata.get("score") or 0) for d in documents])
            if self.metrics is not None:
                self.metrics.retrieval.labels(run.model).observe(time.perf_counter() - run.started)
                self.metrics.documents.labels(run.model).observe(len(documents))
        self._end(run_id)

    def on_retriever_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, error)

    def on_tool_start(
        self, serialized: dict[str, Any] | None, input_str: str, *, run_id: UUID, parent_run_id: UUID | None = None,
        inputs: dict[str, Any] | None = None, name: str | None = None, **kwargs: Any,
    ) -> None:  # fmt: skip
        tool = name or (serialized or {}).get("name") or "tool"
        attributes = {"gen_ai.operation.name": "execute_tool", KIND: "TOOL", "gen_ai.tool.name": tool,
                      "gen_ai.tool.call.id": kwargs.get("tool_call_id")}  # fmt: skip
        if self.content.queries and input_str:
            attributes["gen_ai.tool.call.arguments"] = self.content.text(input_str, kind="query")
        self._start(run_id, parent_run_id, f"execute_tool {tool}", SpanKind.INTERNAL, attributes, current=True)

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        run = self.runs.get(run_id)
        if run is not None and run.span is not None and getattr(output, "status", None) == "error":
            run.span.set_status(StatusCode.ERROR, str(getattr(output, "content", ""))[:200])
            run.span.set_attribute("error.type", "tool_error")
        self._end(run_id)

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id, error)


def _detach(token: Token[otel_context.Context]) -> None:
    """Restore the context from before a span was made current, when this is the context it was made in.

    A chat model's end callback runs in a task of its own (langchain-core gathers them), where the
    context it began in cannot be reset: the call's span then stays current for the rest of the node's
    task, which only spans made there without callbacks would see. ``opentelemetry.context.detach``
    would log that as an error each time, hence the runtime context directly.
    """
    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    with contextlib.suppress(ValueError, RuntimeError):
        if runtime is not None:
            runtime.detach(token)
        else:  # pragma: no cover - another OpenTelemetry runtime
            otel_context.detach(token)


def _clean(attributes: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attributes.items() if v is not None and v != ""}


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if getattr(message, "type", None) == "human":
            return str(message.content)
    return ""


def redacted_messages(messages: list[BaseMessage], content: ContentPolicy) -> list[str]:
    """Return a prompt's messages as ``role: text`` strings, redacted (recorded only with ``full``)."""
    return [f"{m.type}: {content.text(str(m.content), kind='message') or ''}" for m in messages]


def _response_facts(response: LLMResult) -> tuple[dict[str, Any], list[str], str]:
    """Return (token usage, finish reasons, output text) of a model response, whatever the provider."""
    usage: dict[str, Any] = {}
    reasons: list[str] = []
    texts: list[str] = []
    for generations in response.generations:
        for generation in generations:
            texts.append(generation.text)
            message = generation.message if isinstance(generation, ChatGeneration) else None
            if message is not None:
                for key, value in (getattr(message, "usage_metadata", None) or {}).items():
                    if key in ("input_tokens", "output_tokens") and value:
                        usage[key] = usage.get(key, 0) + int(value)
                metadata = message.response_metadata or {}
                if reason := metadata.get("finish_reason") or metadata.get("done_reason"):
                    reasons.append(str(reason))
            if info := (generation.generation_info or {}).get("finish_reason"):
                reasons.append(str(info))
    if not usage and response.llm_output:  # some providers report usage on the result, not the message
        token_usage = response.llm_output.get("token_usage") or {}
        if token_usage.get("prompt_tokens") or token_usage.get("completion_tokens"):
            usage = {"input_tokens": token_usage.get("prompt_tokens", 0),
                     "output_tokens": token_usage.get("completion_tokens", 0)}  # fmt: skip
    return usage, list(dict.fromkeys(reasons)), "".join(texts)
