"""Runs that outlive connections (SPEC §15): the run service and the event log behind each run."""

from app.runs.log import MemoryRunLog, RunLog
from app.runs.service import Run, RunService

__all__ = ["MemoryRunLog", "Run", "RunLog", "RunService"]
