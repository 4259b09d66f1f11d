"""The run service's view of the cluster (``RunDirectory`` of ``app.runs.remote``), on a ``ClusterNode``.

* ``admit`` — a new local run against the cluster-wide caps ``agent.limits.concurrent-runs`` and
  ``agent.limits.user.concurrent-runs`` (every instance's live runs count), registered in the same
  step (owner, chat, agent, instance, start): findable by every instance before its first event;
  ``release`` gives the slot back when the run ends (a dead instance's slots expire with it);
* ``log_for`` — a ``ClusterRunLog``: every event of a local run also goes to its Redis Stream;
* ``registered`` — the run's end (status, outcome, times) is written with its terminal event,
  then the record and the stream expire after ``retention-seconds``;
* ``locate`` / ``active_run_of_chat`` / ``runs_of`` — runs of other instances, as ``RemoteRun``s
  whose log reads the Stream;
* ``call`` — ``describe`` / ``submit`` / ``interrupt`` done by the run's own instance; a run whose
  instance is gone is described from its record (a submit is ``expired``, an interrupt ``false``);
* ``lost_run`` — the reaper's action for a run of a dead instance: its chat file's end line
  (under the chat's lease, taken over from the dead instance, when the run had begun writing
  there), then a terminal ``run.error`` (``instance_lost``) appended to its Stream and its record
  ended. A run whose terminal event is in its Stream already ended: only its record is finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, TypeGuard

import orjson
from redis.exceptions import RedisError

from app.cluster.keys import ENDED_STATUSES, REFUSED_USER, events_key, run_key
from app.cluster.node import ClusterNode
from app.cluster.runlog import ClusterRunLog, StreamRunLog
from app.config import LimitSettings
from app.contract.events import now_ms
from app.contract.runs import RunOutcome
from app.errors import RunLimitExceeded, ServiceUnavailable
from app.memory.store import ChatStore
from app.runs.remote import RemoteRun

if TYPE_CHECKING:
    from app.runs.service import Run

logger = logging.getLogger(__name__)

INSTANCE_LOST = "instance_lost"
_TERMINAL_STATUS = {"run.complete": "completed", "run.error": "error", "run.cancel": "cancelled"}


class ClusterDirectory:
    """``RunDirectory`` backed by Redis through ``node``; ``chats`` is the shared chat folder."""

    def __init__(self, node: ClusterNode, chats: ChatStore, limits: LimitSettings) -> None:
        self.node = node
        self.chats = chats
        self.limits = limits
        #: this instance's runs from registration until their end is written (to register them again)
        self._local: dict[str, Run] = {}
        node.on_registration_lost = self._register_again

    def check_healthy(self) -> None:
        self.node.check_healthy()

    def log_for(self, run_id: str) -> ClusterRunLog:
        return ClusterRunLog(self.node, run_id)

    def chat_lease(self, chat_id: str) -> AbstractAsyncContextManager[None]:
        return self.node.chat_lease(chat_id)

    async def admit(self, run: Run) -> None:
        """Hold a slot of the cluster-wide caps for ``run`` and register it (``RunLimitExceeded`` beyond a cap)."""
        limits = self.limits
        refused, counted = await self.node.admit_run(
            run.run_id, run.owner, run.chat_id, run.started_at, _fields(run),
            user_cap=limits.user.concurrent_runs, global_cap=limits.concurrent_runs)
        if not refused:
            return
        retry = limits.retry_after_seconds
        if refused == REFUSED_USER:
            raise RunLimitExceeded(
                f"too many concurrent runs for this user: the limit agent.limits.user.concurrent-runs is "
                f"{limits.user.concurrent_runs} live runs across the cluster (runs waiting for a frontend tool "
                f"count); retry in {retry} s or end one of your runs",
                limit="agent.limits.user.concurrent-runs", retry_after_seconds=retry)
        raise RunLimitExceeded(
            f"the cluster is at its limit agent.limits.concurrent-runs of {limits.concurrent_runs} live runs "
            f"({counted - 1} running on all instances); retry in {retry} s",
            limit="agent.limits.concurrent-runs", retry_after_seconds=retry)

    def release(self, run: Run) -> None:
        self.node.release_run(run.run_id)

    def registered(self, run: Run) -> None:
        def end(pipe: Any) -> None:
            outcome = run.outcome
            ended: dict[str, Any] = {**_fields(run), "status": outcome.status if outcome else "error",
                                     "endedAt": str(run.ended_at or now_ms()), "lastSeq": str(run.log.last_seq)}
            if outcome is not None:
                ended["outcome"] = orjson.dumps({"status": outcome.status, "finishReason": outcome.finish_reason,
                                                 "error": outcome.error, "reason": outcome.reason}).decode()
            self.node.end_run_ops(pipe, run.run_id, ended)
            self._local.pop(run.run_id, None)

        if isinstance(run.log, ClusterRunLog):
            run.log.on_end = end
            self._local[run.run_id] = run

    async def _register_again(self) -> None:
        """This instance's heartbeat was gone (``ClusterNode.on_registration_lost``): every live local run
        whose record is gone (Redis lost it) is registered again, its Stream rewritten from the events this
        instance holds, so other instances find it, its watchers there go on, and its end is written over a
        whole record; a run whose record was ended meanwhile (the reaper declared this instance lost) is
        cancelled."""
        for run in list(self._local.values()):
            if run.outcome is not None or not isinstance(run.log, ClusterRunLog):
                continue
            if await self.node.register_again(run.run_id, run.owner, run.chat_id, run.started_at, _fields(run),
                                              run.log.wire_events()):
                logger.warning("cluster: run %s registered again (Redis had lost it)", run.run_id)
                continue
            record = await self.node.run_record(run.run_id)
            if record is not None and record.get("status") in ENDED_STATUSES:
                # fencing: this instance was declared lost while it was away and its run was ended for
                # everyone else (instance_lost): it must not go on here
                logger.warning("cluster: run %s was ended by another instance while this one was away; "
                               "cancelling it", run.run_id)
                run.cancel()

    async def locate(self, run_id: str) -> RemoteRun | None:
        with _unreachable_is_503():
            record = await self.node.run_record(run_id)
        return self._remote(record) if _whole(record) else None

    async def active_run_of_chat(self, chat_id: str) -> str | None:
        with _unreachable_is_503():
            run_id = await self.node.active_run_of_chat(chat_id)
            record = await self.node.run_record(run_id) if run_id else None
        return run_id if _whole(record) and record.get("status") not in ENDED_STATUSES else None

    async def runs_of(self, owner: str) -> list[RemoteRun]:
        with _unreachable_is_503():
            return [self._remote(record) for record in await self.node.runs_of(owner) if _whole(record)]

    def _remote(self, record: dict[str, str]) -> RemoteRun:
        outcome = None
        if "outcome" in record:
            data = orjson.loads(record["outcome"])
            outcome = RunOutcome(data["status"], finish_reason=data.get("finishReason"), error=data.get("error"),
                                 reason=data.get("reason"))
        status = record.get("status", "running")
        ended = status in ENDED_STATUSES
        return RemoteRun(
            run_id=record["runId"], chat_id=record["chatId"], request_id=record.get("requestId", record["runId"]),
            owner=record["owner"], agent_key=record.get("agentKey", ""), instance=record.get("instance", ""),
            log=StreamRunLog(self.node, record["runId"], int(record.get("lastSeq", "0")), ended),
            started_at=int(record.get("startedAt", "0")),
            ended_at=int(record["endedAt"]) if "endedAt" in record else None,
            on_disconnect=record.get("onDisconnect", "cancel"), outcome=outcome, status=status,
        )

    async def call(self, run: RemoteRun, op: str, payload: dict[str, Any]) -> Any:
        with _unreachable_is_503():
            return await self._call(run, op, payload)

    async def _call(self, run: RemoteRun, op: str, payload: dict[str, Any]) -> Any:
        if op == "describe" and run.outcome is not None:
            return await self._describe_record(run)
        if not await self.node.instance_alive(run.instance):
            # the run ends with instance_lost within the lease; nothing of it can be reached
            if op == "describe":
                return await self._describe_record(run)
            if op == "submit":
                return {"accepted": False, "status": "expired",
                        "detail": f"the instance running run {run.run_id} is gone; the run ends with instance_lost"}
            if op == "interrupt":
                return {"cancelled": False}
        return await self.node.call(run.instance, op, payload)

    async def _describe_record(self, run: RemoteRun) -> dict[str, Any]:
        data: dict[str, Any] = {
            "runId": run.run_id, "chatId": run.chat_id, "agentKey": run.agent_key, "requestId": run.request_id,
            "status": run.status if run.status in ENDED_STATUSES else "running",
            "lastSeq": max(run.log.last_seq, await self.node.last_seq(run.run_id)),
            "startedAt": run.started_at, "onDisconnect": run.on_disconnect, "pendingTools": [],
        }
        if run.ended_at is not None:
            data["endedAt"] = run.ended_at
        if run.outcome is not None and run.outcome.finish_reason is not None:
            data["finishReason"] = run.outcome.finish_reason
        if run.outcome is not None and run.outcome.error is not None:
            data["error"] = run.outcome.error
        return data

    async def lost_run(self, run_id: str, record: dict[str, str]) -> None:
        """End a run whose instance died: its chat file, then its watchers and its record."""
        last = await self.node.last_event(run_id)
        if last is not None and last.get("type") in _TERMINAL_STATUS:
            await self._finish_record(run_id, last)  # it ended; only the record's end was not written
            return
        instance = record.get("instance", "?")
        error = {"code": INSTANCE_LOST, "message": f"the gateway instance running this run ({instance}) stopped"}
        ended_at = now_ms()
        chat_id = record.get("chatId")
        if chat_id:
            await self._end_chat_file(chat_id, run_id, instance, {
                "_type": "run", "chatId": chat_id, "runId": run_id, "updatedAt": ended_at, "status": "error",
                "error": error, "usage": {}})
        node = self.node
        seq = await node.last_seq(run_id) + 1
        wire = {"type": "run.error", "runId": run_id, "error": error, "seq": seq, "timestamp": ended_at}
        await node.outbox.publish(run_id, [(seq, orjson.dumps(wire))])
        outcome = orjson.dumps({"status": "error", "error": error}).decode()
        seconds = max(int(node.retention_seconds), 1)
        async with node.redis.pipeline(transaction=True) as pipe:
            pipe.hset(run_key(run_id), mapping={"status": "error", "endedAt": str(ended_at), "lastSeq": str(seq),
                                                "outcome": outcome})
            pipe.expire(run_key(run_id), seconds)
            pipe.expire(events_key(run_id), seconds)
            await pipe.execute()

    async def _finish_record(self, run_id: str, terminal: dict[str, Any]) -> None:
        """The record of a run whose terminal event made it to Redis (its instance died just after)."""
        status = _TERMINAL_STATUS[terminal["type"]]
        outcome = {"status": status, "finishReason": terminal.get("finishReason"), "error": terminal.get("error"),
                   "reason": terminal.get("reason")}
        seconds = max(int(self.node.retention_seconds), 1)
        async with self.node.redis.pipeline(transaction=True) as pipe:
            pipe.hset(run_key(run_id), mapping={"status": status, "lastSeq": str(terminal["seq"]),
                                                "endedAt": str(terminal.get("timestamp") or now_ms()),
                                                "outcome": orjson.dumps(outcome).decode()})
            pipe.expire(run_key(run_id), seconds)
            pipe.expire(events_key(run_id), seconds)
            await pipe.execute()

    async def _end_chat_file(self, chat_id: str, run_id: str, instance: str, line: dict[str, Any]) -> None:
        """Write the run's end line when the run had begun its chat file and not ended it — holding the
        chat's lease (taken over from the dead instance), so no other run's lines come in between."""
        token = await self.node.take_over_chat_lease(chat_id, instance)
        if token is None:  # another live run holds the chat: the lost run never got to write there
            return
        try:
            lines = await asyncio.to_thread(self.chats.read_lines, chat_id)
            began = any(entry.get("runId") == run_id and entry.get("_type") == "query" for entry in lines)
            ended = any(entry.get("runId") == run_id and entry.get("_type") == "run" for entry in lines)
            if began and not ended:
                await self.chats.append(chat_id, line)
        finally:
            await self.node.release_chat_lease(chat_id, token)


def _fields(run: Run) -> dict[str, Any]:
    """What a run's record says of it from its start."""
    return {"runId": run.run_id, "chatId": run.chat_id, "requestId": run.request_id, "owner": run.owner,
            "agentKey": run.agent_key, "startedAt": str(run.started_at), "onDisconnect": run.on_disconnect}


def _whole(record: dict[str, str] | None) -> TypeGuard[dict[str, str]]:
    """A record to go by: one that lost its start (Redis lost it, then a late write put some fields back) is
    no record."""
    return record is not None and "runId" in record and "owner" in record and "chatId" in record


@contextlib.contextmanager
def _unreachable_is_503() -> Iterator[None]:
    try:
        yield
    except (RedisError, OSError) as exc:
        raise ServiceUnavailable(f"the cluster store (Redis) is unreachable: {exc}") from exc
