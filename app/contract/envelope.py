"""The JSON envelope of SPEC §4: ``{"code": 0, "msg": "success", "data": …}``.

Pure payloads and their encoding, no web framework: ``app.api.envelope`` wraps them in
responses, the security middleware answers its 401s with them before any route runs.
"""

from __future__ import annotations

from typing import Any

import orjson


def success_body(data: Any) -> dict[str, Any]:
    """The envelope of a successful answer carrying ``data``."""
    return {"code": 0, "msg": "success", "data": data}


def failure_body(code: int, msg: str) -> dict[str, Any]:
    """The envelope of a failed answer: a non-zero ``code`` (SPEC §4 table), a message, no data."""
    assert code != 0, "code 0 means success"
    return {"code": code, "msg": msg, "data": None}


def encode_body(body: Any) -> bytes:
    """The JSON bytes of an envelope (orjson; non-string dict keys are stringified)."""
    return orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS)


__all__ = ["encode_body", "failure_body", "success_body"]
