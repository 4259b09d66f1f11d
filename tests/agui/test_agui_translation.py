"""``app.adapters.agui`` as the pure translation it is: inputs → turns, typed events → AG-UI events."""

from __future__ import annotations

from typing import Any

import pytest
from ag_ui.core import RunAgentInput, RunErrorEvent

from app.adapters.agui import AguiTranslator, ToolAnswer, ToolAnswers, UserTurn, read_turn, resume_after
from app.contract import events as ev
from app.contract.events import EventNumberer
from app.errors import RequestError


def _input(*messages: dict[str, Any]) -> RunAgentInput:
    return RunAgentInput.model_validate({"threadId": "t", "runId": "r", "messages": list(messages)})


def test_trailing_tool_messages_are_the_answers_json_parsed_when_json() -> None:
    turn = read_turn(_input(
        {"id": "u", "role": "user", "content": "go"},
        {"id": "a", "role": "assistant", "toolCalls": [
            {"id": "t_1", "type": "function", "function": {"name": "confirm_dialog", "arguments": "{}"}},
            {"id": "t_2", "type": "function", "function": {"name": "confirm_dialog", "arguments": "{}"}}]},
        {"id": "m1", "role": "tool", "toolCallId": "t_1", "content": '{"selected": "Rome"}'},
        {"id": "m2", "role": "tool", "toolCallId": "t_2", "content": [{"type": "text", "text": "just text"}]},
        {"id": "m3", "role": "tool", "toolCallId": "t_3", "content": "", "error": "the dialog crashed"},
    ))
    assert turn == ToolAnswers((ToolAnswer("t_1", {"selected": "Rome"}), ToolAnswer("t_2", "just text"),
                                ToolAnswer("t_3", {"error": "the dialog crashed"})))


def test_a_user_turn_keeps_the_earlier_text_messages_as_history() -> None:
    turn = read_turn(_input(
        {"id": "d", "role": "developer", "content": "Be brief."},
        {"id": "u0", "role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"id": "a0", "role": "assistant", "toolCalls": [
            {"id": "t_1", "type": "function", "function": {"name": "x", "arguments": "{}"}}]},
        {"id": "m0", "role": "tool", "toolCallId": "t_1", "content": "done"},
        {"id": "u1", "role": "user", "content": "now?"},
    ))
    assert turn == UserTurn("now?", [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "a\nb"}])


@pytest.mark.parametrize("messages", [[], [{"id": "s", "role": "system", "content": "x"}],
                                      [{"id": "u", "role": "user", "content": [{"type": "text", "text": " "}]}]],
                         ids=["none", "last-is-system", "blank-user"])
def test_an_input_without_a_query_or_answers_is_a_request_error(messages: list[dict[str, Any]]) -> None:
    with pytest.raises(RequestError):
        read_turn(_input(*messages))


def _log(*events: ev.Event) -> list[ev.Stamped]:
    numberer = EventNumberer()
    return [numberer.next(event) for event in events]


def test_resume_after_finds_the_pause_of_the_answered_call_only() -> None:
    log = _log(
        ev.RunStart(run_id="run_1", chat_id="t"),
        ev.TaskStart(task_id="task_1", run_id="run_1"),
        ev.ToolStart(tool_id="t_front", run_id="run_1", tool_name="confirm_dialog", tool_type="html"),
        ev.ToolStart(tool_id="c_back", run_id="run_1", tool_name="mock_city_weather"),
        ev.ToolEnd(tool_id="t_front"),
        ev.ToolEnd(tool_id="c_back"),
    )
    assert resume_after("t", log, ["t_other"]) is None
    found = resume_after("t", log, ["t_front"])
    assert found is not None
    translator, after = found
    assert after == 6  # after the turn's last tool.end, not the frontend call's own
    assert translator.pending_tool_calls == ["t_front"]
    # the continuation starts a new AG-UI run and reopens the task the pause closed
    assert [e.type.value for e in translator.begin("r2")] == ["RUN_STARTED", "STEP_STARTED"]


def test_a_run_error_is_run_error_with_the_gateway_code() -> None:
    translator = AguiTranslator("t")
    [error] = translator.translate(_log(ev.RunError(run_id="run_1", error={"code": "budget_run_timeout",
                                                                          "message": "too slow"}))[0])
    assert isinstance(error, RunErrorEvent)
    assert (error.code, error.message) == ("budget_run_timeout", "too slow")
    assert translator.ended
