"""replay_messages: the window of k runs and the model-facing shape (SPEC §8)."""

from __future__ import annotations

from typing import Any

from app.memory import read_plan, replay_messages

from .sample_lines import content, query_line, reasoning, run_line, step_line, text, tool_call, tool_result, user


def simple_run(run_id: str, question: str, answer: str, ts: int) -> list[dict[str, Any]]:
    return [
        query_line(run_id, question, ts=ts),
        step_line(run_id, 1, [user(question, ts=ts),
                              reasoning("hmm", rid=f"{run_id}_r_1", msg_id=f"m_{run_id}", ts=ts + 1),
                              content(answer, cid=f"{run_id}_c_1", msg_id=f"m_{run_id}", ts=ts + 2)], ts=ts + 2),
        run_line(run_id, ts=ts + 3),
    ]


def test_window_of_k_runs() -> None:
    lines = simple_run("r1", "q1", "a1", 100) + simple_run("r2", "q2", "a2", 200) + simple_run("r3", "q3", "a3", 300)
    assert replay_messages(lines, 2) == [
        {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"},
        {"role": "user", "content": "q3"}, {"role": "assistant", "content": "a3"},
    ]
    assert len(replay_messages(lines, 20)) == 6
    assert replay_messages(lines, 0) == []


def test_reasoning_is_never_replayed_and_extension_fields_are_stripped() -> None:
    lines = simple_run("r1", "q1", "a1", 100)
    lines[1]["messages"].insert(0, {"role": "system", "content": text("you are a bot"), "ts": 99})
    replayed = replay_messages(lines, 5)
    assert replayed == [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"}]
    for message in replayed:
        assert "reasoning_content" not in message and "ts" not in message
        assert not [key for key in message if key.startswith("_")]


def _tool_run(order: str) -> list[dict[str, Any]]:
    call_a = tool_call("call_a", "weather", {"city": "Paris"}, msg_id="m_1", ts=3)
    call_b = tool_call("call_b", "weather", {"city": "Rome"}, msg_id="m_1", ts=4)
    result_a = tool_result("call_a", "weather", {"temp": 20}, ts=5)
    result_b = tool_result("call_b", "weather", {"temp": 25}, ts=6)
    calls = [call_a, call_b, result_a, result_b] if order == "grouped" else [call_a, result_a, call_b, result_b]
    return [
        query_line("r1", "weather?", ts=1),
        step_line("r1", 1, [user("weather?", ts=1), reasoning("two cities", rid="r1_r_1", msg_id="m_1", ts=2),
                            content("Checking both.", cid="r1_c_1", msg_id="m_1", ts=2), *calls], ts=6),
        step_line("r1", 2, [content("Paris 20, Rome 25.", cid="r1_c_2", msg_id="m_2", ts=7)], ts=7),
        run_line("r1", ts=8),
    ]


EXPECTED_TOOL_REPLAY = [
    {"role": "user", "content": "weather?"},
    {"role": "assistant", "content": "Checking both.", "tool_calls": [
        {"id": "call_a", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_b", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Rome"}'}},
    ]},
    {"role": "tool", "tool_call_id": "call_a", "name": "weather", "content": '{"temp": 20}'},
    {"role": "tool", "tool_call_id": "call_b", "name": "weather", "content": '{"temp": 25}'},
    {"role": "assistant", "content": "Paris 20, Rome 25."},
]


def test_parallel_tool_calls_are_merged() -> None:
    assert replay_messages(_tool_run("grouped"), 5) == EXPECTED_TOOL_REPLAY


def test_parallel_tool_calls_recorded_call_result_call_result_are_merged_too() -> None:
    assert replay_messages(_tool_run("interleaved"), 5) == EXPECTED_TOOL_REPLAY


def test_orphan_tool_calls_and_results_are_dropped() -> None:
    lines = [
        query_line("r1", "do it", ts=1),
        step_line("r1", 1, [
            user("do it", ts=1),
            tool_result("call_ghost", "x", "lost", ts=2),  # a result before any call
            content("On it.", cid="r1_c_1", msg_id="m_1", ts=3),
            tool_call("call_ok", "a", {}, msg_id="m_1", ts=3),
            tool_call("call_cut", "b", {}, msg_id="m_1", ts=3),  # cancelled before its result
            tool_result("call_ok", "a", "fine", ts=4),
            tool_result("call_other", "c", "stray", ts=4),  # answers no call of this turn
        ], ts=4),
        run_line("r1", "cancel", ts=5),
        query_line("r2", "and now?", ts=10),
        step_line("r2", 1, [user("and now?", ts=10), tool_call("call_x", "a", {}, msg_id="m_2", ts=11)], ts=11),
        # r2 crashed: no result, no run line
    ]
    assert replay_messages(lines, 5) == [
        {"role": "user", "content": "do it"},
        {"role": "assistant", "content": "On it.", "tool_calls": [
            {"id": "call_ok", "type": "function", "function": {"name": "a", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_ok", "name": "a", "content": '"fine"'},
        {"role": "user", "content": "and now?"},
    ]


def test_two_calls_of_one_turn_that_share_an_id_each_keep_their_own_result() -> None:
    """Chats written before the engine renamed a repeated call id: each result pairs with its call
    in order (both used to get the first result, and the second was lost)."""
    lines = [
        query_line("r1", "two", ts=1),
        step_line("r1", 1, [
            user("two", ts=1),
            tool_call("dup", "a", {"city": "Paris"}, msg_id="m_1", ts=2),
            tool_call("dup", "a", {"city": "Tokyo"}, msg_id="m_1", ts=2),
            tool_result("dup", "a", "PARIS", ts=3),
            tool_result("dup", "a", "TOKYO", ts=4),
        ], ts=4),
        run_line("r1", "complete", ts=5),
    ]
    replayed = replay_messages(lines, 5)
    assert [len(m.get("tool_calls") or ()) for m in replayed] == [0, 2, 0, 0]
    assert [m["content"] for m in replayed if m["role"] == "tool"] == ['"PARIS"', '"TOKYO"']


def test_run_that_crashed_before_its_first_step_replays_its_question() -> None:
    lines = [query_line("r1", "are you there?", ts=1)] + simple_run("r2", "hello?", "yes", 10)
    assert replay_messages(lines, 5) == [
        {"role": "user", "content": "are you there?"},
        {"role": "user", "content": "hello?"},
        {"role": "assistant", "content": "yes"},
    ]


def test_plan_lines_are_replayed_as_messages_only() -> None:
    plan = {"planId": "p1", "tasks": [{"taskId": "t1", "description": "look", "status": "init"}]}
    lines = [query_line("r1", "plan it", ts=1),
             step_line("r1", 1, [user("plan it", ts=1)], ts=1, stage="plan", plan=plan, system="sys"),
             run_line("r1", ts=2)]
    assert replay_messages(lines, 1) == [{"role": "user", "content": "plan it"}]


def test_legacy_plan_spellings_are_read() -> None:
    current = {"plan": {"planId": "p1", "tasks": [{"taskId": "t1", "description": "a", "status": "completed"}]}}
    legacy = {"planSnapshot": {"planId": "p1", "plan": [{"taskId": "t1", "description": "a", "status": "in_progress"},
                                                         {"taskId": "t2", "description": "b"}]}}
    assert read_plan(current) == {"planId": "p1",
                                  "tasks": [{"taskId": "t1", "description": "a", "status": "completed"}]}
    assert read_plan(legacy) == {"planId": "p1", "tasks": [
        {"taskId": "t1", "description": "a", "status": "init"},
        {"taskId": "t2", "description": "b", "status": "init"},
    ]}
    assert read_plan({"messages": []}) is None
