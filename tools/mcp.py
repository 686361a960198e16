"""Other MCP servers' tools inside Cairn's agent: configured servers, their read-only tools as LangChain tools.

``CAIRN_MCP_SERVERS`` names each server (JSON; off when empty)::

    {"git": {"command": "mcp-server-git", "args": ["--repository", "/src/shop"]},
     "docs": {"url": "http://127.0.0.1:9000/mcp", "headers": {"Authorization": "Bearer ..."},
              "tools": ["search_docs"]}}

A server is a command (stdio: ``command``, ``args``, ``env``, ``cwd``) or a URL (streamable HTTP:
``url``, ``headers``). ``tools`` allow-lists a server's tools by name (default: all of them that are
read-only); a tool whose annotations do not say it is read-only (``readOnlyHint``) is left out unless
``allow_writes`` names it. One ``McpHub`` per configuration keeps a session to each server open in a
thread of its own (an event loop there), so every caller, in any thread or loop, calls through it; a
server that fails to start or dies is reported (``status``, ``/ready``'s ``checks.mcp``) and skipped,
never fatal, and is reconnected on its next use.

langchain-mcp-adapters 0.3.2 pins ``mcp<2``, so the bridge to LangChain tools is this module's own.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from langchain_core.tools import BaseTool, StructuredTool, ToolException
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cairn.errors import CairnError

log = logging.getLogger("cairn.tools.mcp")

#: How long connecting to a server (and listing its tools) may take, and one tool call.
CONNECT_SECONDS = 20.0
CALL_SECONDS = 30.0
#: A server that failed is not tried again for this long (every node of every run would wait on it).
RETRY_SECONDS = 30.0


class McpServerSpec(BaseModel):
    """One MCP server the agent may use: a command (stdio) or a URL (streamable HTTP), and which tools."""

    model_config = ConfigDict(extra="forbid")

    command: str | None = Field(default=None, description="The server's command, started over stdio.")
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] | None = None
    cwd: str | None = None
    url: str | None = Field(default=None, description="A streamable-HTTP endpoint, e.g. http://127.0.0.1:9000/mcp.")
    headers: dict[str, str] = Field(default_factory=dict)
    tools: list[str] | None = Field(default=None, description="Only these tools (default: every read-only one).")
    allow_writes: list[str] = Field(default_factory=list, description="Tools that may write, allowed by name.")

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerSpec:
        if (self.command is None) == (self.url is None):
            raise ValueError("give either command (stdio) or url (streamable HTTP)")
        return self


def parse_servers(raw: Mapping[str, Any] | str | None) -> dict[str, McpServerSpec]:
    """Return the configured servers by name from ``CAIRN_MCP_SERVERS`` (a JSON object), refusing a bad one."""
    if not raw:
        return {}
    try:
        data = json.loads(raw) if isinstance(raw, str) else dict(raw)
        return {str(name): McpServerSpec.model_validate(spec) for name, spec in data.items()}
    except (ValueError, TypeError) as exc:
        example = '{"git": {"command": "mcp-server-git", "args": ["--repository", "."]}}'
        raise CairnError(f"CAIRN_MCP_SERVERS is not a valid server list: {exc}", f"e.g. {example}") from exc


@dataclass
class RemoteTool:
    """A tool one server offers: its name, description, argument schema and whether it is read-only."""

    server: str
    name: str
    description: str
    input_schema: dict[str, Any]
    read_only: bool

    @property
    def qualified(self) -> str:
        """The name the agent knows it by: ``server__tool`` (tools of two servers may share a name)."""
        return f"{self.server}__{self.name}"


@dataclass
class ServerStatus:
    """Where one server stands: connected or not, its tools, the last error."""

    name: str
    connected: bool = False
    tools: list[RemoteTool] = field(default_factory=list)
    error: str | None = None
    since: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        """The status as ``/ready`` reports it."""
        return {"ok": self.connected, "tools": [t.name for t in self.tools], "error": self.error}


class McpHub:
    """Sessions to the configured MCP servers, kept open in a thread with its own event loop.

    Each server's session lives in a task of its own on that loop (``_hold``): entered there, held open
    until it is closed or dies, and exited there (anyio's cancel scopes must be left by the task that
    entered them). Calls from any thread are scheduled on the loop and use the open session.
    """

    def __init__(self, servers: Mapping[str, McpServerSpec]) -> None:
        self.servers = dict(servers)
        self.status = {name: ServerStatus(name) for name in self.servers}
        self._clients: dict[str, Any] = {}
        self._closing: dict[str, asyncio.Event] = {}
        self._held: dict[str, asyncio.Task[None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=loop.run_forever, name="cairn mcp client", daemon=True)
                self._thread.start()
                self._loop = loop
                atexit.register(self.close)
            return self._loop

    def _submit(self, coro: Any) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self._ensure_loop())

    # ------------------------------------------------------------ connecting

    def connect(self) -> dict[str, ServerStatus]:
        """Connect to every server not connected yet and list its tools; return where each stands."""
        now = time.time()
        with self._lock:
            pending = [
                name for name, status in self.status.items() if not status.connected and self._retry(status, now)
            ]
        futures = {name: self._submit(self._open(name)) for name in pending}
        for name, future in futures.items():
            try:
                future.result(CONNECT_SECONDS + 5)
            except Exception as exc:  # reported, skipped: a broken server must not stop the agent
                self._failed(name, exc)
        return self.status

    @staticmethod
    def _retry(status: ServerStatus, now: float) -> bool:
        """Whether to try a server again: never tried, or failed more than RETRY_SECONDS ago."""
        return status.error is None or now - status.since >= RETRY_SECONDS

    async def _open(self, name: str) -> None:
        """Start the task that holds ``name``'s session, and wait until it is open (or failed)."""
        if name in self._held and not self._held[name].done():
            return
        opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._closing[name] = asyncio.Event()
        self._held[name] = asyncio.create_task(self._hold(name, opened), name=f"mcp session {name}")
        await asyncio.wait_for(opened, CONNECT_SECONDS)

    async def _hold(self, name: str, opened: asyncio.Future[None]) -> None:
        from mcp import Client, StdioServerParameters
        from mcp.client.stdio import stdio_client
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client

        spec = self.servers[name]
        try:
            async with contextlib.AsyncExitStack() as stack:
                if spec.command is not None:
                    params = StdioServerParameters(command=spec.command, args=spec.args, env=spec.env, cwd=spec.cwd)
                    target: Any = stdio_client(params, errlog=_errlog())
                else:
                    http = await stack.enter_async_context(create_mcp_http_client(headers=spec.headers))
                    target = streamable_http_client(str(spec.url), http_client=http)
                client = await stack.enter_async_context(Client(target))
                listed = await client.list_tools()
                self._clients[name] = client
                self.status[name] = ServerStatus(name, connected=True, tools=self._allowed(name, listed.tools))
                log.info("MCP server %s: %d tool(s) allowed", name, len(self.status[name].tools))
                opened.set_result(None)
                await self._closing[name].wait()
        except BaseException as exc:  # it failed to start, or died (the session's task group ends the hold)
            if not opened.done():
                opened.set_exception(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
            elif not self._closing[name].is_set():
                self._failed(name, exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            self._clients.pop(name, None)

    def _allowed(self, name: str, tools: list[Any]) -> list[RemoteTool]:
        spec = self.servers[name]
        allowed = []
        for tool in tools:
            read_only = bool(tool.annotations and tool.annotations.read_only_hint)
            if spec.tools is not None and tool.name not in spec.tools:
                continue
            if not read_only and tool.name not in spec.allow_writes:
                continue
            allowed.append(RemoteTool(name, tool.name, tool.description or "", dict(tool.input_schema), read_only))
        return allowed

    def _failed(self, name: str, exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        log.warning("MCP server %s is unavailable (%s); its tools are skipped", name, message)
        self.status[name] = ServerStatus(name, connected=False, error=message)
        self._clients.pop(name, None)
        if (closing := self._closing.get(name)) is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(closing.set)

    # ------------------------------------------------------------ calling

    def tools(self) -> list[RemoteTool]:
        """Every allowed tool of every server that connects (connecting the ones not connected yet)."""
        self.connect()
        return [tool for status in self.status.values() for tool in status.tools]

    def call(self, server: str, tool: str, arguments: dict[str, Any], timeout: float = CALL_SECONDS) -> Any:
        """Call a tool (blocking); return its result (``is_error`` set on a tool error). Raise when unreachable."""
        if server not in self._clients:
            self.connect()
        client = self._clients.get(server)
        if client is None:
            raise CairnError(f"The MCP server {server!r} is unavailable: {self.status[server].error}",
                             "check CAIRN_MCP_SERVERS and the server itself")  # fmt: skip
        allowed = {t.name for t in self.status[server].tools}
        if tool not in allowed:
            raise CairnError(f"The MCP tool {server}.{tool} is not allowed",
                             f"allowed: {', '.join(sorted(allowed)) or 'none'}; see CAIRN_MCP_SERVERS")  # fmt: skip
        future = self._submit(asyncio.wait_for(client.call_tool(tool, arguments), timeout))
        try:
            return future.result(timeout + 5)
        except Exception as exc:  # the server died or hung: reported, and reconnected on the next use
            self._failed(server, exc)
            raise CairnError(f"The MCP server {server!r} failed calling {tool}: {type(exc).__name__}",
                             "see /ready's checks.mcp; it is reconnected on the next call") from exc  # fmt: skip

    async def acall(self, server: str, tool: str, arguments: dict[str, Any]) -> Any:
        """``call`` for a caller on an event loop (the call itself runs on the hub's loop)."""
        return await asyncio.to_thread(self.call, server, tool, arguments)

    def close(self) -> None:
        """Close every session (each in the task that opened it) and stop the loop."""
        loop = self._loop
        if loop is None:
            return

        async def close_all() -> None:
            for event in self._closing.values():
                event.set()
            held = [task for task in self._held.values() if not task.done()]
            if held:
                await asyncio.wait(held, timeout=10)

        try:
            asyncio.run_coroutine_threadsafe(close_all(), loop).result(15)
        except Exception as exc:  # a server that will not close: nothing to keep
            log.debug("closing MCP sessions: %s", exc)
        loop.call_soon_threadsafe(loop.stop)
        self._loop = None


def _errlog() -> Any:
    """Where a stdio server's own stderr goes: ours when it is a real file, else nowhere (it needs a file number)."""
    try:
        sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return open(os.devnull, "w")
    return sys.stderr


def result_text(result: Any) -> str:
    """The text blocks of a tool result, joined."""
    return "\n".join(getattr(block, "text", "") for block in result.content if getattr(block, "text", None))


def langchain_tool(hub: McpHub, remote: RemoteTool) -> BaseTool:
    """Return a remote MCP tool as a LangChain tool (its errors become ToolMessage errors, never exceptions)."""

    async def call(**arguments: Any) -> tuple[str, dict[str, Any]]:
        result = await hub.acall(remote.server, remote.name, arguments)
        if result.is_error:
            raise ToolException(result_text(result))
        return result_text(result), {"structured_content": result.structured_content, "server": remote.server}

    return StructuredTool(
        name=remote.qualified,
        description=f"[{remote.server}] {remote.description}",
        args_schema=remote.input_schema,
        coroutine=call,
        response_format="content_and_artifact",
        handle_tool_error=True,
        metadata={"mcp_server": remote.server, "read_only": remote.read_only},
    )


def agent_tools(servers: Mapping[str, Any]) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Return the agent's tools (Cairn's own, then each server's allowed ones) and where each server stands.

    Connects to the configured servers to list their tools; one that fails is in the second result.
    """
    from tools.registry import available_tools

    rows: list[dict[str, Any]] = [{"name": n, "source": "cairn", "read_only": True} for n in available_tools()]
    statuses: dict[str, dict[str, Any]] = {}
    hub = hub_for(parse_servers(servers))
    if hub is not None:
        for name, status in hub.connect().items():
            statuses[name] = status.as_dict()
            rows += [{"name": t.qualified, "source": f"mcp:{name}", "read_only": t.read_only,
                      "description": t.description} for t in status.tools]  # fmt: skip
    return rows, statuses


_hubs: dict[str, McpHub] = {}
_hubs_lock = threading.Lock()


def hub_for(servers: Mapping[str, McpServerSpec]) -> McpHub | None:
    """Return the process's hub for this configuration (one per distinct configuration), or None without servers."""
    if not servers:
        return None
    key = json.dumps({name: spec.model_dump() for name, spec in sorted(servers.items())}, sort_keys=True)
    with _hubs_lock:
        if key not in _hubs:
            _hubs[key] = McpHub(servers)
        return _hubs[key]
