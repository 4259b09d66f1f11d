"""A run's status and typed outcome (SPEC §15), shared by the run service and every front end.

Front ends never guess a run's end from its last event: the run service sets one
``RunOutcome`` when the run ends, and ``RunStatus`` names what ``GET /api/ap/run`` reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

#: what ``GET /api/ap/run`` reports: ``waiting`` = live, with a frontend tool waiting for a submit
RunStatus = Literal["running", "waiting", "completed", "error", "cancelled"]
EndStatus = Literal["completed", "error", "cancelled"]
RUN_STATUSES: tuple[str, ...] = ("running", "waiting", "completed", "error", "cancelled")


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """How a run ended: ``completed`` (with the model's finish reason), ``error`` (with the
    ``run.error`` body ``{code, message, …}``) or ``cancelled`` (with the reason)."""

    status: EndStatus
    finish_reason: str | None = None
    error: dict[str, Any] | None = None
    reason: str | None = None
    #: ``{promptTokens, completionTokens, totalTokens, modelCalls, points}`` (as on ``run.complete``)
    usage: dict[str, Any] | None = None

    @property
    def event_status(self) -> str:
        """The short word the sidecar's ``agent.query`` result has always carried."""
        return {"completed": "complete", "error": "error", "cancelled": "cancel"}[self.status]
