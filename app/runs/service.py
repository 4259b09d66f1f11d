"""The run service: the one place runs are started, watched, answered, interrupted and inspected (SPEC §15).

HTTP, the sidecar and the scheduler are thin edges over ``RunService``:

* ``start(query, owner)`` validates (4xx before anything streams), reserves the run's slots
  of ``agent.limits.*`` and starts the run as its own task (``engine.runner.RunExecution``);
* ``watch(run, after, cancel_on_leave)`` yields the run's ``Stamped`` events from any
  ``seq`` (the log keeps them all), live until the terminal event; a watcher that leaves
  early cancels the run only when it asked to (the query's own stream in ``cancel`` mode);
* ``attach`` / ``get`` / ``active_in_chat`` / ``list`` find runs for their owner (404 for an
  unknown or expired run, 403 for another user's);
* ``submit`` answers a frontend-tool wait, ``interrupt`` cancels a run (every watcher then
  receives ``run.cancel``), ``status`` / ``describe`` report ``RunStatus`` and ``pendingTools``.

A run belongs to the service, not to a connection. Each run has a typed ``RunOutcome``
once it ended, and keeps its event log for ``agent.runs.retention-seconds`` after that.
The log behind each run is a ``RunLog`` (``app.runs.log``): in one process
``MemoryRunLog``; a cluster swaps the log factory, nothing else.

Limits (SPEC §19 / issue "sandbox and hardening"): every live run holds one slot of
``agent.limits.concurrent-runs`` and one of its owner's ``agent.limits.user.concurrent-runs``
from ``start`` until it ends (a run parked on a frontend tool included); beyond either cap
``start`` raises ``RunLimitExceeded``. Check and reservation are one synchronous step; the
release is idempotent and reached on every path (settle, task end, a task cancelled before
its first step).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from app.catalog.definitions import AgentDefinition, Catalog
from app.contract import events as ev
from app.contract.bodies import QueryRequest
from app.contract.events import EventNumberer, Stamped, now_ms
from app.contract.runs import RunOutcome, RunStatus
from app.engine.context import RunServices
from app.engine.ids import new_chat_id as generate_chat_id
from app.engine.ids import new_run_id
from app.engine.runner import RunExecution
from app.engine.submits import SubmitOutcome, check_params
from app.errors import ForbiddenError, NotFoundError, RequestError, RunLimitExceeded, ServiceUnavailable
from app.paths import check_key
from app.runs.log import LogEvent, MemoryRunLog, RunLog
from app.runs.remote import RemoteRun, RunDirectory
from app.telemetry import Telemetry, TraceParent, new_trace_id, parse_traceparent

logger = logging.getLogger(__name__)

LogFactory = Callable[[str], RunLog]


@dataclass(slots=True, eq=False)
class Run:
    """One run, live or retained: its ids, its event log, its task and (once ended) its outcome."""

    run_id: str
    chat_id: str
    request_id: str
    owner: str
    agent: AgentDefinition
    new_chat: bool
    log: RunLog
    on_disconnect: str = "cancel"
    started_at: int = field(default_factory=now_ms)
    ended_at: int | None = None
    outcome: RunOutcome | None = None
    final_text: str = ""
    task: asyncio.Task[None] | None = None
    numberer: EventNumberer = field(default_factory=EventNumberer)
    #: SPEC §19: the run's W3C trace id, and the caller's span its own span is a child of
    trace_id: str = ""
    trace_parent: TraceParent | None = None

    @property
    def agent_key(self) -> str:
        return self.agent.key

    @property
    def live(self) -> bool:
        return self.outcome is None

    @property
    def finish_reason(self) -> str | None:
        return self.outcome.finish_reason if self.outcome is not None else None

    def emit(self, event: ev.Event) -> None:
        self.log.append(self.numberer.next(event))

    def cancel(self) -> bool:
        """Cancel the run's task (it still records itself and emits ``run.cancel``). Once: a second
        cancel (an interrupt and the client leaving, a double click) must not interrupt the run
        while it records its end."""
        if self.task is not None and not self.task.done():
            if not self.task.cancelling():
                self.task.cancel()
            return True
        return False

    async def finished(self) -> RunOutcome:
        """Wait for the run to end and return its outcome. A waiter that is cancelled cancels the
        run too (and waits until it recorded itself) before the cancellation goes on."""
        assert self.task is not None, "the run was never started"
        try:
            await asyncio.shield(self.task)
        except asyncio.CancelledError:
            if not self.task.done():  # it is us who were cancelled, not the run
                self.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self.task
                raise
        except Exception:  # the task's own failure is already logged and settled
            logger.debug("run %s task ended with an exception", self.run_id, exc_info=True)
        return self.outcome or RunOutcome("error", error={"code": "internal_error", "message": "the run ended abnormally"})

    async def wait(self) -> None:
        """Until the run's task has finished (never raises the task's cancellation)."""
        if self.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self.task)


class RunService:
    """Owns every run of one gateway (see the module docstring)."""

    def __init__(self, services: RunServices, catalog: Callable[[], Catalog],
                 log_factory: LogFactory | None = None, telemetry: Telemetry | None = None,
                 directory: RunDirectory | None = None) -> None:
        self._services = services
        self._catalog = catalog
        #: the cluster's side (SPEC §16): runs of other instances; None = one instance
        self._directory = directory
        self._log_factory: LogFactory = log_factory or (
            directory.log_for if directory is not None else (lambda run_id: MemoryRunLog()))
        self._telemetry = telemetry or Telemetry()
        #: live runs (they hold limit slots)
        self._live: dict[str, Run] = {}
        #: every run the service still knows: live and retained
        self._runs: dict[str, Run] = {}
        self._per_owner: Counter[str] = Counter()
        #: the retained (ended) runs' expiry timers, oldest first, and their count per owner
        self._expiry: dict[str, asyncio.TimerHandle] = {}
        self._retained_per_owner: Counter[str] = Counter()
        #: the events the retained runs' logs hold together (``max-retained-events``)
        self._retained_events = 0
        #: interrupts sent to other instances for clients that left (``abandon``)
        self._abandoning: set[asyncio.Task[None]] = set()
        self._closing = False

    # -- counts (health, sidecar shutdown, history) --------------------------------------

    @property
    def active(self) -> int:
        return len(self._live)

    def active_run_ids(self) -> frozenset[str]:
        return frozenset(self._live)

    # -- starting ----------------------------------------------------------------------

    async def start(self, query: QueryRequest, owner: str, *, new_chat_id: str | None = None,
                    history: list[dict[str, Any]] | None = None, traceparent: str | None = None) -> Run:
        """Validate the query and start its run. Raises 4xx errors before anything streams.

        Protocol adapters may name the id of a new chat (``new_chat_id``: AG-UI's ``threadId``) and
        supply the conversation so far (``history``, OpenAI-shaped messages: the OpenAI endpoint's
        earlier messages) instead of the chat's memory.
        """
        if self._directory is not None:
            self._directory.check_healthy()  # 503 while the cluster store is unreachable
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
            chat_id, new_chat = (check_key(new_chat_id, "chatId") if new_chat_id else generate_chat_id()), True
            if new_chat_id and await asyncio.to_thread(chats.chat_meta, chat_id) is not None:
                raise RequestError(f"chat {chat_id} already exists; continue it with chatId")
            if not agent_key:
                raise RequestError("agentKey is required to start a new chat")
        if not agent_key:
            raise RequestError("agentKey is required")
        check_key(agent_key, "agentKey")
        agent = catalog.agents.get(agent_key)
        if agent is None:
            raise NotFoundError(f"unknown agent: {agent_key}")
        first_stage = next(iter(agent.stages.values()), None)
        first_model = first_stage.model.model if first_stage is not None else None
        # SPEC §19: over a request/token limit before the stream starts → 429 with Retry-After
        await self._services.limiter.admit(owner, first_model, first_model.members if first_model is not None else ())
        run_id = new_run_id()
        run = Run(
            run_id=run_id, chat_id=chat_id, request_id=query.request_id or run_id, owner=owner, agent=agent,
            new_chat=new_chat, log=self._log_factory(run_id),
            on_disconnect=query.on_disconnect or self._services.settings.agent.runs.on_disconnect,
        )
        # SPEC §19: the caller's trace (a malformed traceparent is ignored), else a new one
        run.trace_parent = parse_traceparent(traceparent)
        run.trace_id = run.trace_parent.trace_id if run.trace_parent is not None else new_trace_id()
        if new_chat_id and (chats.exists(chat_id) or any(live.chat_id == chat_id for live in self._live.values())):
            # checked again with no await left before the run is live: two starts naming the same new
            # chat (AG-UI threadId) must not both pass the check above, the second writing into a chat
            # the first one created, whoever its owner
            raise RequestError(f"chat {chat_id} already exists; continue it with chatId")
        # a start that awaited (a chat's metadata, the limiter) while aclose() cancelled the live
        # runs would otherwise start a run nobody cancels: refused once closing, with no await left
        # before the run is live (and again after the cluster's admission, which awaits)
        self._refuse_when_closing()
        # the local check and reservation are one step; in a cluster the caps then count every instance
        self._admit(run)
        if self._directory is not None:  # SPEC §16: and the run is findable cluster-wide from here on
            try:
                await self._directory.admit(run)
                self._refuse_when_closing()
            except BaseException:
                self._release(run)
                del self._runs[run.run_id]
                raise
        execution = RunExecution(
            services=self._services, catalog=catalog, agent=agent, query=query, run_id=run_id, chat_id=chat_id,
            request_id=run.request_id, owner=owner, new_chat=new_chat, emit=run.emit, history=history,
            settle=lambda outcome, text: self._settle(run, outcome, text), trace_id=run.trace_id,
        )
        if self._directory is not None:
            self._directory.registered(run)  # queued before the run's first event: findable cluster-wide
        run.task = asyncio.create_task(self._execute(run, execution), name=f"run:{run_id}")
        run.task.add_done_callback(lambda _: self._task_done(run))
        logger.info("run %s started: chat=%s agent=%s owner=%s new_chat=%s on_disconnect=%s", run_id, chat_id,
                    agent.key, owner, new_chat, run.on_disconnect, extra={"trace_id": run.trace_id})
        return run

    def _refuse_when_closing(self) -> None:
        if self._closing:
            raise ServiceUnavailable("the gateway is shutting down: no new run is started")

    def _admit(self, run: Run) -> None:
        limits = self._services.settings.agent.limits
        retry = limits.retry_after_seconds
        if self._per_owner[run.owner] >= limits.user.concurrent_runs:
            raise RunLimitExceeded(
                f"too many concurrent runs for this user: the limit agent.limits.user.concurrent-runs is "
                f"{limits.user.concurrent_runs} live runs (runs waiting for a frontend tool count); "
                f"retry in {retry} s or end one of your runs",
                limit="agent.limits.user.concurrent-runs", retry_after_seconds=retry)
        if len(self._live) >= limits.concurrent_runs:
            raise RunLimitExceeded(
                f"the gateway is at its limit agent.limits.concurrent-runs of {limits.concurrent_runs} "
                f"live runs; retry in {retry} s",
                limit="agent.limits.concurrent-runs", retry_after_seconds=retry)
        self._live[run.run_id] = run
        self._runs[run.run_id] = run
        self._per_owner[run.owner] += 1

    def _release(self, run: Run) -> None:
        """Give back the run's limit slots; safe to call any number of times."""
        if self._live.get(run.run_id) is not run:
            return
        del self._live[run.run_id]
        if self._directory is not None:
            self._directory.release(run)
        self._per_owner[run.owner] -= 1
        if self._per_owner[run.owner] <= 0:
            del self._per_owner[run.owner]

    def _settle(self, run: Run, outcome: RunOutcome, final_text: str) -> None:
        """The run ended (called by the engine right before its terminal event)."""
        if run.outcome is None:
            run.outcome = outcome
            run.final_text = final_text
            run.ended_at = now_ms()
            usage = outcome.usage or {}
            detail = (outcome.finish_reason if outcome.status == "completed"
                      else (outcome.error or {}).get("code") if outcome.status == "error" else outcome.reason)
            logger.log(
                logging.WARNING if outcome.status == "error" else logging.INFO,
                "run %s ended: status=%s (%s) chat=%s agent=%s duration_ms=%d tokens=%s/%s points=%s",
                run.run_id, outcome.status, detail, run.chat_id, run.agent_key, run.ended_at - run.started_at,
                usage.get("promptTokens", 0), usage.get("completionTokens", 0), usage.get("points", 0),
                extra={"trace_id": run.trace_id},
            )
        self._release(run)  # whoever sees the terminal event may start a new run at once

    async def _execute(self, run: Run, execution: RunExecution) -> None:
        # SPEC §19: inside, the run's trace id is on every log record (and its span is open)
        with self._telemetry.run(run.trace_id, run.trace_parent, agent_key=run.agent_key, chat_id=run.chat_id,
                                 run_id=run.run_id) as trace:
            try:
                await execution.run()
            finally:
                self._services.submits.close_run(run.run_id)
                self._task_done(run)
                trace.ended(run.outcome)

    def _task_done(self, run: Run) -> None:
        """The task is over: make sure the run is settled, its log ended and its retention set."""
        if run.outcome is None:  # cancelled before its first step, or a bug below the engine
            self._settle(run, RunOutcome("cancelled", reason="the run was cancelled before it started"), "")
            if not run.log.ended:
                run.emit(ev.RunCancel(run_id=run.run_id))
        self._release(run)
        self._retain(run)

    def _retain(self, run: Run) -> None:
        """Keep the ended ``run`` attachable for ``retention-seconds``, within the caps
        (``max-retained-per-user``, then ``max-retained`` and ``max-retained-events``): past a cap
        the oldest goes first. A run whose log alone is past the events cap is not kept at all."""
        if run.run_id in self._expiry or self._runs.get(run.run_id) is not run:
            return
        settings = self._services.settings.agent.runs
        if run.log.last_seq > settings.max_retained_events:
            self._forget(run)
            return
        loop = asyncio.get_running_loop()
        self._expiry[run.run_id] = loop.call_later(settings.retention_seconds, self._forget, run)  # in end order
        self._retained_per_owner[run.owner] += 1
        self._retained_events += run.log.last_seq
        if self._retained_per_owner[run.owner] > settings.max_retained_per_user:
            self._forget(next(kept for kept in map(self._runs.__getitem__, self._expiry) if kept.owner == run.owner))
        while self._expiry and (len(self._expiry) > settings.max_retained
                                or self._retained_events > settings.max_retained_events):
            self._forget(self._runs[next(iter(self._expiry))])

    def _forget(self, run: Run) -> None:
        handle = self._expiry.pop(run.run_id, None)
        if handle is not None:
            handle.cancel()  # (a no-op when it is the timer's own call)
            self._retained_events -= run.log.last_seq  # an ended log: the count it was retained with
            self._retained_per_owner[run.owner] -= 1
            if self._retained_per_owner[run.owner] <= 0:
                del self._retained_per_owner[run.owner]
        if self._runs.get(run.run_id) is run:
            del self._runs[run.run_id]

    # -- watching ----------------------------------------------------------------------

    def watch(self, run: Run | RemoteRun, after: int = 0, *,
              cancel_on_leave: bool = False) -> AsyncIterator[LogEvent]:
        """Every event of ``run`` with ``seq > after``, live until its terminal event.

        Leaving early (client gone, consumer cancelled) cancels the run only with ``cancel_on_leave``.
        The log's own reader, not a generator around it: a layer more costs every event a step.
        """
        return run.log.read(after, run.cancel if cancel_on_leave else None)

    def watch_batches(self, run: Run | RemoteRun, after: int = 0, *,
                      cancel_on_leave: bool = False) -> AsyncIterator[Sequence[LogEvent]]:
        """``watch`` in batches: each holds every event already in the log when the reader looked
        (``RunLog.read_batches``), so a consumer can write them at once; none waits for more."""
        return run.log.read_batches(after, run.cancel if cancel_on_leave else None)

    def query_batches(self, run: Run) -> AsyncIterator[Sequence[LogEvent]]:
        """``query_stream`` in batches (``watch_batches``): the run stream of ``/api/ap/query``."""
        return self.watch_batches(run, 0, cancel_on_leave=_leaving_cancels(run))

    def query_stream(self, run: Run) -> AsyncIterator[Stamped]:
        """The stream of the query that started ``run``: its disconnect does what ``onDisconnect`` says.
        (A local run's log holds ``Stamped`` events: the typed event is there for the adapters.)"""
        return cast(AsyncIterator[Stamped], self.watch(run, 0, cancel_on_leave=_leaving_cancels(run)))

    # -- finding runs ------------------------------------------------------------------

    def get(self, run_id: str, owner: str) -> Run:
        """A live or retained run of ``owner``: 404 for an unknown or expired run, 403 for another user's."""
        run = self._runs.get(run_id)
        if run is None:
            raise NotFoundError(f"unknown or expired run: {run_id}")
        if run.owner != owner:
            raise ForbiddenError(f"run {run_id} belongs to another user")
        return run

    def active_in_chat(self, chat_id: str, owner: str) -> Run:
        """The chat's live run (the newest if several are queued): 404 when it has none."""
        live = [run for run in self._live.values() if run.chat_id == chat_id]
        if not live:
            raise NotFoundError(f"chat {chat_id} has no active run")
        run = max(live, key=lambda r: r.started_at)
        if run.owner != owner:
            raise ForbiddenError(f"chat {chat_id} belongs to another user")
        return run

    def list(self, owner: str, *, chat_id: str | None = None, status: str | None = None) -> list[Run]:
        """``owner``'s live and retained runs, newest first."""
        runs = [run for run in self._runs.values() if run.owner == owner]
        if chat_id:
            runs = [run for run in runs if run.chat_id == chat_id]
        if status:
            runs = [run for run in runs if self.status(run) == status]
        return sorted(runs, key=lambda r: r.started_at, reverse=True)

    # -- finding runs anywhere in the cluster (SPEC §16) ---------------------------------

    async def locate(self, run_id: str, owner: str) -> Run | RemoteRun:
        """``get``, or a run of another instance: 404 unknown/expired, 403 another user's."""
        run: Run | RemoteRun | None = self._runs.get(run_id)
        if run is None and self._directory is not None:
            run = await self._directory.locate(run_id)
        if run is None:
            raise NotFoundError(f"unknown or expired run: {run_id}")
        if run.owner != owner:
            raise ForbiddenError(f"run {run_id} belongs to another user")
        return run

    async def locate_active_in_chat(self, chat_id: str, owner: str) -> Run | RemoteRun:
        try:
            return self.active_in_chat(chat_id, owner)
        except NotFoundError:
            if self._directory is None:
                raise
        run_id = await self._directory.active_run_of_chat(chat_id)
        if run_id is None:
            raise NotFoundError(f"chat {chat_id} has no active run")
        return await self.locate(run_id, owner)

    async def list_all(self, owner: str, *, chat_id: str | None = None,
                       status: str | None = None) -> builtins.list[dict[str, Any]]:
        """``describe`` of every live and retained run of ``owner``, this instance's and the cluster's."""
        found = {run.run_id: self.describe(run) for run in self.list(owner, chat_id=chat_id)}
        if self._directory is not None:
            for remote in await self._directory.runs_of(owner):
                if remote.run_id not in found and (chat_id is None or remote.chat_id == chat_id):
                    found[remote.run_id] = await self.describe_any(remote)
        runs = [d for d in found.values() if status is None or d["status"] == status]
        return sorted(runs, key=lambda d: d["startedAt"], reverse=True)

    async def describe_any(self, run: Run | RemoteRun) -> dict[str, Any]:
        if isinstance(run, Run):
            return self.describe(run)
        assert self._directory is not None
        data: dict[str, Any] = await self._directory.call(run, "describe", {"runId": run.run_id, "owner": run.owner})
        return data

    async def deliver_submit(self, run_id: str, tool_id: str, params: Any, owner: str) -> SubmitOutcome:
        """``submit`` wherever the run lives (SPEC §16: the same answer as on one instance).

        ``run_id`` comes from the client and names Redis keys in a cluster: a bare key or a 400."""
        check_key(run_id, "runId")
        check_params(params)  # before it travels to another instance
        if self._directory is None or run_id in self._runs or self._services.submits.pending_for(run_id):
            return self.submit(run_id, tool_id, params, owner)
        remote = await self._directory.locate(run_id)
        if remote is None:
            return self.submit(run_id, tool_id, params, owner)  # unmatched / expired, as locally
        if remote.owner != owner:
            raise ForbiddenError(f"run {run_id} belongs to another user")
        data = await self._directory.call(remote, "submit", {"runId": run_id, "toolId": tool_id, "params": params,
                                                              "owner": owner})
        return SubmitOutcome(accepted=data["accepted"], status=data["status"], detail=data["detail"])

    async def handle_command(self, op: str, payload: dict[str, Any]) -> Any:
        """What another instance asks of a run this one owns (``ClusterNode`` inbox)."""
        run_id, owner = str(payload["runId"]), str(payload["owner"])
        if op == "describe":
            return self.describe(self.get(run_id, owner))
        if op == "submit":
            return self.submit(run_id, str(payload["toolId"]), payload.get("params"), owner).as_dict()
        if op == "interrupt":
            return {"cancelled": await self.interrupt(run_id, owner)}
        raise RequestError(f"unknown cluster command {op!r}")

    # -- inspecting --------------------------------------------------------------------

    def status(self, run: Run) -> RunStatus:
        if run.outcome is not None:
            return run.outcome.status
        return "waiting" if self._services.submits.pending_for(run.run_id) else "running"

    def describe(self, run: Run) -> dict[str, Any]:
        """``GET /api/ap/run`` / ``agent.status``: ``{runId, chatId, agentKey, status, lastSeq, …}``."""
        data: dict[str, Any] = {
            "runId": run.run_id, "chatId": run.chat_id, "agentKey": run.agent_key, "requestId": run.request_id,
            "status": self.status(run), "lastSeq": run.log.last_seq, "startedAt": run.started_at,
            "onDisconnect": run.on_disconnect,
            "pendingTools": [p.as_pending_tool() for p in self._services.submits.pending_for(run.run_id)],
        }
        if run.ended_at is not None:
            data["endedAt"] = run.ended_at
        if run.outcome is not None:
            if run.outcome.finish_reason is not None:
                data["finishReason"] = run.outcome.finish_reason
            if run.outcome.error is not None:
                data["error"] = run.outcome.error
        return data

    # -- acting on runs ----------------------------------------------------------------

    def submit(self, run_id: str, tool_id: str, params: Any, owner: str) -> SubmitOutcome:
        return self._services.submits.submit(run_id, tool_id, params, owner)

    async def interrupt(self, run_id: str, owner: str) -> bool:
        """Cancel a live run of ``owner`` and wait until it recorded itself; False when it already ended.
        In a cluster the run's own instance does it (SPEC §16)."""
        located = await self.locate(run_id, owner)
        if isinstance(located, RemoteRun):
            if located.outcome is not None or self._directory is None:
                return False
            data = await self._directory.call(located, "interrupt", {"runId": run_id, "owner": owner})
            return bool(data["cancelled"])
        run = located
        cancelled = run.cancel()
        await run.wait()
        return cancelled

    def abandon(self, run: Run | RemoteRun) -> None:
        """The client whose leaving ends ``run`` went away (an AG-UI stream, SPEC §17): cancel the run.
        Another instance's run (SPEC §16) is interrupted through its own instance, from a task of its
        own: the caller is a stream being closed, which cannot wait for the answer."""
        if isinstance(run, Run):
            run.cancel()
            return
        if run.outcome is not None or self._directory is None or self._closing:
            return  # shutting down: the cluster may be gone already; the run's own wait still ends it
        task = asyncio.get_running_loop().create_task(self._interrupt_remote(run))
        self._abandoning.add(task)
        task.add_done_callback(self._abandoning.discard)

    async def _interrupt_remote(self, run: RemoteRun) -> None:
        try:
            await self.interrupt(run.run_id, run.owner)
        except Exception as exc:  # the cluster store or the run's instance is unreachable: its own wait ends it
            logger.warning("run %s on instance %s: its client left, but it could not be cancelled: %s",
                           run.run_id, run.instance, exc)

    async def cancel(self, run_id: str, owner: str) -> bool:
        """Like ``interrupt``, but an unknown run is just ``False`` (the sidecar's ``agent.cancel``)."""
        run = self._runs.get(run_id)
        if run is None:
            return False
        return await self.interrupt(run_id, owner)

    async def aclose(self) -> None:
        """Cancel every live run and wait until each has recorded itself (shutdown)."""
        self._closing = True
        runs = list(self._live.values())
        for run in runs:
            run.cancel()
        for run in runs:
            await run.wait()
        for handle in self._expiry.values():
            handle.cancel()
        self._expiry.clear()
        self._retained_per_owner.clear()
        for task in list(self._abandoning):
            task.cancel()
        await asyncio.gather(*self._abandoning, return_exceptions=True)


def _leaving_cancels(run: Run) -> bool:
    """Whether the query's own client leaving cancels ``run`` (its ``onDisconnect``, SPEC §15)."""
    return run.on_disconnect == "cancel"
