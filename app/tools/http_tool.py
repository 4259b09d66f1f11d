"""HTTP backend tools: a ``.backend`` item with ``toolApi`` (SPEC §3.3).

The arguments are POSTed as JSON to ``toolApi``; a 2xx JSON body is the result
(parsed), any other 2xx body is returned as text. A non-2xx status, a network
failure or a timeout (the tool budget) raises ``ToolError``, whose message names ``toolApi`` with
its credentials masked (a password, an ``api_key`` parameter): it becomes the call's result.

The body is bounded *after* decompression, and decompressed here in bounded steps: httpx
inflates each received chunk whole, so a gzip body of 1 MiB (about 1 GiB inflated) would sit
in the gateway's memory before any limit saw it. Only ``gzip`` is asked for (``deflate``, zlib-wrapped,
is read too; anything else is a ``ToolError``).
"""

from __future__ import annotations

import json
import logging
import zlib
from typing import Any

import httpx

from app.catalog.definitions import ToolDefinition
from app.errors import ToolError
from app.security.access_log import mask_url
from app.tools.base import ToolContext

logger = logging.getLogger(__name__)

#: bodies larger than this are refused (the result goes into the model's context)
MAX_RESPONSE_BYTES = 2 * 1024 * 1024
#: how much of an error body is quoted back
ERROR_EXCERPT_CHARS = 500


async def call_http_tool(tool: ToolDefinition, args: dict[str, Any], ctx: ToolContext) -> Any:
    """POST ``args`` to ``tool.tool_api``; return the parsed JSON body or the text body."""
    if not tool.tool_api:
        raise ToolError(f"tool {tool.name!r} has no toolApi")
    headers = {"Accept": "application/json, text/plain;q=0.9, */*;q=0.5", "Accept-Encoding": "gzip"}
    if ctx.run_id:
        headers["X-Agent-Run-Id"] = ctx.run_id
    if ctx.chat_id:
        headers["X-Agent-Chat-Id"] = ctx.chat_id
    # the error is the call's result: the model, the client and the chat file see it (SPEC §9: no key)
    shown = mask_url(tool.tool_api)
    try:
        async with ctx.http.stream(
            "POST", tool.tool_api, json=args, headers=headers, timeout=ctx.timeout_s
        ) as response:
            body = await _read_bounded(response, tool.name)
    except httpx.TimeoutException as exc:
        raise ToolError(f"tool {tool.name!r}: {shown} timed out after {ctx.timeout_s:g}s") from exc
    except httpx.HTTPError as exc:
        raise ToolError(f"tool {tool.name!r}: request to {shown} failed: {type(exc).__name__}: "
                        f"{mask_url(str(exc))}") from exc
    except httpx.InvalidURL as exc:
        raise ToolError(f"tool {tool.name!r}: invalid toolApi {shown!r}: {mask_url(str(exc))}") from exc
    text = body.decode(response.encoding or "utf-8", "replace")
    if not response.is_success:
        excerpt = text[:ERROR_EXCERPT_CHARS] + ("…" if len(text) > ERROR_EXCERPT_CHARS else "")
        raise ToolError(f"tool {tool.name!r}: {shown} returned HTTP {response.status_code}: {excerpt}")
    content_type = response.headers.get("content-type", "")
    if "json" in content_type or text.lstrip().startswith(("{", "[")):
        try:
            return json.loads(text)
        except (ValueError, RecursionError):  # nested past the interpreter's recursion limit: text too
            logger.debug("tool %s: body is not valid JSON; returning it as text", tool.name)
    return text


async def _read_bounded(response: httpx.Response, name: str) -> bytes:
    """The decoded body, never holding more than ``MAX_RESPONSE_BYTES`` (+1) of it at once."""
    too_large = ToolError(f"tool {name!r}: response larger than {MAX_RESPONSE_BYTES} bytes")
    encoding = response.headers.get("content-encoding", "")
    inflater = _inflater(encoding, name)
    body = bytearray()
    try:
        async for raw in response.aiter_raw():
            if inflater is None:
                body += raw
            else:
                data = raw
                while data and len(body) <= MAX_RESPONSE_BYTES:
                    body += inflater.decompress(data, MAX_RESPONSE_BYTES + 1 - len(body))
                    data = inflater.unconsumed_tail
            if len(body) > MAX_RESPONSE_BYTES:
                raise too_large
        if inflater is not None:
            body += inflater.flush()
    except zlib.error as exc:
        raise ToolError(f"tool {name!r}: the {encoding.strip()} response body cannot be decoded: {exc}") from exc
    if len(body) > MAX_RESPONSE_BYTES:
        raise too_large
    return bytes(body)


def _inflater(content_encoding: str, name: str) -> Any:
    """A zlib decompressor for the response's ``Content-Encoding`` (``None``: not encoded)."""
    encoding = content_encoding.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(zlib.MAX_WBITS | 16)
    if encoding == "deflate":
        return zlib.decompressobj(zlib.MAX_WBITS | 32)  # zlib-wrapped; 32: detect the header
    raise ToolError(f"tool {name!r}: response in an unsupported Content-Encoding {content_encoding[:50]!r} "
                    "(gzip, deflate or none)")
