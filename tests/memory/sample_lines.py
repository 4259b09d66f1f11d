"""Hand-built chat lines in the exact shapes of SPEC §8 (there is no engine to write them)."""

from __future__ import annotations

import json
from typing import Any

CHAT = "chat_1"


def text(value: str) -> list[dict[str, str]]:
    return [{"type": "text", "text": value}]


def query_line(run_id: str, message: str, *, ts: int, agent_key: str = "demo", owner: str | None = None,
               references: list[Any] | None = None, chat_id: str = CHAT) -> dict[str, Any]:
    line: dict[str, Any] = {
        "_type": "query", "chatId": chat_id, "runId": run_id, "updatedAt": ts,
        "query": {
            "requestId": f"req_{run_id}", "chatId": chat_id, "agentKey": agent_key, "role": "user",
            "message": message, "references": references or [], "params": {}, "scene": None, "stream": True,
        },
    }
    if owner is not None:
        line["owner"] = owner
    return line


def step_line(run_id: str, seq: int, messages: list[dict[str, Any]], *, ts: int, stage: str = "react",
              task_id: str | None = None, plan: dict[str, Any] | None = None, system: str | None = None,
              chat_id: str = CHAT) -> dict[str, Any]:
    line: dict[str, Any] = {
        "_type": "step", "chatId": chat_id, "runId": run_id, "_stage": stage, "_seq": seq,
        "updatedAt": ts, "messages": messages,
    }
    if task_id is not None:
        line["taskId"] = task_id
    if system is not None:
        line["system"] = system
    if plan is not None:
        line["plan"] = plan
    return line


def run_line(run_id: str, status: str = "complete", *, ts: int, finish_reason: str | None = "stop",
             error: dict[str, Any] | None = None, chat_id: str = CHAT) -> dict[str, Any]:
    line: dict[str, Any] = {"_type": "run", "chatId": chat_id, "runId": run_id, "updatedAt": ts, "status": status}
    if status == "complete" and finish_reason:
        line["finishReason"] = finish_reason
    if error is not None:
        line["error"] = error
    return line


def submit_line(run_id: str, tool_id: str, payload: Any, *, ts: int, chat_id: str = CHAT) -> dict[str, Any]:
    return {"_type": "submit", "chatId": chat_id, "runId": run_id, "toolId": tool_id, "payload": payload,
            "updatedAt": ts}


def user(message: str, *, ts: int) -> dict[str, Any]:
    return {"role": "user", "content": text(message), "ts": ts}


def reasoning(value: str, *, rid: str, msg_id: str, ts: int) -> dict[str, Any]:
    return {"role": "assistant", "reasoning_content": text(value), "_reasoningId": rid, "_msgId": msg_id,
            "ts": ts, "_timing": {"firstTokenMs": 5}, "_usage": {"prompt_tokens": 3}}


def content(value: str, *, cid: str, msg_id: str, ts: int) -> dict[str, Any]:
    return {"role": "assistant", "content": text(value), "_contentId": cid, "_msgId": msg_id, "ts": ts}


def tool_call(call_id: str, name: str, args: dict[str, Any], *, msg_id: str, ts: int, kind: str = "backend",
              event_id: str | None = None, tool_type: str | None = None, tool_key: str | None = None,
              task_id: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "tool_calls": [{"id": call_id, "type": "function",
                        "function": {"name": name, "arguments": json.dumps(args)}}],
        "_msgId": msg_id, "ts": ts, "_toolKind": kind,
    }
    message["_actionId" if kind == "action" else "_toolId"] = event_id or call_id
    if tool_type is not None:
        message["_toolType"] = tool_type
        message["_toolKey"] = tool_key
    if task_id is not None:
        message["_taskId"] = task_id
    return message


def tool_result(call_id: str, name: str, result: Any, *, ts: int, kind: str = "backend",
                event_id: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "tool", "name": name, "tool_call_id": call_id,
                               "content": text(json.dumps(result)), "ts": ts}
    message["_actionId" if kind == "action" else "_toolId"] = event_id or call_id
    return message
