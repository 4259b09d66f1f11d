"""Small helpers shared by the engine tests: event filters, chat files, tool-call scripts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from app.devtools.script import Step, tool_call_script


def of_type(events: list[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    """The events whose ``type`` is one of ``kinds``, in stream order."""
    return [event for event in events if event["type"] in kinds]


def first(events: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The first event of type ``kind`` (fails the test when there is none)."""
    found = of_type(events, kind)
    assert found, f"no {kind} event in {[e['type'] for e in events]}"
    return found[0]


def deltas(events: list[dict[str, Any]], kind: str) -> str:
    """The concatenated ``delta`` fields of the events of type ``kind``."""
    return "".join(event["delta"] for event in of_type(events, kind))


def call(call_id: str, name: str, args: dict[str, Any], *, text: tuple[str, ...] = ()) -> list[Step]:
    """A script whose one tool call carries ``args`` in two fragments (split mid-JSON)."""
    raw = orjson.dumps(args).decode()
    cut = max(1, len(raw) // 2)
    return tool_call_script(call_id, name, [raw[:cut], raw[cut:]], text=text)


def chat_lines(deploy: Path, chat_id: str) -> list[dict[str, Any]]:
    """Every JSONL line of a chat file (SPEC §8)."""
    path = deploy / "chats" / f"{chat_id}.json"
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def step_messages(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages of every ``step`` line, in file order."""
    return [message for line in lines if line.get("_type") == "step" for message in line["messages"]]


def tool_names(body: dict[str, Any]) -> list[str]:
    """The function names of a recorded upstream request's ``tools[]``."""
    return [tool["function"]["name"] for tool in body.get("tools") or []]


def tool_message(body: dict[str, Any], call_id: str) -> dict[str, Any]:
    """The ``role=tool`` message answering ``call_id`` in a recorded upstream request."""
    found = [m for m in body["messages"] if m.get("role") == "tool" and m.get("tool_call_id") == call_id]
    assert found, f"no tool message for {call_id}"
    return found[-1]
