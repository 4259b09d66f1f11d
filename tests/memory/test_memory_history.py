"""build_history: the events of GET /api/ap/chat rebuilt from the file (SPEC §8)."""

from __future__ import annotations

from typing import Any

from app.memory import build_history

from .sample_lines import (
    CHAT,
    content,
    query_line,
    reasoning,
    run_line,
    step_line,
    submit_line,
    tool_call,
    tool_result,
    user,
)

FRONTEND_ID = "t_0a1b2c3d"
ACTION_ID = "a_11223344"
PLAN = {"planId": "p1", "tasks": [{"taskId": "t1", "description": "check weather", "status": "init"},
                                  {"taskId": "t2", "description": "confirm", "status": "init"}]}
PLAN_DONE = {"planId": "p1", "tasks": [{"taskId": "t1", "description": "check weather", "status": "completed"},
                                       {"taskId": "t2", "description": "confirm", "status": "init"}]}


def full_chat() -> list[dict[str, Any]]:
    """Run r1 uses everything (reasoning, content, backend/frontend tool, submit, action, plan);
    run r2 crashed after its first step."""
    return [
        query_line("r1", "Plan my trip to Paris", ts=1000, references=[{"id": "doc1"}]),
        step_line("r1", 1, [
            user("Plan my trip to Paris", ts=1000),
            reasoning("need a plan", rid="r1_r_1", msg_id="m_00000001", ts=1001),
            tool_call("call_p", "_plan_add_tasks_", {"tasks": []}, msg_id="m_00000001", ts=1002),
            tool_result("call_p", "_plan_add_tasks_", {"planId": "p1"}, ts=1003),
        ], ts=1003, stage="plan", plan=PLAN, system="plan prompt"),
        step_line("r1", 2, [
            content("Looking it up.", cid="r1_c_1", msg_id="m_00000002", ts=1004),
            tool_call("call_w", "mock_city_weather", {"city": "Paris"}, msg_id="m_00000002", ts=1005, task_id="t1"),
            tool_result("call_w", "mock_city_weather", {"tempC": 21}, ts=1006),
        ], ts=1006, stage="execute", task_id="t1", plan=PLAN, system="execute prompt"),
        step_line("r1", 3, [
            tool_call("call_f", "confirm_dialog", {"question": "Book?"}, msg_id="m_00000003", ts=1007,
                      kind="frontend", event_id=FRONTEND_ID, tool_type="html", tool_key="confirm_dialog"),
        ], ts=1007, stage="execute", task_id="t1", plan=PLAN),
        submit_line("r1", FRONTEND_ID, {"confirmed": True}, ts=1008),
        step_line("r1", 4, [
            tool_result("call_f", "confirm_dialog", {"confirmed": True}, ts=1009, kind="frontend",
                        event_id=FRONTEND_ID),
        ], ts=1009, stage="execute", task_id="t1", plan=PLAN),
        step_line("r1", 5, [
            tool_call("call_s", "switch_theme", {"theme": "dark"}, msg_id="m_00000004", ts=1010, kind="action",
                      event_id=ACTION_ID),
            tool_call("call_u", "_plan_update_task_", {"taskId": "t1", "status": "completed"},
                      msg_id="m_00000004", ts=1010),
            tool_result("call_s", "switch_theme", "OK", ts=1011, kind="action", event_id=ACTION_ID),
            tool_result("call_u", "_plan_update_task_", {"ok": True}, ts=1012),
        ], ts=1012, stage="execute", task_id="t1", plan=PLAN_DONE),
        step_line("r1", 6, [content("All set.", cid="r1_c_2", msg_id="m_00000005", ts=1013)], ts=1013,
                  stage="summary", plan=PLAN_DONE, system="summary prompt"),
        {**run_line("r1", ts=1014, finish_reason="stop"), "usage": {"total_tokens": 42}, "points": 3},
        query_line("r2", "And Rome?", ts=2000, references=[{"id": "doc2"}]),
        step_line("r2", 1, [user("And Rome?", ts=2000),
                            reasoning("Rome...", rid="r2_r_1", msg_id="m_00000006", ts=2001)], ts=2001),
    ]


def test_event_order_seq_and_fields() -> None:
    history = build_history(CHAT, full_chat(), include_raw=False)
    events = history["events"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [(e["type"], e["timestamp"]) for e in events] == [
        ("request.query", 1000), ("chat.start", 1000), ("run.start", 1000),
        ("reasoning.snapshot", 1001), ("tool.snapshot", 1002), ("tool.result", 1003), ("plan.create", 1003),
        ("content.snapshot", 1004), ("tool.snapshot", 1005), ("tool.result", 1006),
        ("tool.snapshot", 1007), ("request.submit", 1008), ("tool.result", 1009),
        ("action.snapshot", 1010), ("tool.snapshot", 1010), ("action.result", 1011), ("tool.result", 1012),
        ("plan.update", 1012), ("content.snapshot", 1013), ("run.complete", 1014),
        ("request.query", 2000), ("run.start", 2000), ("reasoning.snapshot", 2001), ("run.error", 2001),
    ]
    by_seq = {e["seq"]: {k: v for k, v in e.items() if k not in ("seq", "timestamp")} for e in events}
    assert by_seq[1] == {"type": "request.query", "requestId": "req_r1", "chatId": CHAT, "role": "user",
                         "message": "Plan my trip to Paris", "agentKey": "demo", "references": [{"id": "doc1"}],
                         "params": {}, "stream": True}
    assert by_seq[2] == {"type": "chat.start", "chatId": CHAT, "chatName": "Plan my trip to Paris"}
    assert by_seq[3] == {"type": "run.start", "runId": "r1", "chatId": CHAT, "agentKey": "demo"}
    assert by_seq[4] == {"type": "reasoning.snapshot", "reasoningId": "r1_r_1", "text": "need a plan"}
    assert by_seq[6] == {"type": "tool.result", "toolId": "call_p", "result": {"planId": "p1"}, "runId": "r1"}
    assert by_seq[7] == {"type": "plan.create", "planId": "p1", "chatId": CHAT, "plan": PLAN["tasks"]}
    assert by_seq[8] == {"type": "content.snapshot", "contentId": "r1_c_1", "text": "Looking it up.", "taskId": "t1"}
    assert by_seq[9] == {"type": "tool.snapshot", "toolId": "call_w", "toolName": "mock_city_weather",
                         "taskId": "t1", "arguments": '{"city": "Paris"}'}
    assert by_seq[11] == {"type": "tool.snapshot", "toolId": FRONTEND_ID, "toolName": "confirm_dialog",
                          "taskId": "t1", "toolType": "html", "toolKey": "confirm_dialog",
                          "arguments": '{"question": "Book?"}'}
    assert by_seq[12] == {"type": "request.submit", "requestId": "req_r1", "chatId": CHAT, "runId": "r1",
                          "toolId": FRONTEND_ID, "payload": {"confirmed": True}}
    assert by_seq[13] == {"type": "tool.result", "toolId": FRONTEND_ID, "result": {"confirmed": True}, "runId": "r1"}
    assert by_seq[14] == {"type": "action.snapshot", "actionId": ACTION_ID, "actionName": "switch_theme",
                          "taskId": "t1", "arguments": '{"theme": "dark"}'}
    assert by_seq[16] == {"type": "action.result", "actionId": ACTION_ID, "result": "OK", "runId": "r1"}
    assert by_seq[18] == {"type": "plan.update", "planId": "p1", "chatId": CHAT, "plan": PLAN_DONE["tasks"]}
    assert by_seq[20] == {"type": "run.complete", "runId": "r1", "finishReason": "stop",
                          "usage": {"total_tokens": 42}, "durationMs": 14}  # SPEC §20: query line to run line
    assert by_seq[24] == {"type": "run.error", "runId": "r2",
                          "error": {"code": "interrupted", "message": by_seq[24]["error"]["message"]}}
    assert "rawEvent" not in str(events)
    assert history["chatId"] == CHAT and history["chatName"] == "Plan my trip to Paris"
    assert history["references"] == [{"id": "doc1"}, {"id": "doc2"}]
    assert "rawMessages" not in history


def test_raw_messages_carry_their_run_id() -> None:
    lines = full_chat()
    history = build_history(CHAT, lines, include_raw=True)
    stored = [m for line in lines if line["_type"] == "step" for m in line["messages"]]
    assert [{k: v for k, v in m.items() if k != "runId"} for m in history["rawMessages"]] == stored
    assert {m["runId"] for m in history["rawMessages"]} == {"r1", "r2"}
    assert history["rawMessages"][-1]["runId"] == "r2"


def test_a_run_still_in_progress_gets_no_terminal_event() -> None:
    events = build_history(CHAT, full_chat(), include_raw=False, running={"r2"})["events"]
    assert events[-1]["type"] == "reasoning.snapshot"


def test_cancelled_and_failed_runs() -> None:
    error = {"code": "model_calls", "message": "budget exhausted"}
    lines = [
        query_line("r1", "one", ts=1), run_line("r1", "cancel", ts=2),
        query_line("r2", "two", ts=3), run_line("r2", "error", ts=4, error=error),
    ]
    events = build_history(CHAT, lines, include_raw=False)["events"]
    assert [e["type"] for e in events] == ["request.query", "chat.start", "run.start", "run.cancel",
                                           "request.query", "run.start", "run.error"]
    assert events[-1]["error"] == error and events[3] == {"type": "run.cancel", "runId": "r1", "seq": 4,
                                                          "timestamp": 2}


def test_submit_line_written_before_the_step_of_its_tool_stays_before_the_result() -> None:
    lines = [
        query_line("r1", "ask me", ts=1),
        submit_line("r1", FRONTEND_ID, {"answer": 42}, ts=5),
        step_line("r1", 1, [
            user("ask me", ts=1),
            tool_call("call_f", "ask", {}, msg_id="m_1", ts=2, kind="frontend", event_id=FRONTEND_ID,
                      tool_type="html", tool_key="ask"),
            tool_result("call_f", "ask", {"answer": 42}, ts=6, kind="frontend", event_id=FRONTEND_ID),
        ], ts=6),
        run_line("r1", ts=7),
    ]
    types = [e["type"] for e in build_history(CHAT, lines, include_raw=False)["events"]]
    assert types == ["request.query", "chat.start", "run.start", "tool.snapshot", "request.submit", "tool.result",
                     "run.complete"]


def test_legacy_plan_snapshot_and_tool_ids_on_the_call() -> None:
    legacy_call = {"role": "assistant", "ts": 2, "_msgId": "m_1", "tool_calls": [
        {"id": "call_1", "type": "function", "_actionId": "action_x",
         "function": {"name": "fireworks", "arguments": "{}"}}]}
    lines = [
        query_line("r1", "old file", ts=1),
        {**step_line("r1", 1, [user("old file", ts=1), legacy_call,
                               {"role": "tool", "name": "fireworks", "tool_call_id": "call_1",
                                "content": [{"type": "text", "text": "OK"}], "ts": 3}], ts=3),
         "planSnapshot": {"planId": "p9", "plan": [{"taskId": "t1", "description": "d", "status": "in_progress"}]}},
        run_line("r1", ts=4),
    ]
    events = build_history(CHAT, lines, include_raw=False)["events"]
    assert [e["type"] for e in events] == ["request.query", "chat.start", "run.start", "action.snapshot",
                                           "action.result", "plan.create", "run.complete"]
    assert events[3]["actionId"] == "action_x" and events[4] == {
        "type": "action.result", "actionId": "action_x", "result": "OK", "runId": "r1", "seq": 5, "timestamp": 3}
    assert events[5]["plan"] == [{"taskId": "t1", "description": "d", "status": "init"}]


def test_empty_chat() -> None:
    assert build_history(CHAT, [], include_raw=True) == {
        "chatId": CHAT, "chatName": "", "events": [], "references": [], "artifact": {"items": []},
        "rawMessages": []}
