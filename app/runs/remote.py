"""Runs that live on another instance of a cluster (SPEC §16), as the run service sees them.

``RemoteRun`` carries what the edges need — ids, owner, times, its log (read from the
cluster's store) and, once ended, its outcome — and is produced by a ``RunDirectory``: the
cluster's side of the run service (``app.cluster.directory``). Without a cluster there is
no directory and every run is local.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from app.contract.runs import RunOutcome
from app.runs.log import RunLog

if TYPE_CHECKING:
    from app.runs.service import Run


@dataclass(slots=True, eq=False)
class RemoteRun:
    run_id: str
    chat_id: str
    request_id: str
    owner: str
    agent_key: str
    instance: str
    log: RunLog
    started_at: int
    ended_at: int | None = None
    on_disconnect: str = "cancel"
    outcome: RunOutcome | None = None
    status: str = "running"

    @property
    def live(self) -> bool:
        return self.outcome is None

    def cancel(self) -> bool:
        """Watchers of a remote run never cancel it (interrupt goes through the directory)."""
        return False


class RunDirectory(Protocol):
    """The cluster's side of the run service: where runs of other instances are found."""

    def check_healthy(self) -> None:
        """Raise ``ServiceUnavailable`` while the cluster store is unreachable."""
        ...

    def log_for(self, run_id: str) -> RunLog: ...

    async def admit(self, run: Run) -> None:
        """Hold a slot of the cluster-wide concurrent-run caps for a new local run and make it findable
        by every instance; ``RunLimitExceeded`` beyond a cap."""
        ...

    def release(self, run: Run) -> None:
        """The run ended: give its slot back (idempotent)."""
        ...

    def registered(self, run: Run) -> None:
        """A local run started: its end is recorded cluster-wide after its terminal event."""
        ...

    async def locate(self, run_id: str) -> RemoteRun | None: ...

    async def active_run_of_chat(self, chat_id: str) -> str | None: ...

    async def runs_of(self, owner: str) -> list[RemoteRun]: ...

    async def call(self, run: RemoteRun, op: str, payload: dict[str, Any]) -> Any:
        """Have the run's own instance do ``op`` (``describe``, ``submit``, ``interrupt``)."""
        ...

    def chat_lease(self, chat_id: str) -> AbstractAsyncContextManager[None]: ...
