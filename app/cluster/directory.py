"""The run service's view of the cluster (``RunDirectory`` of ``app.runs.remote``), on a ``ClusterNode``.

* ``log_for`` — a ``ClusterRunLog``: every event of a local run also goes to its Redis Stream;
* ``registered`` — the run's record (owner, chat, agent, instance, start) is queued before its
  first event; its end (status, outcome, times) after its terminal event, then the record and
  the stream expire after ``retention-seconds``;
* ``locate`` / ``active_run_of_chat`` / ``runs_of`` — runs of other instances, as ``RemoteRun``s
  whose log reads the Stream;
* ``call`` — ``describe`` / ``submit`` / ``interrupt`` done by the run's own instance; a run whose
  instance is gone is described from its record;
* ``lost_run`` — the reaper's action for a run of a dead instance: a terminal ``run.error``
  (``instance_lost``) appended to its Stream, its record ended, its chat file's end line written.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import orjson

from app.cluster.node import ClusterNode
from app.cluster.runlog import ClusterRunLog, StreamRunLog
from app.contract.events import now_ms
from app.contract.runs import RunOutcome
from app.memory.store import ChatStore
from app.runs.remote import RemoteRun

if TYPE_CHECKING:
    from app.runs.service import Run

INSTANCE_LOST = "instance_lost"
_END_STATUS = {"completed": "completed", "error": "error", "cancelled": "cancelled"}


class ClusterDirectory:
    """``RunDirectory`` backed by Redis through ``node``; ``chats`` is the shared chat folder."""

    def __init__(self, node: ClusterNode, chats: ChatStore) -> None:
        self.node = node
        self.chats = chats

    def check_healthy(self) -> None:
        self.node.check_healthy()

    def log_for(self, run_id: str) -> ClusterRunLog:
        return ClusterRunLog(self.node, run_id)

    def chat_lease(self, chat_id: str) -> AbstractAsyncContextManager[None]:
        return self.node.chat_lease(chat_id)

    def registered(self, run: Run) -> None:
        fields = {"runId": run.run_id, "chatId": run.chat_id, "requestId": run.request_id, "owner": run.owner,
                  "agentKey": run.agent_key, "startedAt": str(run.started_at), "onDisconnect": run.on_disconnect}

        async def register() -> None:
            await self.node.register_run(run.run_id, fields)

        async def end() -> None:
            outcome = run.outcome
            ended: dict[str, Any] = {"status": outcome.status if outcome else "error",
                                     "endedAt": str(run.ended_at or now_ms()), "lastSeq": str(run.log.last_seq)}
            if outcome is not None:
                ended["outcome"] = orjson.dumps({"status": outcome.status, "finishReason": outcome.finish_reason,
                                                 "error": outcome.error, "reason": outcome.reason}).decode()
            await self.node.end_run(run.run_id, run.chat_id, ended)

        self.node.enqueue((run.run_id, register))
        if isinstance(run.log, ClusterRunLog):
            run.log.on_end = end

    async def locate(self, run_id: str) -> RemoteRun | None:
        record = await self.node.run_record(run_id)
        return self._remote(record) if record is not None else None

    async def active_run_of_chat(self, chat_id: str) -> str | None:
        return await self.node.active_run_of_chat(chat_id)

    async def runs_of(self, owner: str) -> list[RemoteRun]:
        return [self._remote(record) for record in await self.node.runs_of(owner)]

    def _remote(self, record: dict[str, str]) -> RemoteRun:
        outcome = None
        if "outcome" in record:
            data = orjson.loads(record["outcome"])
            outcome = RunOutcome(data["status"], finish_reason=data.get("finishReason"), error=data.get("error"),
                                 reason=data.get("reason"))
        status = record.get("status", "running")
        ended = status in _END_STATUS
        return RemoteRun(
            run_id=record["runId"], chat_id=record["chatId"], request_id=record.get("requestId", record["runId"]),
            owner=record["owner"], agent_key=record.get("agentKey", ""), instance=record.get("instance", ""),
            log=StreamRunLog(self.node, record["runId"], int(record.get("lastSeq", "0")), ended),
            started_at=int(record.get("startedAt", "0")),
            ended_at=int(record["endedAt"]) if "endedAt" in record else None,
            on_disconnect=record.get("onDisconnect", "cancel"), outcome=outcome, status=status,
        )

    async def call(self, run: RemoteRun, op: str, payload: dict[str, Any]) -> Any:
        if op == "describe" and (run.outcome is not None or not await self.node.instance_alive(run.instance)):
            return await self._describe_record(run)
        return await self.node.call(run.instance, op, payload)

    async def _describe_record(self, run: RemoteRun) -> dict[str, Any]:
        data: dict[str, Any] = {
            "runId": run.run_id, "chatId": run.chat_id, "agentKey": run.agent_key, "requestId": run.request_id,
            "status": run.status if run.status in _END_STATUS else "running",
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
        """End a run whose instance died: for its watchers, its record and its chat file."""
        error = {"code": INSTANCE_LOST,
                 "message": f"the gateway instance running this run ({record.get('instance', '?')}) stopped"}
        seq = await self.node.last_seq(run_id) + 1
        ended_at = now_ms()
        wire = {"type": "run.error", "runId": run_id, "error": error, "seq": seq, "timestamp": ended_at}
        await self.node.publish(run_id, [(seq, orjson.dumps(wire))])
        outcome = orjson.dumps({"status": "error", "error": error}).decode()
        await self.node.redis.hset(f"agw:run:{run_id}", mapping={
            "status": "error", "endedAt": str(ended_at), "lastSeq": str(seq), "outcome": outcome})
        seconds = max(int(self.node.retention_seconds), 1)
        await self.node.redis.expire(f"agw:run:{run_id}", seconds)
        await self.node.redis.expire(f"agw:run:{run_id}:events", seconds)
        chat_id = record.get("chatId")
        if chat_id:
            await self.chats.append(chat_id, {"_type": "run", "chatId": chat_id, "runId": run_id, "updatedAt": ended_at,
                                              "status": "error", "error": error, "usage": {}})
            await self.node.redis.delete(f"agw:chat:{chat_id}:active")
