"""Helpers of the AG-UI endpoint tests: inputs, and an SSE reader that validates every event.

Every ``data:`` frame is parsed with ``ag_ui.core``'s ``Event`` union (the ``ag-ui-protocol``
package's own models) and must carry no field the model does not know: the tests read
``ag_ui.core`` models, never loose dicts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
from ag_ui.core import BaseEvent, Event, RawEvent
from httpx_sse import aconnect_sse
from pydantic import TypeAdapter

EVENT = TypeAdapter(Event)


def parse_event(data: str) -> Any:
    """One ``data:`` frame as its ``ag_ui.core`` model; unknown fields fail the test.

    Typed ``Any``: the tests read the fields of the concrete event they asserted the type of."""
    event: BaseEvent = EVENT.validate_json(data)
    assert not event.model_extra, f"fields outside the AG-UI model in {data}"
    return event


def user_input(thread_id: str, text: str, *, run_id: str = "client-run-1",
               messages: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A ``RunAgentInput`` whose last message is the user's ``text``."""
    return {
        "threadId": thread_id, "runId": run_id, "state": {}, "tools": [], "context": [], "forwardedProps": {},
        "messages": [*(messages or []), {"id": f"u-{run_id}", "role": "user", "content": text}],
    }


def answer_input(thread_id: str, first: list[Any], content: str, *, run_id: str = "client-run-2") -> dict[str, Any]:
    """The client's next input after ``first`` ended with a pending client tool call: the
    conversation so far, its assistant tool call, and the ``tool`` message ``content``."""
    [pending] = first[-1].outcome.pending_tool_call_ids
    start = next(event for event in first if event.type.value == "TOOL_CALL_START" and event.tool_call_id == pending)
    arguments = "".join(event.delta for event in first
                        if event.type.value == "TOOL_CALL_ARGS" and event.tool_call_id == pending)
    messages = [
        {"id": "u-1", "role": "user", "content": "trip"},
        {"id": start.parent_message_id, "role": "assistant",
         "toolCalls": [{"id": start.tool_call_id, "type": "function",
                        "function": {"name": start.tool_call_name, "arguments": arguments}}]},
        {"id": "tool-1", "role": "tool", "toolCallId": start.tool_call_id, "content": content},
    ]
    return {"threadId": thread_id, "runId": run_id, "state": {}, "tools": [], "context": [], "forwardedProps": {},
            "messages": messages}


async def stream_agui(client: httpx.AsyncClient, url: str, body: dict[str, Any],
                      headers: dict[str, str] | None = None) -> AsyncIterator[Any]:
    """POST a ``RunAgentInput`` and yield each AG-UI event as it arrives (checks the SSE framing)."""
    async with aconnect_sse(client, "POST", url, json=body, headers=headers or {}) as source:
        response = source.response
        assert response.status_code == 200, response.status_code
        assert response.headers["content-type"].startswith("text/event-stream")
        async for sse in source.aiter_sse():
            if not sse.data:  # a heartbeat comment
                continue
            assert sse.event == "message"  # a data-only frame, as EventEncoder writes them
            yield parse_event(sse.data)


async def collect_agui(client: httpx.AsyncClient, url: str, body: dict[str, Any],
                       headers: dict[str, str] | None = None) -> list[Any]:
    return [event async for event in stream_agui(client, url, body, headers)]


def kinds(events: list[BaseEvent]) -> list[str]:
    """The event types, in stream order."""
    return [event.type.value for event in events]


def raw_types(events: list[BaseEvent]) -> list[str]:
    """The gateway event types carried by the ``RAW`` events, in stream order."""
    return [event.event["type"] for event in events if isinstance(event, RawEvent)]
