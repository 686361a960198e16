"""Response models of the service's own routes (health, readiness, sessions), so /docs shows each one."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Health(BaseModel):
    """The process is alive."""

    status: Literal["ok"] = "ok"
    version: str


class Check(BaseModel):
    """One readiness check: ``ok``, and what it found (or the error and a hint)."""

    model_config = ConfigDict(extra="allow")

    ok: bool
    error: str | None = None
    hint: str | None = None


class Replica(BaseModel):
    """Which process answered: behind a load balancer, /ready is asked of each replica and worker."""

    host: str = Field(description="The machine's host name.")
    pid: int = Field(description="The worker process.")
    workers: int = Field(description="Worker processes of this replica (CAIRN_WORKERS).")
    started_at: float = Field(description="When this worker started (Unix time).")
    version: str


class Readiness(BaseModel):
    """Whether the service can answer: the index, the model endpoint and Redis, each checked."""

    ready: bool
    replica: Replica | None = None
    checks: dict[str, Check] = Field(
        description="index (with `repos`: each repository's state, a missing source folder included), model and redis"
    )


class SessionSummary(BaseModel):
    """A session in the list: its id and when its last turn was written (Unix seconds)."""

    id: str
    updated_at: float


class SessionList(BaseModel):
    """Sessions, most recently used first."""

    sessions: list[SessionSummary]


class SessionMessage(BaseModel):
    """One message of a session."""

    role: Literal["user", "assistant"]
    content: str


class SessionTelemetry(BaseModel):
    """What a session has used: messages, turns, tokens, and its context size against the window."""

    message_count: int
    turns: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    context_tokens: int = Field(description="Estimated tokens of the conversation as the next turn would see it.")
    context_window: int = Field(description="The model's context window (CAIRN_MODEL_CONTEXT_TOKENS).")


class SessionDetail(BaseModel):
    """A session's messages and telemetry."""

    id: str
    repo: str | None = Field(
        default=None,
        description="What the session is about: a repository's name, * for all of them, or the index folder.",
    )
    messages: list[SessionMessage]
    telemetry: SessionTelemetry
