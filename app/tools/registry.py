"""The built-in tool table (SPEC §3.3 "Built-in tools").

``builtin_tools()`` maps a tool name to its implementation; a ``.backend`` definition
without ``toolApi`` runs the implementation of the same name. The plan tools are
implemented by the engine (they act on the run's plan), so they are only *names* here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from app.catalog.mcp import WILDCARD, split_mcp_name
from app.tools.agent_file_create import agent_file_create
from app.tools.artifact_publish import artifact_publish
from app.tools.base import BuiltinTool, ToolContext
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
        "_artifact_publish_": artifact_publish,
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


#: SPEC §18: ``(serverKey, tool, arguments)`` → the result of that MCP server's tool (``McpManager.call_tool``)
McpCall = Callable[[str, str, dict[str, Any]], Awaitable[Any]]


class _WithMcpTools(Mapping[str, BuiltinTool]):
    """The built-in table, plus an implementation for every ``mcp__<serverKey>__<tool>`` name that
    hands the call to the MCP client (SPEC §18). Iterating lists the built-ins only."""

    def __init__(self, tools: Mapping[str, BuiltinTool], call: McpCall) -> None:
        self._tools = tools
        self._call = call

    def __getitem__(self, name: str) -> BuiltinTool:
        if name in self._tools:
            return self._tools[name]
        parts = split_mcp_name(name)
        if parts is None or parts[1] == WILDCARD:
            raise KeyError(name)
        server_key, tool = parts
        call = self._call

        async def mcp_tool(args: dict[str, Any], ctx: ToolContext) -> Any:
            return await call(server_key, tool, args)

        return mcp_tool

    def __iter__(self) -> Iterator[str]:
        return iter(self._tools)

    def __len__(self) -> int:
        return len(self._tools)


def with_mcp_tools(tools: Mapping[str, BuiltinTool], call: McpCall) -> Mapping[str, BuiltinTool]:
    """``tools`` plus the MCP servers' tools, dispatched to ``call``."""
    return _WithMcpTools(tools, call)
