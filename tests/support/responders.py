"""Fake-upstream responders shared by tests whose runs start without a queued script (schedules)."""

from __future__ import annotations

from typing import Any

from app.devtools.script import Script, http_error_script, text_script


def echo_or_fail(body: dict[str, Any]) -> Script:
    """Answers by the user's message: ``fail`` → HTTP 500, anything else → an echo."""
    message = str(body["messages"][-1]["content"])
    if "fail" in message:
        return http_error_script(500, "the model is down")
    return text_script(["echo: ", message])
