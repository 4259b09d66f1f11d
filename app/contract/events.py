"""The run event contract of SPEC §6 as one closed union of dataclasses.

Each class's ``type`` is the wire name; field names are snake_case here and camelCase
on the wire (``tool_id`` → ``toolId``). ``None`` fields are omitted. ``seq`` and
``timestamp`` are stamped by the ``EventNumberer`` of the run's log (``Stamped``), never
by the producer; ``Stamped.wire()`` is the one conversion to the wire, done by the edges. No event has a ``rawEvent`` field.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


@dataclass(slots=True)
class Event:
    type: ClassVar[str] = ""
    _wire_names: ClassVar[tuple[tuple[str, str], ...]] = ()

    def to_wire(self) -> dict[str, Any]:
        """The wire fields of this event (without ``seq``/``timestamp``)."""
        names = type(self)._wire_names
        if not names:
            names = tuple((f.name, _camel(f.name)) for f in dataclasses.fields(self))
            type(self)._wire_names = names
        out: dict[str, Any] = {"type": self.type}
        for attr, wire in names:
            value = getattr(self, attr)
            if value is not None:
                out[wire] = value
        return out


# ---- input and chat -------------------------------------------------------------


@dataclass(slots=True)
class RequestQuery(Event):
    type: ClassVar[str] = "request.query"
    request_id: str
    chat_id: str
    role: str
    message: str
    agent_key: str | None = None
    references: list[Any] | None = None
    params: dict[str, Any] | None = None
    scene: Any | None = None
    stream: bool | None = None


@dataclass(slots=True)
class RequestUpload(Event):
    type: ClassVar[str] = "request.upload"
    request_id: str
    upload: dict[str, Any]
    chat_id: str | None = None


@dataclass(slots=True)
class RequestSubmit(Event):
    type: ClassVar[str] = "request.submit"
    request_id: str
    chat_id: str
    run_id: str
    tool_id: str
    payload: Any
    view_id: str | None = None


@dataclass(slots=True)
class ChatStart(Event):
    type: ClassVar[str] = "chat.start"
    chat_id: str
    chat_name: str | None = None


# ---- plan, run, task ------------------------------------------------------------


@dataclass(slots=True)
class PlanCreate(Event):
    type: ClassVar[str] = "plan.create"
    plan_id: str
    chat_id: str
    plan: list[dict[str, Any]]


@dataclass(slots=True)
class PlanUpdate(Event):
    type: ClassVar[str] = "plan.update"
    plan_id: str
    chat_id: str
    plan: list[dict[str, Any]]


@dataclass(slots=True)
class RunStart(Event):
    type: ClassVar[str] = "run.start"
    run_id: str
    chat_id: str
    agent_key: str | None = None
    #: SPEC §19: the run's W3C trace id (the incoming ``traceparent``'s, else a fresh one)
    trace_id: str | None = None


@dataclass(slots=True)
class RunComplete(Event):
    type: ClassVar[str] = "run.complete"
    run_id: str
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    #: SPEC §20: in history replay (``GET /api/ap/chat``) only — the whole run, in ms
    duration_ms: int | None = None


@dataclass(slots=True)
class RunCancel(Event):
    type: ClassVar[str] = "run.cancel"
    run_id: str


@dataclass(slots=True)
class RunError(Event):
    type: ClassVar[str] = "run.error"
    run_id: str
    error: dict[str, Any]


@dataclass(slots=True)
class TaskStart(Event):
    type: ClassVar[str] = "task.start"
    task_id: str
    run_id: str
    description: str | None = None


@dataclass(slots=True)
class TaskComplete(Event):
    type: ClassVar[str] = "task.complete"
    task_id: str
    run_id: str
    description: str | None = None


@dataclass(slots=True)
class TaskFail(Event):
    type: ClassVar[str] = "task.fail"
    task_id: str
    run_id: str
    description: str | None = None
    error: dict[str, Any] | None = None


@dataclass(slots=True)
class TaskCancel(Event):
    type: ClassVar[str] = "task.cancel"
    task_id: str
    run_id: str
    description: str | None = None


# ---- reasoning and content ------------------------------------------------------


@dataclass(slots=True)
class ReasoningStart(Event):
    type: ClassVar[str] = "reasoning.start"
    reasoning_id: str
    run_id: str
    task_id: str | None = None


@dataclass(slots=True)
class ReasoningDeltaEvent(Event):
    type: ClassVar[str] = "reasoning.delta"
    reasoning_id: str
    delta: str


@dataclass(slots=True)
class ReasoningEnd(Event):
    type: ClassVar[str] = "reasoning.end"
    reasoning_id: str


@dataclass(slots=True)
class ReasoningSnapshot(Event):
    type: ClassVar[str] = "reasoning.snapshot"
    reasoning_id: str
    text: str
    task_id: str | None = None
    #: SPEC §20: in history replay (``GET /api/ap/chat``) only — the model call that wrote it, in ms
    duration_ms: int | None = None


@dataclass(slots=True)
class ContentStart(Event):
    type: ClassVar[str] = "content.start"
    content_id: str
    run_id: str
    task_id: str | None = None


@dataclass(slots=True)
class ContentDeltaEvent(Event):
    type: ClassVar[str] = "content.delta"
    content_id: str
    delta: str


@dataclass(slots=True)
class ContentEnd(Event):
    type: ClassVar[str] = "content.end"
    content_id: str


@dataclass(slots=True)
class ContentSnapshot(Event):
    type: ClassVar[str] = "content.snapshot"
    content_id: str
    text: str
    task_id: str | None = None
    #: SPEC §20: in history replay (``GET /api/ap/chat``) only — the model call that wrote it, in ms
    duration_ms: int | None = None


# ---- tools and actions ----------------------------------------------------------


@dataclass(slots=True)
class ToolStart(Event):
    type: ClassVar[str] = "tool.start"
    tool_id: str
    run_id: str
    task_id: str | None = None
    tool_name: str | None = None
    tool_type: str | None = None
    tool_key: str | None = None
    tool_timeout: int | None = None
    tool_api: str | None = None
    tool_params: dict[str, Any] | None = None
    description: str | None = None


@dataclass(slots=True)
class ToolArgs(Event):
    type: ClassVar[str] = "tool.args"
    tool_id: str
    delta: str
    chunk_index: int | None = None
    #: SPEC §6 / issue 12: clients key tool rows by runId + toolId
    run_id: str | None = None


@dataclass(slots=True)
class ToolEnd(Event):
    type: ClassVar[str] = "tool.end"
    tool_id: str
    #: SPEC §6 / issue 12: clients key tool rows by runId + toolId
    run_id: str | None = None


@dataclass(slots=True)
class ToolResult(Event):
    type: ClassVar[str] = "tool.result"
    tool_id: str
    result: Any
    #: SPEC §6 / issue 12: clients key tool rows by runId + toolId
    run_id: str | None = None
    #: SPEC §20: in history replay (``GET /api/ap/chat``) only — the tool call (a frontend tool: the wait for its submit), in ms
    duration_ms: int | None = None


@dataclass(slots=True)
class ToolSnapshot(Event):
    type: ClassVar[str] = "tool.snapshot"
    tool_id: str
    tool_name: str | None = None
    task_id: str | None = None
    tool_type: str | None = None
    tool_key: str | None = None
    tool_timeout: int | None = None
    tool_api: str | None = None
    tool_params: dict[str, Any] | None = None
    description: str | None = None
    arguments: str | None = None


@dataclass(slots=True)
class ActionStart(Event):
    type: ClassVar[str] = "action.start"
    action_id: str
    run_id: str
    task_id: str | None = None
    action_name: str | None = None
    description: str | None = None


@dataclass(slots=True)
class ActionArgs(Event):
    type: ClassVar[str] = "action.args"
    action_id: str
    delta: str
    #: SPEC §6 / issue 12: clients key tool rows by runId + toolId
    run_id: str | None = None


@dataclass(slots=True)
class ActionEnd(Event):
    type: ClassVar[str] = "action.end"
    action_id: str
    #: SPEC §6 / issue 12: clients key tool rows by runId + toolId
    run_id: str | None = None


@dataclass(slots=True)
class ActionParam(Event):
    type: ClassVar[str] = "action.param"
    action_id: str
    param: Any
    #: SPEC §6 / issue 12: clients key tool rows by runId + toolId
    run_id: str | None = None


@dataclass(slots=True)
class ActionResult(Event):
    type: ClassVar[str] = "action.result"
    action_id: str
    result: Any
    #: SPEC §6 / issue 12: clients key tool rows by runId + toolId
    run_id: str | None = None
    #: SPEC §20: in history replay (``GET /api/ap/chat``) only — the action call, in ms
    duration_ms: int | None = None


@dataclass(slots=True)
class ActionSnapshot(Event):
    type: ClassVar[str] = "action.snapshot"
    action_id: str
    action_name: str | None = None
    task_id: str | None = None
    description: str | None = None
    arguments: str | None = None


@dataclass(slots=True)
class SourceSnapshot(Event):
    type: ClassVar[str] = "source.snapshot"
    source_id: str
    run_id: str | None = None
    task_id: str | None = None
    icon: str | None = None
    title: str | None = None
    url: str | None = None


# ---- files (SPEC §23) ------------------------------------------------------------


@dataclass(slots=True)
class ArtifactPublish(Event):
    """A file of the chat's workspace published by ``_artifact_publish_``: ``artifact`` is
    ``{type, name, mimeType, sizeBytes, url, sha256, description?}``; ``url`` downloads it."""

    type: ClassVar[str] = "artifact.publish"
    artifact_id: str
    chat_id: str
    run_id: str
    artifact: dict[str, Any]


#: every concrete event class, by wire name — the closed union
EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (
        RequestQuery, RequestUpload, RequestSubmit, ChatStart,
        PlanCreate, PlanUpdate, RunStart, RunComplete, RunCancel, RunError,
        TaskStart, TaskComplete, TaskFail, TaskCancel,
        ReasoningStart, ReasoningDeltaEvent, ReasoningEnd, ReasoningSnapshot,
        ContentStart, ContentDeltaEvent, ContentEnd, ContentSnapshot,
        ToolStart, ToolArgs, ToolEnd, ToolResult, ToolSnapshot,
        ActionStart, ActionArgs, ActionEnd, ActionParam, ActionResult, ActionSnapshot,
        SourceSnapshot, ArtifactPublish,
    )
}  # fmt: skip

TERMINAL_TYPES = frozenset({RunComplete.type, RunError.type, RunCancel.type})


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Stamped:
    """One event of a run's log: the typed event with its ``seq`` (1, 2, 3 … per run) and
    ``timestamp``. ``wire()`` is the one conversion to the wire dict (camelCase, ``None``
    omitted, ``seq``/``timestamp`` added); ``wire_json()`` is that dict as JSON bytes. Neither is
    kept: a log holds every event of a run for resume, and a run is read by one client almost
    always, so keeping the JSON of each event (about 165 bytes for a short delta, 40 % of what a
    kept delta costs) would buy nothing but memory; a second reader encodes again (~1 µs)."""

    __slots__ = ("event", "seq", "timestamp")

    def __init__(self, event: Event, seq: int, timestamp: int) -> None:
        self.event = event
        self.seq = seq
        self.timestamp = timestamp

    @property
    def type(self) -> str:
        return self.event.type

    @property
    def terminal(self) -> bool:
        return self.event.type in TERMINAL_TYPES

    def wire(self) -> dict[str, Any]:
        """A new wire dict (the caller may keep or change it)."""
        wire = self.event.to_wire()
        wire["seq"] = self.seq
        wire["timestamp"] = self.timestamp
        return wire

    def wire_json(self) -> bytes:
        # a copy of exactly its size: orjson returns its whole output buffer (4 KiB at least),
        # which whoever holds the bytes a while (the cluster's outbox) should not pay per event
        return bytes(memoryview(orjson.dumps(self.wire(), option=orjson.OPT_NON_STR_KEYS)))

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> Stamped:
        """The inverse of ``wire()``: an event that crossed a process boundary as its wire dict
        (another instance's run, read from Redis) typed again for the adapters that need it.
        Unknown fields are ignored; an unknown ``type`` or a missing field is ``ValueError``."""
        event_type = EVENT_TYPES.get(str(wire.get("type")))
        if event_type is None:
            raise ValueError(f"not an event of the contract: type {wire.get('type')!r}")
        names = tuple((f.name, _camel(f.name)) for f in dataclasses.fields(event_type))
        try:
            event = event_type(**{attr: wire[name] for attr, name in names if name in wire})
            stamped = cls(event, int(wire["seq"]), int(wire["timestamp"]))
        except (TypeError, KeyError) as exc:
            raise ValueError(f"malformed {event_type.type} event: {exc}") from exc
        return stamped


class EventNumberer:
    """Stamps ``seq`` (1, 2, 3 … per stream) and ``timestamp`` onto events."""

    __slots__ = ("_seq",)

    def __init__(self) -> None:
        self._seq = 0

    @property
    def last_seq(self) -> int:
        return self._seq

    def next(self, event: Event) -> Stamped:
        self._seq += 1
        return Stamped(event, self._seq, now_ms())

    def stamp(self, event: Event) -> dict[str, Any]:
        """``next(event).wire()`` — for producers of plain event lists (history snapshots)."""
        return self.next(event).wire()
