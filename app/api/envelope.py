"""The JSON envelope of SPEC §4 as responses; the payloads live in ``app.contract.envelope``."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.contract.envelope import encode_body, failure_body, success_body
from app.errors import GatewayError


class EnvelopeResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return encode_body(content)


def ok(data: Any) -> EnvelopeResponse:
    return EnvelopeResponse(success_body(data))


def fail(status: int, code: int, msg: str) -> EnvelopeResponse:
    return EnvelopeResponse(failure_body(code, msg), status_code=status)


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
    response = fail(exc.status_code, exc.status_code * 10, str(exc.detail))
    if exc.headers:  # e.g. the ``Allow`` a 405 must carry (RFC 9110 §15.5.6)
        response.headers.update(exc.headers)
    return response


async def unexpected_error_handler(_: Request, exc: Exception) -> Response:
    return fail(500, 5000, "internal error")
