"""Starting, streaming and cancelling runs (SPEC §4 query, §5, §6).

``RunManager.start`` validates a query (4xx before any stream starts), then starts the
run as its own task. The run pushes stamped events into its ``Run``'s queue the moment
they happen; a consumer (the SSE route, the sidecar, the scheduler) iterates
``Run.events()``. A consumer that goes away cancels the run: the upstream request is
closed at once and memory records the run as cancelled.

Every live run holds one slot of ``agent.limits.concurrent-runs`` and one of its owner's
``agent.limits.user.concurrent-runs`` (SPEC §19) from the moment it is registered until it
ends — a run parked on a frontend-tool wait still holds its slots. Beyond either cap
``start`` raises ``RunLimitExceeded`` before anything streams. The check and the
reservation happen in one synchronous step (no ``await`` between them), and the release is
idempotent and reached on every path: just before the terminal event is emitted (so a
client that saw the end of a run can start the next one at once), in ``_execute``'s
``finally``, and in a done-callback of the task (a task cancelled before its first step
never runs its ``finally``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.catalog.definitions import AgentDefinition, Catalog
from app.engine import events as ev
from app.engine.context import RunContext, RunServices
from app.engine.events import EventNumberer, now_ms
from app.engine.ids import new_chat_id, new_run_id
from app.engine.oneshot import run_oneshot
from app.engine.plan_execute import run_plan_execute, settle_open_task
from app.engine.react import run_react
from app.engine.steps import flush_step
from app.errors import (
    BudgetExceeded,
    ForbiddenError,
    GatewayError,
    NotFoundError,
    RequestError,
    RunLimitExceeded,
    UpstreamError,
)
from app.memory.lines import chat_name
from app.memory.replay import replay_messages
from app.paths import check_key

logger = logging.getLogger(__name__)

MODES = {"ONESHOT": run_oneshot, "REACT": run_react, "PLAN_EXECUTE": run_plan_execute}


class QueryRequest(BaseModel):
    """The body of ``POST /api/ap/query`` (SPEC §4)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    request_id: str | None = Field(None, alias="requestId", max_length=128)
    chat_id: str | None = Field(None, alias="chatId", max_length=128)
    agent_key: str | None = Field(None, alias="agentKey", max_length=128)
    role: str = Field("user", max_length=32)
    message: str = Field(max_length=200_000)
    references: list[Any] | None = None
    params: dict[str, Any] | None = None
    scene: Any | None = None
    stream: bool = True

    @field_validator("message")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("message must not be empty")
        return value

    @field_validator("role")
    @classmethod
    def _role(cls, value: str) -> str:
        if value not in ("user", "system", "assistant"):
            raise ValueError("role must be user, system or assistant")
        return value

    def as_memory(self, chat_id: str, agent_key: str, request_id: str) -> dict[str, Any]:
        return {
            "requestId": request_id, "chatId": chat_id, "agentKey": agent_key, "role": self.role,
            "message": self.message, "references": self.references, "params": self.params,
            "scene": self.scene, "stream": self.stream,
        }


@dataclass(slots=True)
class Run:
    """One live run: its ids, its task, and the queue its events flow through."""

    run_id: str
    chat_id: str
    request_id: str
    owner: str
    agent: AgentDefinition
    new_chat: bool
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    numberer: EventNumberer = field(default_factory=EventNumberer)
    task: asyncio.Task[None] | None = None
    finish_reason: str | None = None
    final_text: str = ""

    def emit(self, event: ev.Event) -> None:
        self.queue.put_nowait(self.numberer.stamp(event))

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Every event of the run, as it happens, until the terminal one.

        Leaving the iteration early (client gone, consumer cancelled) cancels the run.
        """
        try:
            while True:
                item = await self.queue.get()
                yield item
                if item["type"] in ev.TERMINAL_TYPES:
                    return
        finally:
            self.cancel()

    def cancel(self) -> bool:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            return True
        return False

    async def wait(self) -> None:
        if self.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self.task)


class RunManager:
    """Owns every live run of one gateway (SPEC §5)."""

    def __init__(self, services: RunServices, catalog: Callable[[], Catalog]) -> None:
        self._services = services
        self._catalog = catalog
        self._runs: dict[str, Run] = {}
        #: owner → how many of ``_runs`` are theirs (the per-user concurrent-runs count)
        self._per_owner: Counter[str] = Counter()

    def get(self, run_id: str) -> Run | None:
        return self._runs.get(run_id)

    @property
    def active(self) -> int:
        return len(self._runs)

    def active_run_ids(self) -> frozenset[str]:
        return frozenset(self._runs)

    async def start(self, query: QueryRequest, owner: str) -> Run:
        """Validate the query and start its run. Raises 4xx errors before anything streams."""
        catalog = self._catalog()
        chats = self._services.chats
        agent_key = query.agent_key
        if query.chat_id:
            chat_id = check_key(query.chat_id, "chatId")
            meta = await asyncio.to_thread(chats.chat_meta, chat_id)
            if meta is None:
                raise NotFoundError(f"unknown chat: {chat_id}")
            if meta.owner not in (None, owner):
                raise ForbiddenError(f"chat {chat_id} belongs to another user")
            agent_key = agent_key or meta.first_agent_key
            new_chat = False
        else:
            chat_id, new_chat = new_chat_id(), True
            if not agent_key:
                raise RequestError("agentKey is required to start a new chat")
        if not agent_key:
            raise RequestError("agentKey is required")
        check_key(agent_key, "agentKey")
        agent = catalog.agents.get(agent_key)
        if agent is None:
            raise NotFoundError(f"unknown agent: {agent_key}")
        run_id = new_run_id()
        request_id = query.request_id or run_id
        run = Run(run_id=run_id, chat_id=chat_id, request_id=request_id, owner=owner, agent=agent, new_chat=new_chat)
        # from here to create_task nothing awaits: the check and the reservation are one step
        self._admit(run)
        run.task = asyncio.create_task(self._execute(run, query, catalog), name=f"run:{run_id}")
        run.task.add_done_callback(lambda _: self._release(run))
        return run

    def _admit(self, run: Run) -> None:
        """Reserve the run's global and per-user slots, or raise ``RunLimitExceeded`` (SPEC §19)."""
        limits = self._services.settings.agent.limits
        retry = limits.retry_after_seconds
        if self._per_owner[run.owner] >= limits.user.concurrent_runs:
            raise RunLimitExceeded(
                f"too many concurrent runs for this user: the limit agent.limits.user.concurrent-runs is "
                f"{limits.user.concurrent_runs} live runs (runs waiting for a frontend tool count); "
                f"retry in {retry} s or end one of your runs",
                limit="agent.limits.user.concurrent-runs", retry_after_seconds=retry)
        if len(self._runs) >= limits.concurrent_runs:
            raise RunLimitExceeded(
                f"the gateway is at its limit agent.limits.concurrent-runs of {limits.concurrent_runs} "
                f"live runs; retry in {retry} s",
                limit="agent.limits.concurrent-runs", retry_after_seconds=retry)
        self._runs[run.run_id] = run
        self._per_owner[run.owner] += 1

    def _release(self, run: Run) -> None:
        """Give back the run's slots; safe to call any number of times."""
        if self._runs.get(run.run_id) is not run:
            return
        del self._runs[run.run_id]
        self._per_owner[run.owner] -= 1
        if self._per_owner[run.owner] <= 0:
            del self._per_owner[run.owner]

    async def cancel(self, run_id: str, owner: str) -> bool:
        run = self._runs.get(run_id)
        if run is None:
            return False
        if run.owner != owner:
            raise ForbiddenError(f"run {run_id} belongs to another user")
        cancelled = run.cancel()
        await run.wait()
        return cancelled

    async def aclose(self) -> None:
        """Cancel every live run and wait until each has recorded itself (shutdown)."""
        runs = list(self._runs.values())
        for run in runs:
            run.cancel()
        for run in runs:
            await run.wait()

    async def _execute(self, run: Run, query: QueryRequest, catalog: Catalog) -> None:
        services = self._services
        chats = services.chats
        try:
            async with chats.lock(run.chat_id):
                await self._run_locked(run, query, catalog)
        finally:
            services.submits.close_run(run.run_id)
            self._release(run)

    async def _run_locked(self, run: Run, query: QueryRequest, catalog: Catalog) -> None:
        services = self._services
        chats = services.chats
        run.emit(ev.RequestQuery(
            request_id=run.request_id, chat_id=run.chat_id, role=query.role, message=query.message,
            agent_key=run.agent.key, references=query.references, params=query.params, scene=query.scene,
            stream=query.stream,
        ))
        if run.new_chat:
            run.emit(ev.ChatStart(chat_id=run.chat_id, chat_name=chat_name(query.message)))
        lines = await asyncio.to_thread(chats.read_lines, run.chat_id) if not run.new_chat else []
        history = replay_messages(lines, services.settings.memory.chat.k)
        await chats.append(run.chat_id, {
            "_type": "query", "chatId": run.chat_id, "runId": run.run_id, "updatedAt": now_ms(),
            "query": query.as_memory(run.chat_id, run.agent.key, run.request_id), "owner": run.owner,
        })
        run.emit(ev.RunStart(run_id=run.run_id, chat_id=run.chat_id, agent_key=run.agent.key))
        ctx = RunContext(
            services=services, catalog=catalog, agent=run.agent, run_id=run.run_id, chat_id=run.chat_id,
            request_id=run.request_id, owner=run.owner, emit=run.emit, history=history,
        )
        ctx.record({"role": query.role, "content": [{"type": "text", "text": query.message}], "ts": now_ms()})
        try:
            async with asyncio.timeout(run.agent.budget.run_timeout_ms / 1000) as deadline:
                ctx.deadline = deadline
                try:
                    finish = await MODES[run.agent.mode](ctx)
                except TimeoutError:
                    if deadline.expired():
                        raise
                    raise UpstreamError("a call timed out") from None
        except asyncio.CancelledError:
            await asyncio.shield(self._finish(ctx, run, "cancel", None, None))
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

    async def _finish(self, ctx: RunContext, run: Run, status: str, finish: str | None,
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
            settle_open_task(ctx, "failed" if status == "error" else "canceled", error_body)
        try:
            await flush_step(ctx, ctx.last_system or "")
            await self._services.chats.append(run.chat_id, line)
        except OSError:
            logger.exception("run %s: could not record its end in memory", run.run_id)
        run.finish_reason = finish
        run.final_text = ctx.final_text
        self._release(run)  # before the terminal event: whoever sees it may start a new run at once
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
