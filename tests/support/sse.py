"""A real SSE client over httpx (httpx-sse) that parses the gateway's events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
from httpx_sse import aconnect_sse


async def stream_events(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    """POST a query and yield each event's JSON as it arrives (checks the SSE framing)."""
    async with aconnect_sse(client, "POST", url, json=body) as source:
        assert source.response.status_code == 200, source.response.status_code
        assert source.response.headers["content-type"].startswith("text/event-stream")
        async for sse in source.aiter_sse():
            if not sse.data:
                # a ': heartbeat' comment; httpx-sse still dispatches it because the last id persists
                continue
            assert sse.event == "message"
            data = orjson.loads(sse.data)
            assert sse.id == str(data["seq"])
            yield data


async def collect(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    return [event async for event in stream_events(client, url, body)]


def types(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]
