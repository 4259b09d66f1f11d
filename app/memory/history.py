"""The history of a chat rebuilt from its file (SPEC §8, ``GET /api/ap/chat``).

Per run, in file order: ``request.query`` (from the query line), ``chat.start`` (once,
on the chat's first run), ``run.start``, then for each stored message its snapshot
(``reasoning.snapshot``, ``content.snapshot``, ``tool.snapshot`` / ``action.snapshot``)
and ``tool.result`` / ``action.result``; after a step's messages ``plan.create`` (the
first plan of the run) or ``plan.update`` (the plan changed); ``request.submit`` for a
submit line, placed just before the result of its tool; finally ``run.complete`` /
``run.error`` / ``run.cancel`` from the run line, or ``run.error`` with code
``interrupted`` when the run has none (the process stopped mid-run) — unless the run
is listed as still running. ``seq`` numbers the whole list from 1; ``timestamp`` is the
message's ``ts`` or the line's ``updatedAt``. Task events are not rebuilt.

Files (SPEC §23): an ``upload`` line (outside any run) becomes a ``request.upload`` event at its
place between runs, and its reference is listed under ``references``; the result of an
``_artifact_publish_`` call brings back its ``artifact.publish`` events, just before its
``tool.result``, and every published artifact is listed under ``artifact.items``.

Timings (SPEC §20): ``reasoning.snapshot`` / ``content.snapshot`` carry ``durationMs``, the duration
of the model call that wrote them (the ``_timing`` of the response's first message, found through
``_msgId``); ``tool.result`` / ``action.result`` that of the call (the result's ``_timing``);
``run.complete`` the whole run (its query line to its run line). Files without timings get none.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import orjson

from app.contract.events import (
    ActionResult,
    ArtifactPublish,
    ActionSnapshot,
    ChatStart,
    ContentSnapshot,
    Event,
    PlanCreate,
    PlanUpdate,
    ReasoningSnapshot,
    RequestQuery,
    RequestSubmit,
    RequestUpload,
    RunCancel,
    RunComplete,
    RunError,
    RunStart,
    ToolResult,
    ToolSnapshot,
)
from app.memory.fork import fork_source
from app.memory.lines import (
    LINE_QUERY,
    LINE_RUN,
    LINE_STEP,
    LINE_SUBMIT,
    LINE_UPLOAD,
    chat_name,
    epoch_ms,
    group_runs,
    messages_of,
    read_plan,
    text_of,
    timestamp_of,
)

logger = logging.getLogger(__name__)

INTERRUPTED = {"code": "interrupted", "message": "the run ended without a final record (the gateway stopped)"}
#: the built-in tool whose results carry published artifacts (SPEC §23)
ARTIFACT_TOOL = "_artifact_publish_"
#: the fields of a reference that ``request.upload`` repeats as its ``upload``
_UPLOAD_FIELDS = ("id", "type", "name", "sizeBytes", "mimeType", "sha256")


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _parse_result(text: str | None) -> Any:
    """A tool result back from its JSON text (the text itself when it is not JSON)."""
    if text is None:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def duration_of(message: Mapping[str, Any]) -> int | None:
    """``endedAt - startedAt`` of a message's ``_timing`` (SPEC §20), or ``None`` without a usable one."""
    timing = message.get("_timing")
    if not isinstance(timing, Mapping):
        return None
    started, ended = epoch_ms(timing.get("startedAt")), epoch_ms(timing.get("endedAt"))
    return ended - started if started is not None and ended is not None and ended >= started else None


def _arguments(function: Mapping[str, Any]) -> str | None:
    arguments = function.get("arguments")
    if arguments is None or isinstance(arguments, str):
        return arguments
    return orjson.dumps(arguments).decode()


class _History:
    """Collects the events of one chat, numbering them as they come."""

    def __init__(self, chat_id: str, running: Collection[str]) -> None:
        self.chat_id = chat_id
        self.running = running
        self.events: list[dict[str, Any]] = []
        self.chat_started = False
        #: SPEC §23: the chat's uploads and published artifacts, in order
        self.uploads: list[dict[str, Any]] = []
        self.artifacts: list[dict[str, Any]] = []

    def emit(self, event: Event, timestamp: int) -> None:
        data = event.to_wire()
        data["seq"] = len(self.events) + 1
        data["timestamp"] = timestamp
        self.events.append(data)

    def run(self, run_id: str, lines: Sequence[Mapping[str, Any]], name: str) -> None:
        _Run(self, run_id, lines).build(name)

    def upload(self, line: Mapping[str, Any]) -> None:
        """An upload line: its ``request.upload`` event, its reference listed."""
        reference = line.get("reference")
        if not isinstance(reference, Mapping) or not _str(reference.get("id")):
            return
        self.uploads.append(dict(reference))
        upload = {key: reference[key] for key in _UPLOAD_FIELDS if key in reference}
        self.emit(RequestUpload(request_id=_str(line.get("requestId")) or str(reference["id"]), upload=upload,
                                chat_id=self.chat_id), timestamp_of(line.get("updatedAt"), 0))

    def artifacts_of(self, run_id: str, result: Any, ts: int) -> None:
        """The ``artifact.publish`` events of one ``_artifact_publish_`` result."""
        items = result.get("artifacts") if isinstance(result, Mapping) else None
        for item in items if isinstance(items, list) else []:
            artifact = item.get("artifact") if isinstance(item, Mapping) else None
            artifact_id = _str(item.get("artifactId")) if isinstance(item, Mapping) else None
            if artifact_id is None or not isinstance(artifact, Mapping):
                continue
            self.emit(ArtifactPublish(artifact_id=artifact_id, chat_id=self.chat_id, run_id=run_id,
                                      artifact=dict(artifact)), ts)
            self.artifacts.append({"artifactId": artifact_id, "runId": run_id, **artifact})


class _Run:
    """The events of one run; see the module docstring for the order."""

    def __init__(self, history: _History, run_id: str, lines: Sequence[Mapping[str, Any]]) -> None:
        self.h = history
        self.run_id = run_id
        self.lines = lines
        self.now = timestamp_of(lines[0].get("updatedAt"), 0)
        self.counters = {"r": 0, "c": 0}
        self.plan: dict[str, Any] | None = None
        self.call_kinds: dict[str, tuple[str, str]] = {}  # tool_call id → (kind, event id)
        self.pending_submits: dict[str, Mapping[str, Any]] = {}
        self.results_seen: set[str] = set()
        self.request_id = run_id
        #: SPEC §20: _msgId → duration of that model call (its first message carries ``_timing``)
        self.call_ms: dict[str, int] = {}

    def build(self, name: str) -> None:
        query_line = next((line for line in self.lines if line.get("_type") == LINE_QUERY), None)
        agent_key = None
        if query_line is not None:
            agent_key = self._query(query_line)
        if not self.h.chat_started:
            self.h.chat_started = True
            self.h.emit(ChatStart(chat_id=self.h.chat_id, chat_name=name or None), self.now)
        self.h.emit(RunStart(run_id=self.run_id, chat_id=self.h.chat_id, agent_key=agent_key), self.now)
        run_line: Mapping[str, Any] | None = None
        for line in self.lines:
            self.now = timestamp_of(line.get("updatedAt"), self.now)
            kind = line.get("_type")
            if kind == LINE_STEP:
                self._step(line)
            elif kind == LINE_SUBMIT:
                self._submit(line)
            elif kind == LINE_RUN:
                run_line = line
            elif kind != LINE_QUERY:
                logger.debug("history: skipped a line of unknown _type %r", kind)
        for line in list(self.pending_submits.values()):
            self._emit_submit(line)
        self._end(run_line)

    # ---- lines -------------------------------------------------------------------

    def _query(self, line: Mapping[str, Any]) -> str | None:
        query = line.get("query")
        query = query if isinstance(query, Mapping) else {}
        self.request_id = _str(query.get("requestId")) or self.run_id
        agent_key = _str(query.get("agentKey"))
        references = query.get("references")
        params = query.get("params")
        stream = query.get("stream")
        message = query.get("message")
        self.h.emit(
            RequestQuery(
                request_id=self.request_id,
                chat_id=_str(query.get("chatId")) or self.h.chat_id,
                role=_str(query.get("role")) or "user",
                message=message if isinstance(message, str) else "",
                agent_key=agent_key,
                references=references if isinstance(references, list) else None,
                params=params if isinstance(params, dict) else None,
                scene=query.get("scene"),
                stream=stream if isinstance(stream, bool) else None,
            ),
            self.now,
        )
        return agent_key

    def _step(self, line: Mapping[str, Any]) -> None:
        line_task = _str(line.get("taskId"))
        for message in messages_of(line):
            if message.get("_carried"):  # the conversation a client started the chat with: not an event
                continue
            ts = timestamp_of(message.get("ts"), self.now)
            task_id = _str(message.get("_taskId")) or line_task
            role = message.get("role")
            if role == "assistant":
                self._assistant(message, ts, task_id)
            elif role == "tool":
                self._tool_result(message, ts)
        plan = read_plan(line)
        if plan is not None and plan != self.plan:
            plan_id = plan["planId"] or f"{self.run_id}_plan"
            event_cls = PlanCreate if self.plan is None else PlanUpdate
            self.h.emit(event_cls(plan_id=plan_id, chat_id=self.h.chat_id, plan=plan["tasks"]), self.now)
            self.plan = plan

    def _next_id(self, kind: str) -> str:
        self.counters[kind] += 1
        return f"{self.run_id}_{kind}_{self.counters[kind]}"

    def _assistant(self, message: Mapping[str, Any], ts: int, task_id: str | None) -> None:
        msg_id, call_ms = _str(message.get("_msgId")), duration_of(message)
        if msg_id is not None and call_ms is not None:
            self.call_ms.setdefault(msg_id, call_ms)
        elif msg_id is not None:
            call_ms = self.call_ms.get(msg_id)
        if "reasoning_content" in message:
            reasoning_id = _str(message.get("_reasoningId")) or self._next_id("r")
            reasoning = text_of(message.get("reasoning_content")) or ""
            self.h.emit(ReasoningSnapshot(reasoning_id=reasoning_id, text=reasoning, task_id=task_id,
                                          duration_ms=call_ms), ts)
        text = text_of(message.get("content"))
        if text is not None and (text or _str(message.get("_contentId"))):
            content_id = _str(message.get("_contentId")) or self._next_id("c")
            self.h.emit(ContentSnapshot(content_id=content_id, text=text, task_id=task_id, duration_ms=call_ms), ts)
        calls = message.get("tool_calls")
        for call in calls if isinstance(calls, list) else []:
            if isinstance(call, Mapping):
                self._call(message, call, ts, task_id)

    def _call(self, message: Mapping[str, Any], call: Mapping[str, Any], ts: int, task_id: str | None) -> None:
        function = call.get("function")
        function = function if isinstance(function, Mapping) else {}
        call_id = _str(call.get("id"))
        # V3.1 keeps _toolId/_actionId on the message; V3 had them on the call
        action_id = _str(message.get("_actionId")) or _str(call.get("_actionId"))
        tool_id = _str(message.get("_toolId")) or _str(call.get("_toolId"))
        if action_id is None and tool_id is None and message.get("_toolKind") == "action":
            action_id = call_id
        if action_id is not None:
            self.h.emit(
                ActionSnapshot(
                    action_id=action_id,
                    action_name=_str(function.get("name")),
                    task_id=task_id,
                    arguments=_arguments(function),
                ),
                ts,
            )
            self.call_kinds[call_id or action_id] = ("action", action_id)
            return
        tool_id = tool_id or call_id or f"{self.run_id}_tool_{len(self.call_kinds) + 1}"
        self.h.emit(
            ToolSnapshot(
                tool_id=tool_id,
                tool_name=_str(function.get("name")),
                task_id=task_id,
                tool_type=_str(message.get("_toolType")),
                tool_key=_str(message.get("_toolKey")),
                arguments=_arguments(function),
            ),
            ts,
        )
        self.call_kinds[call_id or tool_id] = ("tool", tool_id)

    def _tool_result(self, message: Mapping[str, Any], ts: int) -> None:
        result = _parse_result(text_of(message.get("content")))
        action_id = _str(message.get("_actionId"))
        tool_id = _str(message.get("_toolId"))
        if action_id is None and tool_id is None:
            call_id = _str(message.get("tool_call_id"))
            if call_id is None:
                return
            kind, event_id = self.call_kinds.get(call_id, ("tool", call_id))
            action_id, tool_id = (event_id, None) if kind == "action" else (None, event_id)
        duration_ms = duration_of(message)
        if action_id is not None:
            self.h.emit(ActionResult(action_id=action_id, result=result, run_id=self.run_id, duration_ms=duration_ms),
                        ts)
            return
        assert tool_id is not None
        submit = self.pending_submits.pop(tool_id, None)
        if submit is not None:
            self._emit_submit(submit)
        if message.get("name") == ARTIFACT_TOOL:
            self.h.artifacts_of(self.run_id, result, ts)
        self.results_seen.add(tool_id)
        self.h.emit(ToolResult(tool_id=tool_id, result=result, run_id=self.run_id, duration_ms=duration_ms), ts)

    def _submit(self, line: Mapping[str, Any]) -> None:
        tool_id = _str(line.get("toolId"))
        if tool_id is None or tool_id in self.results_seen or tool_id in self.pending_submits:
            self._emit_submit(line)
        else:
            self.pending_submits[tool_id] = line  # shown just before its tool's result

    def _emit_submit(self, line: Mapping[str, Any]) -> None:
        tool_id = _str(line.get("toolId")) or ""
        if self.pending_submits.get(tool_id) is line:
            del self.pending_submits[tool_id]
        self.h.emit(
            RequestSubmit(
                request_id=_str(line.get("requestId")) or self.request_id,
                chat_id=_str(line.get("chatId")) or self.h.chat_id,
                run_id=self.run_id,
                tool_id=tool_id,
                payload=line.get("payload"),
                view_id=_str(line.get("viewId")),
            ),
            timestamp_of(line.get("updatedAt"), self.now),
        )

    def _end(self, run_line: Mapping[str, Any] | None) -> None:
        if run_line is None:
            if self.run_id not in self.h.running:
                self.h.emit(RunError(run_id=self.run_id, error=dict(INTERRUPTED)), self.now)
            return
        status = run_line.get("status")
        if status == "complete":
            usage = run_line.get("usage")
            started, ended = epoch_ms(self.lines[0].get("updatedAt")), epoch_ms(run_line.get("updatedAt"))
            event: Event = RunComplete(
                run_id=self.run_id,
                finish_reason=_str(run_line.get("finishReason")),
                usage=usage if isinstance(usage, dict) else None,
                # SPEC §20: the whole run, from its first line (the query) to its run line
                duration_ms=ended - started if started is not None and ended is not None and ended >= started
                else None,
            )
        elif status == "cancel":
            event = RunCancel(run_id=self.run_id)
        else:
            error = run_line.get("error")
            event = RunError(
                run_id=self.run_id,
                error=dict(error) if isinstance(error, Mapping) else {"code": "error", "message": "the run failed"},
            )
        self.h.emit(event, timestamp_of(run_line.get("updatedAt"), self.now))


def build_history(
    chat_id: str,
    lines: Sequence[Mapping[str, Any]],
    include_raw: bool,
    *,
    running: Collection[str] = frozenset(),
) -> dict[str, Any]:
    """``{chatId, chatName, events, references, artifact: {items}, forkedFrom?, rawMessages?}`` of one chat
    (SPEC §8, §20, §23).

    ``running`` holds the ids of runs still in progress: they get no terminal event
    instead of the ``interrupted`` error of a run that lost its process.
    """
    runs = group_runs(lines)
    queries = [
        line["query"] for line in lines
        if line.get("_type") == LINE_QUERY and isinstance(line.get("query"), Mapping)
    ]  # fmt: skip
    name = chat_name(queries[0].get("message")) if queries else ""
    history = _History(chat_id, running)
    for line in lines:  # runs in order of their first line; uploads at their place between them
        run_id = line.get("runId")
        if isinstance(run_id, str) and run_id:
            if run_id in runs:
                history.run(run_id, runs.pop(run_id), name)
        elif line.get("_type") == LINE_UPLOAD:
            history.upload(line)
    references: list[Any] = list(history.uploads)
    listed = {reference["id"] for reference in history.uploads}
    for query in queries:  # references a query carried that are not (or no longer) uploads of the chat
        for reference in query.get("references") if isinstance(query.get("references"), list) else []:
            ref_id = reference.get("id") if isinstance(reference, Mapping) else None
            if not isinstance(ref_id, str) or ref_id not in listed:
                references.append(reference)
                if isinstance(ref_id, str):
                    listed.add(ref_id)
    out: dict[str, Any] = {
        "chatId": chat_id,
        "chatName": name,
        "events": history.events,
        "references": references,
        "artifact": {"items": history.artifacts},
    }
    forked_from = fork_source(lines)
    if forked_from is not None:  # SPEC §20: a fork names the chat and run it was copied from
        out["forkedFrom"] = forked_from
    if include_raw:
        out["rawMessages"] = [
            {**message, "runId": line["runId"]}
            for line in lines
            if line.get("_type") == LINE_STEP and isinstance(line.get("runId"), str)
            for message in messages_of(line)
        ]
    return out
