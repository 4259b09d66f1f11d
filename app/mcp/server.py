"""Every agent as an MCP tool: the gateway's ``/mcp`` endpoint (SPEC §18, streamable HTTP).

``AgentsMcpServer`` is the SDK's low-level ``Server`` behind its ``StreamableHTTPSessionManager``:

* ``tools/list`` → one tool ``ask_<agentKey>`` per agent of the current catalog, arguments
  ``{message, chatId?}``;
* ``tools/call`` → a run through the run service (``runs.start`` + ``runs.query_stream``, the same
  path as ``POST /api/ap/query``): every ``content.delta`` is sent as a progress notification
  (``progress`` = characters so far, ``message`` = the delta) while the run streams; the result is
  the final answer text with ``{chatId, runId}`` as ``structuredContent``. A run that fails or is
  cancelled is an ``isError`` result (with the ids); a refused start (unknown chat, another user's
  chat, a limit) is an ``isError`` result with the reason. ``chatId`` continues a chat.

The caller is the user the auth middleware put on the request (``/mcp`` is protected like
``/api/**``). The session manager runs **stateless**: every POST is self-contained, so any
instance of a cluster answers any request (SPEC §16) and a client that goes away cancels its run
(the query stream's ``cancel`` default). The manager's task group lives in one task started by
``start()`` and ended by ``stop()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable
from typing import Any, cast

import mcp_types as types
import orjson
from mcp import MCPError
from mcp.server import Server, ServerRequestContext
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from pydantic import ValidationError
from starlette.types import Message, Receive, Scope, Send

from app import __version__
from app.catalog.definitions import AgentDefinition, Catalog
from app.contract import events as ev
from app.contract.bodies import QueryRequest
from app.contract.events import Stamped
from app.contract.identity import ANONYMOUS
from app.errors import GatewayError, describe_validation_error
from app.paths import ascii_int
from app.runs import Run, RunService

logger = logging.getLogger(__name__)

TOOL_PREFIX = "ask_"
ASK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "message": {"type": "string", "description": "What to ask the agent"},
        "chatId": {"type": "string", "description": "Continue this chat (from an earlier answer's chatId)"},
    },
    "required": ["message"],
}


def ask_tool(agent: AgentDefinition) -> types.Tool:
    description = agent.description or agent.name
    return types.Tool(
        name=f"{TOOL_PREFIX}{agent.key}",
        title=agent.name,
        description=f"Ask the agent '{agent.name}' ({agent.mode}): {description}".rstrip(": "),
        input_schema=ASK_SCHEMA,
    )


def _caller(ctx: ServerRequestContext[Any, Any]) -> str:
    """The authenticated subject of the HTTP request behind ``ctx`` (the anonymous user with auth off)."""
    request = ctx.request
    state = getattr(request, "state", None)
    return str(getattr(state, "user", ANONYMOUS)) if state is not None else ANONYMOUS


def _caller_of(scope: Scope) -> str:
    """The authenticated subject of an ASGI request (as ``_caller``)."""
    state = scope.get("state") or {}
    return str(state.get("user", ANONYMOUS))


def _id_key(request_id: Any) -> str:
    """A JSON-RPC id as a key: ``7`` and ``"7"`` are different ids."""
    return orjson.dumps(request_id).decode()


class _TooLarge(Exception):
    """A POST body past ``server.max-body-bytes``."""


async def _body(scope: Scope, receive: Receive, limit: int) -> tuple[bytes, Message | None]:
    """The whole request body (at most ``limit`` bytes, else ``_TooLarge``, also when its
    ``Content-Length`` says so) and a message that came instead of its end (a disconnect)."""
    for name, value in scope.get("headers") or ():
        if name == b"content-length" and (ascii_int(value.decode("latin-1")) or 0) > limit:
            raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), message
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), None


def _replay(body: bytes, other: Message | None, receive: Receive) -> Receive:
    """A ``receive`` that gives what ``_body`` read, then what ``receive`` gives."""
    queued: list[Message] = [{"type": "http.request", "body": body, "more_body": other is not None}]
    if other is not None:
        queued.append(other)

    async def replayed() -> Message:
        return queued.pop(0) if queued else await receive()

    return replayed


async def _too_large(send: Send, limit: int) -> None:
    """413 with a JSON-RPC error body, as the transport answers its other refusals."""
    body = orjson.dumps({"jsonrpc": "2.0", "id": None, "error": {
        "code": types.INVALID_REQUEST,
        "message": f"request body too large: the limit is {limit} bytes (server.max-body-bytes)"}})
    await send({"type": "http.response.start", "status": 413, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _error(message: str, ids: dict[str, str] | None = None) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True,
                                structured_content=ids)


class AgentsMcpServer:
    """The ``/mcp`` endpoint's MCP server (see the module docstring). Built once per ``Gateway``."""

    def __init__(self, runs: RunService, catalog: Callable[[], Catalog], *, max_body_bytes: int) -> None:
        self._runs = runs
        self._catalog = catalog
        #: a POST body past it is a 413 (the SDK reads whatever comes)
        self._max_body_bytes = max_body_bytes
        self.server: Server[Any] = Server(
            "agent-gateway", version=__version__,
            instructions="Each tool asks one agent of this gateway; pass chatId to continue a conversation.",
            on_list_tools=self._list_tools, on_call_tool=self._call_tool,
        )
        self._manager = StreamableHTTPSessionManager(app=self.server, stateless=True, json_response=False)
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        #: the runs of the ``tools/call`` requests in progress, by (caller, JSON-RPC id): in stateless
        #: mode a ``notifications/cancelled`` comes in a POST of its own, which the SDK ignores
        self._calls: dict[tuple[str, str], Run] = {}

    async def start(self) -> None:
        ready = asyncio.Event()

        async def serve() -> None:
            async with self._manager.run():
                ready.set()
                await self._stop.wait()

        self._task = asyncio.create_task(serve(), name="mcp-endpoint")
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait({self._task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if self._task.done():
            self._task.result()  # raises what stopped it

    async def stop(self) -> None:
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one HTTP request of ``/mcp`` (already authenticated by the middleware).

        A POST body is read here first, at most ``server.max-body-bytes`` of it (the SDK has no limit).

        A client on the handshake-era protocol cancels a call by POSTing ``notifications/cancelled``
        and keeps the call's stream open; in stateless mode the SDK answers that POST and does
        nothing, so the run went on spending tokens. Such a POST cancels the caller's own run."""
        if scope.get("method") == "POST":
            try:
                body, other = await _body(scope, receive, self._max_body_bytes)
            except _TooLarge:
                await _too_large(send, self._max_body_bytes)
                return
            if other is None:
                self._cancel_named(_caller_of(scope), body)
            receive = _replay(body, other, receive)
        await self._manager.handle_request(scope, receive, send)

    def _cancel_named(self, caller: str, body: bytes) -> None:
        """Cancel the runs ``body``'s ``notifications/cancelled`` name (only the caller's own)."""
        if b"notifications/cancelled" not in body:
            return
        try:
            messages = orjson.loads(body)
        except orjson.JSONDecodeError:
            return
        for message in messages if isinstance(messages, list) else [messages]:
            if not isinstance(message, dict):
                continue  # (the SDK answers what is malformed)
            params = message.get("params")
            if message.get("method") == "notifications/cancelled" and isinstance(params, dict) \
                    and isinstance(params.get("requestId"), (int, str)):
                run = self._calls.get((caller, _id_key(params["requestId"])))
                if run is not None:
                    run.cancel()

    # -- handlers

    async def _list_tools(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[ask_tool(agent) for agent in self._catalog().agents.values()])

    async def _call_tool(
        self, ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        key = params.name[len(TOOL_PREFIX):] if params.name.startswith(TOOL_PREFIX) else ""
        if not key or key not in self._catalog().agents:
            raise MCPError(types.INVALID_PARAMS, f"unknown tool {params.name!r}: each agent is ask_<agentKey>")
        arguments = params.arguments or {}
        try:
            query = QueryRequest.model_validate({**arguments, "agentKey": key})
        except ValidationError as exc:
            return _error(f"invalid arguments: {describe_validation_error(exc)}")
        caller = _caller(ctx)
        try:
            run = await self._runs.start(query, caller)
        except GatewayError as exc:
            return _error(exc.message)
        call = (caller, _id_key(ctx.request_id)) if ctx.request_id is not None else None
        if call is not None:
            self._calls[call] = run
        try:
            return await self._answer(ctx, run)
        finally:
            if call is not None and self._calls.get(call) is run:
                del self._calls[call]

    async def _answer(self, ctx: ServerRequestContext[Any, Any], run: Run) -> types.CallToolResult:
        ids = {"chatId": run.chat_id, "runId": run.run_id}
        streamed = 0
        events = cast(AsyncGenerator[Stamped, None], self._runs.query_stream(run))
        async with contextlib.aclosing(events):  # leaving early (client gone) cancels the run
            async for stamped in events:
                event = stamped.event
                if isinstance(event, ev.ContentDeltaEvent) and event.delta:
                    streamed += len(event.delta)
                    await ctx.session.report_progress(streamed, None, event.delta)
        outcome = await run.finished()
        if outcome.status == "completed":
            return types.CallToolResult(content=[types.TextContent(type="text", text=run.final_text)],
                                        structured_content=ids)
        if outcome.status == "error":
            error = outcome.error or {}
            return _error(f"the run failed: {error.get('message') or error.get('code') or 'unknown error'}", ids)
        return _error(f"the run was cancelled: {outcome.reason or 'cancelled'}", ids)
