"""The JSON envelope of SPEC §4: ``{"code": 0, "msg": "success", "data": …}``."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import GatewayError


class EnvelopeResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


def ok(data: Any) -> EnvelopeResponse:
    return EnvelopeResponse({"code": 0, "msg": "success", "data": data})


def fail(status: int, code: int, msg: str) -> EnvelopeResponse:
    return EnvelopeResponse({"code": code, "msg": msg, "data": None}, status_code=status)


async def gateway_error_handler(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return fail(exc.status, exc.code, exc.message)


async def validation_error_handler(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query"))
        problems.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return fail(400, 4000, "invalid request: " + "; ".join(problems))


async def http_error_handler(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    return fail(exc.status_code, exc.status_code * 10, str(exc.detail))


async def unexpected_error_handler(_: Request, exc: Exception) -> Response:
    return fail(500, 5000, "internal error")
