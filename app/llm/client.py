"""``stream_chat``: one streaming model call, whatever the protocol (SPEC §2, §7).

Dispatches on ``request.model.protocol`` to the OpenAI or Anthropic adapter, POSTs
with ``client.stream`` (so closing the returned generator closes the upstream response
at once) and yields every ``Delta`` the moment its line is read (``app.llm._sse``).

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

The API key only travels in the request headers. Some vendors echo it in an error, before
the stream (a non-2xx body) or inside it (an ``error`` object in a 200 stream): every
``UpstreamError`` leaving here has the key (and other credentials) masked in its message
and body, so it reaches no event, chat file or log. With the interaction log on
(``ChatRequest.interaction_log`` and DEBUG), the request (url, headers, body) and every
delta are logged with the trace id and stage; ``mask_sensitive`` masks credentials
(``app.security.masking``), the provider key itself included.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import httpx
import orjson

from app.errors import UpstreamDisconnected, UpstreamError, UpstreamHTTPError, UpstreamProtocolError, UpstreamTimeout
from app.llm import anthropic, openai
from app.llm._sse import MAX_ERROR_BODY_BYTES, EventReader, Translator, deltas_of, vendor_message
from app.llm.h1 import RAW_BODY
from app.llm.network import LeanStream
from app.llm.deltas import Delta, ToolCallArgs, ToolCallStart
from app.llm.endpoints import build_headers, resolve_endpoint
from app.llm.request import ChatRequest
from app.llm.upstream import UpstreamClient
from app.security.masking import mask_text, mask_value

logger = logging.getLogger(__name__)

#: the interaction log shows at most this much of a request body
MAX_LOGGED_BODY_CHARS = 32_000
#: how long the rest of a body may take after its end marker before the connection is dropped
FINISH_GRACE_S = 0.02


def build_request_body(request: ChatRequest) -> dict[str, Any]:
    """The vendor request body for ``request`` (useful for logging and tests)."""
    if request.model.protocol == "ANTHROPIC":
        return anthropic.build_body(request)
    return openai.build_body(request)


def _translator(request: ChatRequest) -> Translator:
    return anthropic.StreamTranslator() if request.model.protocol == "ANTHROPIC" else openai.StreamTranslator()


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
    if request.mask_sensitive:
        detail = mask_text(detail, (request.api_key,))
    logger.debug("llm delta trace=%s stage=%s model=%s %s", request.trace_id, request.stage, request.model.key, detail)


def _log_request(request: ChatRequest, url: str, headers: dict[str, str], body: dict[str, Any]) -> None:
    """The interaction log's request line (SPEC §7): url, headers and body, credentials masked."""
    shown_headers: Any = headers
    shown_body: Any = body
    if request.mask_sensitive:
        secrets = (request.api_key,)
        url = mask_text(url, secrets)
        shown_headers = mask_value(headers, secrets)
        shown_body = mask_value(body, secrets)
    text = orjson.dumps(shown_body, default=str).decode("utf-8")
    if len(text) > MAX_LOGGED_BODY_CHARS:
        text = text[:MAX_LOGGED_BODY_CHARS] + f"…({len(text) - MAX_LOGGED_BODY_CHARS} more chars)"
    logger.debug(
        "llm request trace=%s stage=%s model=%s protocol=%s url=%s headers=%s body=%s",
        request.trace_id, request.stage, request.model.key, request.model.protocol, url,
        orjson.dumps(shown_headers).decode("utf-8"), text,
    )


def _mask_error(exc: UpstreamError, api_key: str) -> None:
    """Mask credentials in ``exc`` in place (its message, ``str(exc)`` and an HTTP error's body)."""
    secrets = (api_key,)
    exc.message = mask_text(exc.message, secrets)
    exc.args = (exc.message,)
    if isinstance(exc, UpstreamHTTPError):
        exc.body = mask_text(exc.body, secrets)


async def stream_chat(client: httpx.AsyncClient, request: ChatRequest) -> AsyncGenerator[Delta, None]:
    """Stream one chat call as ``Delta``s (see the module docstring for the error mapping).

    Every failure is logged once at WARNING with the provider, model, URL and HTTP status (the
    message is already masked: never the key), so operators see it at the default log level.

    One async generator from the body to the run: the body's chunks go through the line
    splitter, the event reader and the vendor's translator, which are plain objects
    (``app.llm._sse``). There were nine generators before (issue 13); with them went their
    per-item work and a live frame each per stream (docs/DECISIONS.md, "One async generator").
    """
    url = resolve_endpoint(request.model.protocol, request.provider)
    headers = build_headers(request.model.protocol, request.api_key)
    body = build_request_body(request)
    log_deltas = request.interaction_log and logger.isEnabledFor(logging.DEBUG)
    if log_deltas:
        _log_request(request, url, headers, body)
    try:
        # orjson, not httpx's ``json=`` (stdlib json): 84 → 4 µs for a 9 KB body with tools, per call.
        # Copied to its exact size: the request holds it for the whole stream, and orjson's own
        # bytes keep its whole output buffer (4 KiB at least); the dict is not needed after this.
        content = bytes(memoryview(orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS)))
        del body
        target = client.url(url) if isinstance(client, UpstreamClient) else url
        async with client.stream("POST", target, content=content, headers=headers, timeout=_timeout(request)) as response:
            if not response.is_success:
                # some vendors echo the credential in their error: it must not reach events or memory
                text = mask_text(await _read_error_body(response), (request.api_key,))
                message = vendor_message(text) or response.reason_phrase
                raise UpstreamHTTPError(
                    f"upstream answered HTTP {response.status_code}: {message}",
                    http_status=response.status_code,
                    body=text,
                )
            # SSE is UTF-8 by definition (HTML's event-stream parsing), whatever charset the
            # Content-Type says; and its lines end at CR/LF only, not where httpx's aiter_lines
            # (str.splitlines) ends them: the EventReader does both
            reader = EventReader()
            translator = _translator(request)
            chunks = _chunks(response)
            async for chunk in chunks:
                for delta in deltas_of(reader.feed(chunk), translator):
                    if log_deltas:
                        _log_delta(request, delta)
                    yield delta
                if translator.done:
                    break
            else:
                for delta in deltas_of(reader.end(), translator):
                    if log_deltas:
                        _log_delta(request, delta)
                    yield delta
            translator.end()
            await _finish_body(response, chunks)
    except UpstreamError as exc:  # an in-stream error object, a bad chunk, a non-2xx answer
        _mask_error(exc, request.api_key)
        _failed(request, url, exc)
        raise
    except httpx.TimeoutException as exc:
        raise _failed(request, url, UpstreamTimeout(
            f"upstream {type(exc).__name__} after the configured timeout ({url})")) from exc
    except httpx.ConnectError as exc:
        raise _failed(request, url, UpstreamError(f"cannot connect to upstream {url}: {exc}")) from exc
    except httpx.DecodingError as exc:
        raise _failed(request, url, UpstreamProtocolError(f"upstream sent an undecodable body: {exc}")) from exc
    except httpx.TransportError as exc:
        raise _failed(request, url, UpstreamDisconnected(f"upstream connection broke mid-stream: {exc}")) from exc


def _failed(request: ChatRequest, url: str, exc: UpstreamError) -> UpstreamError:
    """``exc``, logged once at WARNING (its message is masked already)."""
    logger.warning(
        "upstream failure trace=%s provider=%s model=%s url=%s status=%s: %s", request.trace_id,
        request.model.provider, request.model.key, url, getattr(exc, "http_status", None) or "-", exc.message,
    )
    return exc


def _chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    """The body's chunks as they arrive: straight from our transport's body when it has no content
    coding (``RAW_BODY``), else through httpx, which decodes it."""
    raw = response.extensions.get(RAW_BODY)
    if raw is not None and response.headers.get("content-encoding", "identity").strip().lower() == "identity":
        return aiter(raw)
    return response.aiter_bytes()


async def _finish_body(response: httpx.Response, chunks: AsyncIterator[bytes]) -> None:
    """Read what is left of the body after the stream's end marker, waiting at most ``FINISH_GRACE_S``.

    The translators stop at ``[DONE]`` / ``message_stop``; the chunked body's terminator comes
    with it or right after. Reading it lets httpcore return the connection to the pool
    (keep-alive: the next call needs no new connection and no TCP handshake) instead of
    closing it. The wait is bounded by shortening the read timeout, not by cancelling the
    task: a cancellation landing inside httpcore's response clean-up would leave the connection
    marked active in the pool. An upstream that keeps the body open, or sends more, only costs
    its connection, as before. Whatever comes after the end marker is ignored.
    """
    stream = response.extensions.get("network_stream")
    if not isinstance(stream, LeanStream):
        return  # another transport (a proxy from the environment): the connection closes, as before
    stream.cap_read_timeout(FINISH_GRACE_S)
    try:
        async for _ in chunks:
            pass
    except (httpx.HTTPError, UpstreamError):
        logger.debug("the upstream body did not end within %.2f s of its end marker", FINISH_GRACE_S)
    finally:
        stream.cap_read_timeout(None)


__all__ = ["build_request_body", "stream_chat"]
