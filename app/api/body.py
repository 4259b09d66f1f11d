"""Reading JSON request bodies at the edge: size-limited, parsed with orjson, validated with pydantic.

A client that goes away in the middle of its body (starlette's ``ClientDisconnect``) is
one INFO line, not a traceback: the request ends with a ``RequestError`` nobody receives.
"""

from __future__ import annotations

import logging
from typing import TypeVar

import orjson
from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect

from app.errors import PayloadTooLarge, RequestError, describe_validation_error
from app.paths import ascii_int

logger = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=BaseModel)


async def read_json(request: Request, model: type[ModelT], max_bytes: int) -> ModelT:
    declared = request.headers.get("content-length")
    length = ascii_int(declared) if declared is not None else None
    if length is not None and length > max_bytes:
        raise PayloadTooLarge(f"request body larger than {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLarge(f"request body larger than {max_bytes} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        client = request.client.host if request.client else "?"
        logger.info("client %s disconnected after %d of %s body bytes of %s %s", client, size,
                    declared if declared is not None else "(unknown)", request.method, request.url.path)
        raise RequestError("the client disconnected before sending the whole request body") from None
    raw = b"".join(chunks)
    if not raw.strip():
        raise RequestError("request body is empty; expected a JSON object")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"malformed JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise RequestError("request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestError(f"invalid request: {describe_validation_error(exc, 'body')}") from exc
