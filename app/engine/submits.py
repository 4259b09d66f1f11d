"""Pending frontend-tool submissions (SPEC §3.3 FRONTEND, §4 ``POST /api/ap/submit``).

A frontend tool call opens a ``PendingSubmit`` keyed by ``(runId, toolId)`` the moment
its ``tool.start`` is emitted (so a client that answers straight away is never told
``unmatched``); the run awaits it once the model's turn has finished streaming. ``SubmitRegistry.submit`` resolves it when the runId, toolId and owner all
match; a submission for a wait that timed out or was cancelled answers ``expired``;
anything else answers ``unmatched``. Two runs can never see each other's submissions
because the key includes both ids and the owner is checked.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal

from app.contract.nesting import depth_problem, too_deep
from app.errors import ForbiddenError, RequestError

SubmitStatus = Literal["accepted", "unmatched", "expired"]

#: how many settled (runId, toolId) pairs we remember to answer ``expired``
_SETTLED_MEMORY = 4096


@dataclass(frozen=True, slots=True)
class SubmitOutcome:
    accepted: bool
    status: SubmitStatus
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "status": self.status, "detail": self.detail}


@dataclass(slots=True)
class PendingSubmit:
    run_id: str
    tool_id: str
    owner: str
    future: asyncio.Future[Any] = field(repr=False)
    #: what ``GET /api/ap/run`` shows in ``pendingTools`` (SPEC §15)
    tool_name: str = ""
    tool_type: str = "html"
    tool_key: str = ""
    #: epoch ms when the wait times out (set again when the run starts waiting)
    expires_at: int | None = None

    def as_pending_tool(self) -> dict[str, Any]:
        return {"toolId": self.tool_id, "toolName": self.tool_name, "toolType": self.tool_type,
                "toolKey": self.tool_key, "expiresAt": self.expires_at}


def check_params(params: Any) -> None:
    """An answer is refused (400) before it reaches a run when it nests too deep to be written
    back out: the run would emit it in ``request.submit`` and ``tool.result`` and cut every stream."""
    if too_deep(params):
        raise RequestError(f"params: {depth_problem()}")


class SubmitRegistry:
    """Owns every pending frontend-tool wait of one gateway."""

    def __init__(self) -> None:
        self._pending: dict[tuple[str, str], PendingSubmit] = {}
        self._settled: OrderedDict[tuple[str, str], str] = OrderedDict()

    def open(self, run_id: str, tool_id: str, owner: str, *, tool_name: str = "", tool_type: str = "html",
             tool_key: str = "", expires_at: int | None = None) -> PendingSubmit:
        """Open the wait for ``(run_id, tool_id)``, or return the one already open."""
        existing = self._pending.get((run_id, tool_id))
        if existing is not None:
            return existing
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        pending = PendingSubmit(run_id=run_id, tool_id=tool_id, owner=owner, future=future, tool_name=tool_name,
                                tool_type=tool_type, tool_key=tool_key, expires_at=expires_at)
        self._pending[(run_id, tool_id)] = pending
        return pending

    def close(self, pending: PendingSubmit, reason: str) -> None:
        """Forget a wait (answered, timed out or cancelled); later submits answer ``expired``."""
        key = (pending.run_id, pending.tool_id)
        if self._pending.get(key) is pending:
            del self._pending[key]
        if key not in self._settled:
            self._settled[key] = reason
        while len(self._settled) > _SETTLED_MEMORY:
            self._settled.popitem(last=False)

    def discard(self, run_id: str, tool_id: str, reason: str) -> None:
        """Forget the wait of one call the engine will not execute."""
        pending = self._pending.get((run_id, tool_id))
        if pending is not None:
            if not pending.future.done():
                pending.future.cancel()
            self.close(pending, reason)

    def close_run(self, run_id: str, reason: str = "the run ended") -> None:
        """Forget every wait of a run that ended (including calls it never got to execute)."""
        for pending in [p for (rid, _), p in self._pending.items() if rid == run_id]:
            if not pending.future.done():
                pending.future.cancel()
            self.close(pending, reason)

    def submit(self, run_id: str, tool_id: str, params: Any, owner: str) -> SubmitOutcome:
        check_params(params)  # every edge comes here: HTTP, the sidecar, AG-UI, another instance
        key = (run_id, tool_id)
        pending = self._pending.get(key)
        if pending is None:
            reason = self._settled.get(key)
            if reason is not None:
                return SubmitOutcome(False, "expired", f"tool {tool_id} of run {run_id} is no longer waiting ({reason})")
            return SubmitOutcome(False, "unmatched", f"no frontend tool {tool_id} is waiting in run {run_id}")
        if pending.owner != owner:
            raise ForbiddenError(f"run {run_id} belongs to another user")
        if pending.future.done():
            return SubmitOutcome(False, "expired", f"tool {tool_id} of run {run_id} was already answered")
        pending.future.set_result({} if params is None else params)
        # kept (answered) until the run takes it: an answer that arrives while the model's turn is
        # still streaming must be there when the engine starts waiting (``open`` returns it)
        return SubmitOutcome(True, "accepted", f"delivered to tool {tool_id} of run {run_id}")

    def pending_for(self, run_id: str) -> list[PendingSubmit]:
        """The waits of one run still unanswered, oldest first."""
        return [p for (rid, _), p in self._pending.items() if rid == run_id and not p.future.done()]

    def pending_count(self) -> int:
        return len(self._pending)
