"""Executing one run (SPEC §5, §6): the engine half of the run service.

``RunExecution.run()`` performs the run the service started: it emits ``request.query``,
``chat.start`` (new chats), ``run.start``, then the mode's events, writes the query, step and
run lines to chat memory, and ends with exactly one terminal event (``run.complete``,
``run.error`` or ``run.cancel``). Just before that event it calls ``settle(outcome,
final_text)`` so the service knows the typed ``RunOutcome`` by the time any watcher sees the
end. A cancelled run (interrupt, a disconnect in ``cancel`` mode, shutdown) still records
itself and emits ``run.cancel`` before the ``CancelledError`` propagates.

The service (``app.runs``) owns the task, the event log, limits and retention; this module
knows nothing of who watches.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from app.catalog.definitions import AgentDefinition, Catalog
from app.contract import events as ev
from app.contract.bodies import QueryRequest
from app.contract.events import now_ms
from app.contract.runs import RunOutcome
from app.engine.context import RunContext, RunDeadline, RunServices
from app.engine.graph import run_graph
from app.engine.ids import msg_id
from app.engine.oneshot import run_oneshot
from app.engine.plan_execute import run_plan_execute, settle_open_task
from app.engine.react import run_react
from app.engine.steps import step_line
from app.engine.tool_exec import settle_unanswered
from app.errors import BudgetExceeded, GatewayError, UpstreamError
from app.files.references import attach_references
from app.memory.lines import chat_name
from app.memory.replay import replay_messages

logger = logging.getLogger(__name__)

MODES = {"ONESHOT": run_oneshot, "REACT": run_react, "PLAN_EXECUTE": run_plan_execute, "GRAPH": run_graph}


def _carried(message: dict[str, Any]) -> dict[str, Any]:
    """A message of the conversation a new chat starts with (OpenAI's earlier messages, AG-UI's
    for a new thread) in memory shape: the chat's next turns replay it like the run's own
    (SPEC §8), and ``_carried`` keeps it out of the rebuilt event history (the client sent it)."""
    recorded: dict[str, Any] = {"role": message["role"], "content": [{"type": "text", "text": message["content"]}],
                                "ts": now_ms(), "_carried": True}
    if message["role"] == "assistant":
        recorded["_msgId"] = msg_id()  # each its own response when replayed
    return recorded


@dataclass(slots=True)
class RunExecution:
    """One run to perform: its ids, agent and query, where its events go, and whom to tell how it ended."""

    services: RunServices
    catalog: Catalog
    agent: AgentDefinition
    query: QueryRequest
    run_id: str
    chat_id: str
    request_id: str
    owner: str
    new_chat: bool
    emit: Callable[[ev.Event], None]
    #: called once, right before the terminal event, with the outcome and the final answer text
    settle: Callable[[RunOutcome, str], None]
    #: the conversation so far as OpenAI-shaped messages, instead of the chat memory's replay
    history: list[dict[str, Any]] | None = None
    #: SPEC §19: the run's W3C trace id, carried by ``run.start``
    trace_id: str | None = None

    async def run(self) -> None:
        """Perform the run while holding the chat's lock (one run at a time per chat; in a cluster
        also the chat's lease, so no other instance runs the same chat meanwhile)."""
        async with self.services.chats.lock(self.chat_id):
            lease = self.services.chat_lease
            if lease is None:
                await self._run_locked()
                return
            async with lease(self.chat_id):
                await self._run_locked()

    def _context(self, history: list[dict[str, Any]]) -> RunContext:
        return RunContext(
            services=self.services, catalog=self.catalog, agent=self.agent, run_id=self.run_id,
            chat_id=self.chat_id, request_id=self.request_id, owner=self.owner, emit=self.emit, history=history,
        )

    def _query_line(self, query: QueryRequest) -> dict[str, Any]:
        return {"_type": "query", "chatId": self.chat_id, "runId": self.run_id, "updatedAt": now_ms(),
                "query": query.as_memory(self.chat_id, self.agent.key, self.request_id), "owner": self.owner}

    async def _run_locked(self) -> None:
        run, query = self, self.query
        services = self.services
        chats = services.chats
        query_written = False
        try:  # a cancel before the run's steps (the client leaving early) is recorded like any other
            query, attachments = await attach_references(services.settings, run.chat_id, query)  # SPEC §23
            run.emit(ev.RequestQuery(
                request_id=run.request_id, chat_id=run.chat_id, role=query.role, message=query.message,
                agent_key=run.agent.key, references=query.references, params=query.params, scene=query.scene,
                stream=query.stream,
            ))
            if run.new_chat:
                run.emit(ev.ChatStart(chat_id=run.chat_id, chat_name=chat_name(query.message)))
            carried: list[dict[str, Any]] = []
            if run.history is not None:  # the client's system messages serve this run; the rest is memory
                history = [message for message in run.history if message.get("role") == "system"]
                carried = [message for message in run.history if message.get("role") != "system"]
            else:
                lines = await asyncio.to_thread(chats.read_lines, run.chat_id) if not run.new_chat else []
                history = replay_messages(lines, services.settings.memory.chat.k)
            query_written = True  # handed to the writer thread in the first step of the append
            await chats.append(run.chat_id, self._query_line(query))
        except asyncio.CancelledError:
            await _through_cancels(self._cancelled_early(query, query_written))
            raise
        run.emit(ev.RunStart(run_id=run.run_id, chat_id=run.chat_id, agent_key=run.agent.key, trace_id=run.trace_id))
        ctx = self._context(history)
        for message in carried:
            ctx.record(_carried(message))
        ctx.record(attachments.user_message(query.role, query.message, now_ms()))
        try:
            async with asyncio.timeout(run.agent.budget.run_timeout_ms / 1000) as deadline:
                ctx.deadline = RunDeadline(deadline)
                try:
                    attachments.check()  # an unknown reference ends the run here
                    finish = await MODES[run.agent.mode](ctx)
                except TimeoutError:
                    if deadline.expired():
                        raise
                    raise UpstreamError("a call timed out") from None
        except asyncio.CancelledError:
            await _through_cancels(self._finish(ctx, run, "cancel", None, None))
            raise
        except TimeoutError:
            budget = BudgetExceeded(f"the run exceeded runTimeoutMs={run.agent.budget.run_timeout_ms}",
                                    budget="run_timeout")
            await self._finish(ctx, run, "error", None, budget)
        except GatewayError as exc:
            await self._finish(ctx, run, "error", None, exc)
        except Exception:  # a bug must still end the stream cleanly with run.error
            logger.exception("run %s failed unexpectedly", run.run_id)
            await self._finish(ctx, run, "error", None, GatewayError("internal error in the run engine"))
        else:
            await self._finish(ctx, run, "complete", finish, None)

    async def _cancelled_early(self, query: QueryRequest, query_written: bool) -> None:
        """Cancelled before its first step: the query line (if not written yet) and the run's end."""
        if not query_written:
            try:
                await self.services.chats.append(self.chat_id, self._query_line(query))
            except OSError:
                logger.exception("run %s: could not record its query in memory", self.run_id)
        await self._finish(self._context([]), self, "cancel", None, None)

    async def _finish(self, ctx: RunContext, run: RunExecution, status: str, finish: str | None,
                      error: GatewayError | None) -> None:
        """Record the end of the run in memory, then emit its terminal event."""
        line: dict[str, Any] = {"_type": "run", "chatId": run.chat_id, "runId": run.run_id, "updatedAt": now_ms(),
                                "status": status, "usage": ctx.usage.as_dict()}
        error_body = _error_body(error) if error is not None else None
        if finish is not None:
            line["finishReason"] = finish
        if error_body is not None:
            line["error"] = error_body
        if status != "complete":
            ended = "was cancelled" if error_body is None else f"ended ({error_body['code']})"
            settle_unanswered(ctx, f"the run {ended} before this call finished")
            settle_open_task(ctx, "failed" if status == "error" else "canceled", error_body)
        system = ctx.step_system if ctx.step_system is not None else ctx.last_system or ""
        step = step_line(ctx, system)
        try:
            # the last step and the run line: one write, and the chat's file is closed after it
            await self.services.chats.append(run.chat_id, *((step, line) if step else (line,)), run_ends=True)
        except OSError:
            logger.exception("run %s: could not record its end in memory", run.run_id)
        usage = ctx.usage.as_dict()
        if status == "complete":
            outcome = RunOutcome("completed", finish_reason=finish, usage=usage)
        elif status == "cancel":
            outcome = RunOutcome("cancelled", reason="the run was cancelled", usage=usage)
        else:
            outcome = RunOutcome("error", error=error_body, usage=usage)
        run.settle(outcome, ctx.final_text)  # before the terminal event: whoever sees it knows the outcome
        if status == "complete":
            run.emit(ev.RunComplete(run_id=run.run_id, finish_reason=finish, usage=ctx.usage.as_dict()))
        elif status == "cancel":
            run.emit(ev.RunCancel(run_id=run.run_id))
        else:
            assert error_body is not None
            run.emit(ev.RunError(run_id=run.run_id, error=error_body))


def _error_body(error: GatewayError) -> dict[str, Any]:
    if isinstance(error, BudgetExceeded):
        code = f"budget_{error.budget}"
    else:
        code = getattr(error, "error_code", None) or "internal_error"
    body: dict[str, Any] = {"code": code, "message": error.message}
    http_status = getattr(error, "http_status", None)
    if http_status is not None:
        body["upstreamStatus"] = http_status
    return body


async def _through_cancels(step: Coroutine[Any, Any, None]) -> None:
    """Run ``step`` (recording the run's end) to its end even if the run is cancelled again
    meanwhile: the end is written and the terminal event emitted once, whatever comes."""
    done = asyncio.ensure_future(step)
    while not done.done():
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            continue
    done.result()
