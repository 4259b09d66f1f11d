"""Reading helpers shared by replay and history: the line kinds of SPEC §8.

A chat file is a sequence of JSON objects, one per line, told apart by ``_type``:

* ``query``  — ``chatId, runId, updatedAt, query{…}, owner?``: a run's request;
* ``step``   — ``chatId, runId, _stage, _seq, updatedAt, messages[…], taskId?, system?, plan?``;
* ``run``    — our extension, written when a run ends: ``status`` (``complete`` |
  ``error`` | ``cancel``), ``finishReason?``, ``error?``, ``usage?``, ``points?``;
* ``submit`` — our extension, a frontend-tool submission: ``toolId, payload``.
* ``upload`` — our extension (SPEC §23), outside any run: ``chatId, updatedAt, owner, requestId,
  reference{…}``; a chat an upload created starts with it.

Everything here is pure (no I/O) and tolerant: a field of the wrong type is ignored,
never raised for, because chat files outlive the code that wrote them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

LINE_QUERY = "query"
LINE_STEP = "step"
LINE_RUN = "run"
LINE_SUBMIT = "submit"
LINE_UPLOAD = "upload"

#: the owner of chats written while auth was off (and of legacy files without ``owner``)
ANONYMOUS_OWNER = "anonymous"

#: SPEC §8: ``chatName`` is the first query's message, truncated
CHAT_NAME_CHARS = 40

#: the latest time a chat file may hold (9999-12-31T23:59:59.999Z, epoch ms): beyond it a number is no time
MAX_EPOCH_MS = 253_402_300_799_999

#: legacy task status spellings → SPEC §5 values
_LEGACY_STATUS = {"in_progress": "init", "cancelled": "canceled"}


def chat_name(message: Any) -> str:
    """The display name of a chat: its first message on one line, at most 40 chars."""
    if not isinstance(message, str):
        return ""
    return " ".join(message.split())[:CHAT_NAME_CHARS]


def group_runs(lines: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Lines grouped by ``runId``, runs in order of first appearance, lines in file order.

    Lines without a string ``runId`` belong to no run and are left out.
    """
    runs: dict[str, list[Mapping[str, Any]]] = {}
    for line in lines:
        run_id = line.get("runId")
        if isinstance(run_id, str) and run_id:
            runs.setdefault(run_id, []).append(line)
    return runs


def text_of(content: Any) -> str | None:
    """The text of a message's ``content``/``reasoning_content``: parts joined, or ``None``.

    Accepts the stored list of ``{type: "text", text}`` parts and, for tolerance, a
    plain string. Parts of other types (images) carry no text and are skipped.
    """
    if content is None:
        return None
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
                texts.append(part["text"])
        return "".join(texts)
    return None


def messages_of(line: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The well-formed messages of a step line (anything that is not an object is skipped)."""
    messages = line.get("messages")
    if not isinstance(messages, list):
        return []
    return [m for m in messages if isinstance(m, Mapping)]


def timestamp_of(value: Any, default: int) -> int:
    """An epoch-ms field as ``int`` (``default`` when missing, not a number or no time: ``epoch_ms``)."""
    stamp = epoch_ms(value)
    return default if stamp is None else stamp


def epoch_ms(value: Any) -> int | None:
    """An epoch-ms field as ``int``, or ``None`` for anything but a number from 0 to ``MAX_EPOCH_MS``.

    A file may hold any JSON number (``1e300``): as an ``int`` it passed 64 bits, and the response
    that carried it (the whole chat list) could not be encoded: one such line cost every chat."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= MAX_EPOCH_MS:
        return int(value)
    return None


def _task(raw: Mapping[str, Any]) -> dict[str, Any]:
    status = raw.get("status")
    status = status.lower() if isinstance(status, str) and status else "init"
    task_id = raw.get("taskId", raw.get("id"))
    description = raw.get("description")
    return {
        "taskId": str(task_id) if task_id is not None else "",
        "description": description if isinstance(description, str) else "",
        "status": _LEGACY_STATUS.get(status, status),
    }


def read_plan(step: Mapping[str, Any]) -> dict[str, Any] | None:
    """A step's plan as ``{planId, tasks: [{taskId, description, status}]}``, or ``None``.

    Reads V3.1 ``plan.tasks`` and the older ``planSnapshot`` / ``plan.plan`` spellings;
    the legacy status ``in_progress`` reads as ``init`` (SPEC §5).
    """
    raw = step.get("plan")
    if raw is None:
        raw = step.get("planSnapshot")
    if not isinstance(raw, Mapping):
        return None
    tasks = raw.get("tasks")
    if tasks is None:
        tasks = raw.get("plan")
    plan_id = raw.get("planId")
    return {
        "planId": plan_id if isinstance(plan_id, str) else None,
        "tasks": [_task(t) for t in tasks if isinstance(t, Mapping)] if isinstance(tasks, list) else [],
    }
