"""``stream_chat``: one streaming model call, whatever the protocol (SPEC §2, §7).

Dispatches on ``request.model.protocol`` to the OpenAI or Anthropic adapter, POSTs
with ``client.stream`` (so closing the returned generator closes the upstream response
at once) and yields every ``Delta`` the moment its line is read.

httpx errors are mapped at this edge:

=====================================================  ===========================
httpx                                                   gateway
=====================================================  ===========================
non-2xx status (body read up to 4 KB)                  ``UpstreamHTTPError``
``TimeoutException`` (connect/read/write/pool)          ``UpstreamTimeout``
``ConnectError`` (refused, DNS, unreachable)            ``UpstreamError`` ("cannot connect …")
``RemoteProtocolError``/``ReadError``/other transport   ``UpstreamDisconnected``
``DecodingError``                                       ``UpstreamProtocolError``
=====================================================  ===========================

The API key only travels in the request headers; it is never logged.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from app.errors import UpstreamDisconnected, UpstreamError, UpstreamHTTPError, UpstreamProtocolError, UpstreamTimeout
from app.llm import anthropic, openai
from app.llm._sse import MAX_ERROR_BODY_BYTES, vendor_message
from app.llm.deltas import Delta, ToolCallArgs, ToolCallStart
from app.llm.endpoints import build_headers, resolve_endpoint
from app.llm.request import ChatRequest

logger = logging.getLogger(__name__)

_Translate = Callable[[AsyncIterator[str]], AsyncIterator[Delta]]


def build_request_body(request: ChatRequest) -> dict[str, Any]:
    """The vendor request body for ``request`` (useful for logging and tests)."""
    if request.model.protocol == "ANTHROPIC":
        return anthropic.build_body(request)
    return openai.build_body(request)


def _translator(request: ChatRequest) -> _Translate:
    return anthropic.translate_stream if request.model.protocol == "ANTHROPIC" else openai.translate_stream


def _timeout(request: ChatRequest) -> httpx.Timeout:
    return httpx.Timeout(
        connect=request.connect_timeout_s,
        read=request.timeout_s,
        write=request.timeout_s,
        pool=request.connect_timeout_s,
    )


async def _read_error_body(response: httpx.Response) -> str:
    data = bytearray()
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) >= MAX_ERROR_BODY_BYTES:
            break
    return bytes(data[:MAX_ERROR_BODY_BYTES]).decode("utf-8", errors="replace")


def _log_delta(request: ChatRequest, delta: Delta) -> None:
    if isinstance(delta, ToolCallStart):
        detail = f"tool_call_start index={delta.index} id={delta.call_id} name={delta.name}"
    elif isinstance(delta, ToolCallArgs):
        detail = f"tool_call_args index={delta.index} fragment={delta.fragment!r}"
    else:
        detail = repr(delta)
    logger.debug("llm delta trace=%s stage=%s model=%s %s", request.trace_id, request.stage, request.model.key, detail)


async def stream_chat(client: httpx.AsyncClient, request: ChatRequest) -> AsyncIterator[Delta]:
    """Stream one chat call as ``Delta``s (see the module docstring for the error mapping)."""
    protocol = request.model.protocol
    url = resolve_endpoint(protocol, request.provider)
    headers = build_headers(protocol, request.api_key)
    body = build_request_body(request)
    translate = _translator(request)
    log_deltas = request.interaction_log and logger.isEnabledFor(logging.DEBUG)
    logger.debug(
        "llm request trace=%s stage=%s model=%s protocol=%s url=%s", request.trace_id, request.stage, request.model.key, protocol, url
    )
    try:
        async with client.stream("POST", url, json=body, headers=headers, timeout=_timeout(request)) as response:
            if not response.is_success:
                text = await _read_error_body(response)
                message = vendor_message(text) or response.reason_phrase
                raise UpstreamHTTPError(
                    f"upstream answered HTTP {response.status_code}: {message}",
                    http_status=response.status_code,
                    body=text,
                )
            async for delta in translate(response.aiter_lines()):
                if log_deltas:
                    _log_delta(request, delta)
                yield delta
    except httpx.TimeoutException as exc:
        raise UpstreamTimeout(f"upstream {type(exc).__name__} after the configured timeout ({url})") from exc
    except httpx.ConnectError as exc:
        raise UpstreamError(f"cannot connect to upstream {url}: {exc}") from exc
    except httpx.DecodingError as exc:
        raise UpstreamProtocolError(f"upstream sent an undecodable body: {exc}") from exc
    except httpx.TransportError as exc:
        raise UpstreamDisconnected(f"upstream connection broke mid-stream: {exc}") from exc


__all__ = ["build_request_body", "stream_chat"]
