"""Reading JSON request bodies at the edge: size-limited, parsed with orjson, validated with pydantic."""

from __future__ import annotations

from typing import TypeVar

import orjson
from fastapi import Request
from pydantic import BaseModel, ValidationError

from app.errors import PayloadTooLarge, RequestError, describe_validation_error

ModelT = TypeVar("ModelT", bound=BaseModel)


async def read_json(request: Request, model: type[ModelT], max_bytes: int) -> ModelT:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"request body larger than {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"request body larger than {max_bytes} bytes")
        chunks.append(chunk)
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
