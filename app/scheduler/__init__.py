"""Scheduled agent runs (SPEC §11): APScheduler 3 plus a JSON spec file in the data folder."""

from app.scheduler.jobs import ScheduleRequest
from app.scheduler.service import ScheduleService, parse_schedule_request

__all__ = ["ScheduleRequest", "ScheduleService", "parse_schedule_request"]
