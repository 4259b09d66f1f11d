"""The built-in tool table (SPEC §3.3 "Built-in tools").

``builtin_tools()`` maps a tool name to its implementation; a ``.backend`` definition
without ``toolApi`` runs the implementation of the same name. The plan tools are
implemented by the engine (they act on the run's plan), so they are only *names* here.
"""

from __future__ import annotations

from collections.abc import Mapping

from app.tools.agent_file_create import agent_file_create
from app.tools.base import BuiltinTool
from app.tools.browser import browser_open
from app.tools.bash import bash_tool
from app.tools.city_datetime import city_datetime
from app.tools.mocks import (
    mock_city_weather,
    mock_logistics_status,
    mock_ops_runbook,
    mock_todo_tasks,
    mock_transport_schedule,
)
from app.tools.sensitive_data import mock_sensitive_data_detector
from app.tools.skill_script import run_skill_script

#: implemented by the run engine, not here (SPEC §5)
ENGINE_TOOLS: frozenset[str] = frozenset({"_plan_add_tasks_", "_plan_update_task_", "_plan_get_tasks_"})


def builtin_tools() -> Mapping[str, BuiltinTool]:
    """A fresh name → implementation mapping (no shared mutable state)."""
    return {
        "_bash_": bash_tool,
        "_skill_run_script_": run_skill_script,
        "agent_file_create": agent_file_create,
        "browser_open": browser_open,
        "city_datetime": city_datetime,
        "mock_city_weather": mock_city_weather,
        "mock_logistics_status": mock_logistics_status,
        "mock_ops_runbook": mock_ops_runbook,
        "mock_sensitive_data_detector": mock_sensitive_data_detector,
        "mock_todo_tasks": mock_todo_tasks,
        "mock_transport_schedule": mock_transport_schedule,
    }


def builtin_tool_names() -> frozenset[str]:
    """Every name the gateway implements itself: the built-ins and the engine's plan tools."""
    return frozenset(builtin_tools()) | ENGINE_TOOLS
