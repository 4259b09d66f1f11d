"""AG-UI ↔ the run contract (SPEC §17 "AG-UI") — a pure translation.

No web framework here: the route (``app.api.agui_routes``) validates the ``RunAgentInput``,
starts or answers the run and writes what this module returns. Every event is an
``ag_ui.core`` model (the ``ag-ui-protocol`` package), never a hand-written dict.

Request side — ``read_turn(input)`` says what a ``RunAgentInput`` asks for:

* its last message is a ``user`` message → ``UserTurn``: the message's text (string content,
  or its text parts joined with ``\\n``) is the query; the earlier system/developer/user/
  assistant text messages are ``history`` (used only for a thread the gateway does not know
  yet — a stored chat's memory wins);
* its last messages are ``tool`` messages → ``ToolAnswers``: each answers the client tool call
  ``toolCallId`` with its content (parsed as JSON when it is JSON, else the text; a message with
  only an ``error`` answers ``{"error": ...}``);
* anything else is a ``RequestError``.

``tools``, ``context``, ``state`` and ``forwardedProps`` are accepted and not used: the agent's
definition decides its tools and prompts, and frontend tools are the agent's ``.frontend`` tools.

Response side — ``AguiTranslator`` follows one gateway run across one or more AG-UI runs
(a frontend tool splits it: the AG-UI run ends, the gateway run waits, the next input
answers it and a new AG-UI run streams the continuation). One gateway event becomes:

| gateway event | AG-UI events |
|---|---|
| (start of each AG-UI run) | ``RUN_STARTED`` (the client's ``threadId``/``runId``), ``STEP_STARTED`` again for each task left open by a pause |
| ``content.start`` / ``.delta`` / ``.end`` | ``TEXT_MESSAGE_START`` (assistant) / ``TEXT_MESSAGE_CONTENT`` / ``TEXT_MESSAGE_END`` |
| ``reasoning.start`` / ``.delta`` / ``.end`` | ``REASONING_START`` + ``REASONING_MESSAGE_START`` / ``REASONING_MESSAGE_CONTENT`` / ``REASONING_MESSAGE_END`` + ``REASONING_END`` |
| ``tool.start`` / ``.args`` / ``.end`` (and ``action.*``) | ``TOOL_CALL_START`` / ``TOOL_CALL_ARGS`` / ``TOOL_CALL_END`` — the calls of one model turn share one ``parentMessageId`` |
| ``tool.result`` / ``action.result`` | ``TOOL_CALL_RESULT`` (JSON text unless the result is a string); none for a call the client answered itself |
| ``plan.create`` / ``plan.update`` | ``STATE_SNAPSHOT`` ``{...the client's state, "plan": [...]}`` |
| ``task.start`` | ``STEP_STARTED`` (``stepName`` = taskId, ``metadata.description``) |
| ``task.complete`` / ``.fail`` / ``.cancel`` | ``STEP_FINISHED`` (``metadata.status`` completed/failed/cancelled, ``metadata.error``) |
| ``run.complete`` | ``RUN_FINISHED`` (success, ``usage``) |
| ``run.cancel`` | ``RUN_FINISHED`` (cancelled) |
| ``run.error`` | ``RUN_ERROR`` (``message``, ``code``) |
| anything else (``request.query``, ``chat.start``, ``run.start`` with our runId, ``request.submit``, ``action.param``, ``source.snapshot``) | ``RAW`` (``source`` ``agent-gateway``, ``event`` = the gateway's wire event) |

``RUN_FINISHED`` is preceded by the ends of whatever is still open (text, reasoning, tool
calls, steps), as the protocol requires. A frontend tool call pauses the AG-UI run: once the
``tool.end`` events of its model turn are all out (``paused``), ``pause()`` closes the open
steps and finishes the AG-UI run with ``pendingToolCallIds``; ``resume_after`` finds that
point again in the run's log for the input that answers it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError
from ag_ui.core import (
    AssistantMessage,
    BaseEvent,
    DeveloperMessage,
    RawEvent,
    ReasoningEndEvent,
    ReasoningMessageContentEvent,
    ReasoningMessageEndEvent,
    ReasoningMessageStartEvent,
    ReasoningStartEvent,
    RunAgentInput,
    RunErrorEvent,
    RunFinishedCancelledOutcome,
    RunFinishedEvent,
    RunFinishedSuccessOutcome,
    RunStartedEvent,
    StateSnapshotEvent,
    StepFinishedEvent,
    StepStartedEvent,
    SystemMessage,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    TextPart,
    TokenUsage,
    ToolCallArgsEvent,
    ToolCallEndEvent,
    ToolCallResultEvent,
    ToolCallStartEvent,
    ToolMessage,
    UserMessage,
)
from ag_ui.core.version import PROTOCOL_VERSION

from app.contract import events as ev
from app.contract.bodies import QueryRequest
from app.contract.events import Stamped, now_ms
from app.errors import RequestError, describe_validation_error

#: ``RawEvent.source`` of the gateway events AG-UI has no event for
RAW_SOURCE = "agent-gateway"
_TASK_STATUS = {ev.TaskComplete: "completed", ev.TaskFail: "failed", ev.TaskCancel: "cancelled"}


# ---------------------------------------------------------------------------------- request


@dataclass(frozen=True, slots=True)
class UserTurn:
    """A new query: ``text`` is the last user message; ``history`` the earlier text messages."""

    text: str
    history: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class ToolAnswer:
    tool_call_id: str
    params: Any


@dataclass(frozen=True, slots=True)
class ToolAnswers:
    """The trailing ``tool`` messages: answers to client tool calls of a paused run, in order."""

    answers: tuple[ToolAnswer, ...]

    @property
    def tool_call_ids(self) -> list[str]:
        return [answer.tool_call_id for answer in self.answers]


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part.text for part in content if isinstance(part, TextPart))
    return ""


def _answer_params(message: ToolMessage) -> Any:
    text = _text_of(message.content)
    if message.error and not text.strip():  # the client reports that its tool failed
        return {"error": message.error}
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def read_turn(body: RunAgentInput) -> UserTurn | ToolAnswers:
    """What the input asks for (see the module docstring); ``RequestError`` when it asks for nothing."""
    messages = list(body.messages)
    if not messages:
        raise RequestError("messages is empty: the last message must be the user's query or tool results")
    last = messages[-1]
    if isinstance(last, ToolMessage):
        answers: list[ToolAnswer] = []
        for message in reversed(messages):
            if not isinstance(message, ToolMessage):
                break
            answers.append(ToolAnswer(message.tool_call_id, _answer_params(message)))
        return ToolAnswers(tuple(reversed(answers)))
    if not isinstance(last, UserMessage):
        raise RequestError(f"the last message must be a user message (the query) or tool messages "
                           f"(results of client tool calls), got role {last.role!r}")
    text = _text_of(last.content)
    if not text.strip():
        raise RequestError("the last user message has no text")
    history: list[dict[str, Any]] = []
    for message in messages[:-1]:
        if isinstance(message, (SystemMessage, DeveloperMessage)):
            role = "system"
        elif isinstance(message, (UserMessage, AssistantMessage)):
            role = message.role
        else:  # tool, activity and reasoning messages are the client's record, not conversation text
            continue
        earlier = _text_of(message.content)
        if earlier.strip():
            history.append({"role": role, "content": earlier})
    return UserTurn(text, history)


def query_of(agent_key: str, chat_id: str | None, text: str) -> QueryRequest:
    """The run's query. ``onDisconnect`` is ``continue``: the route itself cancels a run whose
    client went away mid-stream, and must not when it ends the response on a client tool call."""
    try:
        return QueryRequest.model_validate(
            {"agentKey": agent_key, "chatId": chat_id, "message": text, "onDisconnect": "continue"})
    except ValidationError as exc:
        raise RequestError(f"invalid request: {describe_validation_error(exc, 'messages')}") from exc


# --------------------------------------------------------------------------------- response


def _result_text(result: Any) -> str:
    return result if isinstance(result, str) else orjson.dumps(result, option=orjson.OPT_NON_STR_KEYS).decode()


def _usage(usage: dict[str, Any] | None) -> list[TokenUsage] | None:
    if not usage:
        return None
    return [TokenUsage(input_tokens=int(usage.get("promptTokens") or 0),
                       output_tokens=int(usage.get("completionTokens") or 0),
                       total_tokens=int(usage.get("totalTokens") or 0))]


class AguiTranslator:
    """One gateway run as AG-UI events, for one thread (see the module docstring).

    Call ``begin(run_id)`` at the start of each AG-UI run, ``translate(stamped)`` for each
    gateway event in log order; when ``paused`` turns true, send ``pause()`` and end the
    response (the gateway run goes on waiting). ``ended`` is true after the terminal event.
    """

    def __init__(self, thread_id: str, state: Any = None) -> None:
        self.thread_id = thread_id
        #: the client's own state (``RunAgentInput.state``): a snapshot replaces the whole state,
        #: so the plan's snapshot carries the client's keys too
        self.state: dict[str, Any] = dict(state) if isinstance(state, dict) else {}
        self.run_id = ""
        self.ended = False
        #: text and reasoning messages started and not ended
        self._texts: dict[str, None] = {}
        self._reasonings: dict[str, None] = {}
        #: tool/action calls started and not ended, in start order
        self._calls: dict[str, None] = {}
        #: tasks started and not finished, in start order
        self._steps: dict[str, None] = {}
        #: frontend calls whose tool.start we saw (the client answers them)
        self._client_calls: set[str] = set()
        #: frontend calls of the current model turn that ended: the client's to answer
        self._pending: list[str] = []
        #: calls the client answered itself: their results are its own tool messages
        self._answered: set[str] = set()
        #: the assistant message the current model turn's tool calls belong to
        self._turn_message: str | None = None

    # -- state --------------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        """A model turn that called frontend tools has ended its calls: the run now waits for the client."""
        return bool(self._pending) and not self._calls

    @property
    def pending_tool_calls(self) -> list[str]:
        return list(self._pending)

    def answered(self, tool_call_ids: Iterable[str]) -> None:
        """The client answered these calls (their ``tool.result`` is not echoed); the pause is over."""
        self._answered.update(tool_call_ids)
        self._pending.clear()

    # -- AG-UI run boundaries -----------------------------------------------------------

    def begin(self, run_id: str) -> list[BaseEvent]:
        """``RUN_STARTED`` for the client's ``run_id``, then the steps a pause left open."""
        self.run_id = run_id
        self._pending.clear()
        timestamp = now_ms()
        opened: list[BaseEvent] = [RunStartedEvent(thread_id=self.thread_id, run_id=run_id,
                                                   protocol_version=PROTOCOL_VERSION, timestamp=timestamp)]
        opened += [StepStartedEvent(step_name=step, timestamp=timestamp) for step in self._steps]
        return opened

    def pause(self) -> list[BaseEvent]:
        """End the AG-UI run on the client's tool calls (open steps close; ``begin`` reopens them)."""
        assert self.paused, "pause() without a pending client tool call"
        timestamp = now_ms()
        closing: list[BaseEvent] = [
            StepFinishedEvent(step_name=step, metadata={"status": "paused"}, timestamp=timestamp)
            for step in self._steps
        ]
        closing.append(RunFinishedEvent(
            thread_id=self.thread_id, run_id=self.run_id, timestamp=timestamp,
            outcome=RunFinishedSuccessOutcome(pending_tool_call_ids=list(self._pending)),
        ))
        return closing

    def error(self, message: str, code: str) -> list[BaseEvent]:
        """``RUN_ERROR`` for a failure of the AG-UI run itself (not of the gateway run)."""
        self.ended = True
        return [RunErrorEvent(message=message, code=code, timestamp=now_ms())]

    def _close_open(self, timestamp: int) -> list[BaseEvent]:
        closing: list[BaseEvent] = []
        for text_id in self._texts:
            closing.append(TextMessageEndEvent(message_id=text_id, timestamp=timestamp))
        for reasoning_id in self._reasonings:
            closing += [ReasoningMessageEndEvent(message_id=reasoning_id, timestamp=timestamp),
                        ReasoningEndEvent(message_id=reasoning_id, timestamp=timestamp)]
        for call_id in self._calls:
            closing.append(ToolCallEndEvent(tool_call_id=call_id, timestamp=timestamp))
        for step in self._steps:
            closing.append(StepFinishedEvent(step_name=step, metadata={"status": "cancelled"}, timestamp=timestamp))
        self._texts.clear()
        self._reasonings.clear()
        self._calls.clear()
        self._steps.clear()
        return closing

    # -- one gateway event --------------------------------------------------------------

    def translate(self, stamped: Stamped) -> list[BaseEvent]:
        """The AG-UI events for one gateway event (often one, sometimes two or none)."""
        at = stamped.timestamp
        match stamped.event:
            case ev.ContentStart(content_id=message_id):
                self._texts[message_id] = None
                self._turn_message = message_id
                return [TextMessageStartEvent(message_id=message_id, role="assistant", timestamp=at)]
            case ev.ContentDeltaEvent(content_id=message_id, delta=delta):
                return [TextMessageContentEvent(message_id=message_id, delta=delta, timestamp=at)]
            case ev.ContentEnd(content_id=message_id):
                self._texts.pop(message_id, None)
                return [TextMessageEndEvent(message_id=message_id, timestamp=at)]
            case ev.ReasoningStart(reasoning_id=reasoning_id):
                self._reasonings[reasoning_id] = None
                return [ReasoningStartEvent(message_id=reasoning_id, timestamp=at),
                        ReasoningMessageStartEvent(message_id=reasoning_id, role="reasoning", timestamp=at)]
            case ev.ReasoningDeltaEvent(reasoning_id=reasoning_id, delta=delta):
                return [ReasoningMessageContentEvent(message_id=reasoning_id, delta=delta, timestamp=at)]
            case ev.ReasoningEnd(reasoning_id=reasoning_id):
                self._reasonings.pop(reasoning_id, None)
                return [ReasoningMessageEndEvent(message_id=reasoning_id, timestamp=at),
                        ReasoningEndEvent(message_id=reasoning_id, timestamp=at)]
            case ev.ToolStart(tool_id=call_id, tool_name=name, tool_type=tool_type):
                if tool_type is not None:  # only frontend tools carry a toolType
                    self._client_calls.add(call_id)
                return [self._call_start(call_id, name or "", at)]
            case ev.ActionStart(action_id=call_id, action_name=name):
                return [self._call_start(call_id, name or "", at)]
            case ev.ToolArgs(tool_id=call_id, delta=delta) | ev.ActionArgs(action_id=call_id, delta=delta):
                return [ToolCallArgsEvent(tool_call_id=call_id, delta=delta, timestamp=at)]
            case ev.ToolEnd(tool_id=call_id) | ev.ActionEnd(action_id=call_id):
                self._calls.pop(call_id, None)
                if call_id in self._client_calls:
                    self._pending.append(call_id)
                return [ToolCallEndEvent(tool_call_id=call_id, timestamp=at)]
            case ev.ToolResult(tool_id=call_id, result=result) | ev.ActionResult(action_id=call_id, result=result):
                self._turn_message = None  # the next model turn is a new assistant message
                if call_id in self._answered:
                    return []
                return [ToolCallResultEvent(message_id=f"{call_id}-result", tool_call_id=call_id,
                                            content=_result_text(result), role="tool", timestamp=at)]
            case ev.PlanCreate(plan=plan) | ev.PlanUpdate(plan=plan):
                return [StateSnapshotEvent(snapshot={**self.state, "plan": plan}, timestamp=at)]
            case ev.TaskStart(task_id=task_id, description=description):
                self._steps[task_id] = None
                self._turn_message = None
                described = {"description": description} if description is not None else None
                return [StepStartedEvent(step_name=task_id, metadata=described, timestamp=at)]
            case ev.TaskComplete(task_id=task_id) | ev.TaskFail(task_id=task_id) | ev.TaskCancel(task_id=task_id):
                self._steps.pop(task_id, None)
                meta: dict[str, Any] = {"status": _TASK_STATUS[type(stamped.event)]}
                if isinstance(stamped.event, ev.TaskFail) and stamped.event.error is not None:
                    meta["error"] = stamped.event.error
                return [StepFinishedEvent(step_name=task_id, metadata=meta, timestamp=at)]
            case ev.RunComplete(usage=usage):
                self.ended = True
                return [*self._close_open(at), RunFinishedEvent(
                    thread_id=self.thread_id, run_id=self.run_id, outcome=RunFinishedSuccessOutcome(),
                    usage=_usage(usage), timestamp=at)]
            case ev.RunCancel():
                self.ended = True
                return [*self._close_open(at), RunFinishedEvent(
                    thread_id=self.thread_id, run_id=self.run_id, outcome=RunFinishedCancelledOutcome(),
                    timestamp=at)]
            case ev.RunError(error=error):
                self.ended = True
                code = error.get("code")
                return [RunErrorEvent(message=str(error.get("message") or "the run failed"),
                                      code=str(code) if code is not None else None, timestamp=at)]
            case _:
                return [RawEvent(event=stamped.wire(), source=RAW_SOURCE, timestamp=at)]

    def _call_start(self, call_id: str, name: str, at: int) -> ToolCallStartEvent:
        self._calls[call_id] = None
        if self._turn_message is None:
            self._turn_message = call_id
        return ToolCallStartEvent(tool_call_id=call_id, tool_call_name=name, parent_message_id=self._turn_message,
                                  timestamp=at)


def resume_after(thread_id: str, logged: Iterable[Stamped], tool_call_ids: Iterable[str],
                 state: Any = None) -> tuple[AguiTranslator, int] | None:
    """Replay a run's logged events to the pause that waits for one of ``tool_call_ids``.

    Returns the translator in the state it had there (open tasks, client calls) and the
    ``seq`` to stream the continuation after; ``None`` when no pause of the log waits for
    any of them (an unknown call, or not a client tool call of this run).
    """
    wanted = set(tool_call_ids)
    translator = AguiTranslator(thread_id, state)
    for stamped in logged:
        translator.translate(stamped)
        if translator.paused:
            if wanted.intersection(translator.pending_tool_calls):
                return translator, stamped.seq
            translator.answered(translator.pending_tool_calls)  # an earlier pause, answered before
    return None
