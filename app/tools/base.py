"""What every built-in tool receives and returns (SPEC §3.3).

A built-in tool is an ``async`` callable taking the (already template-resolved)
arguments and a ``ToolContext``. It returns a JSON-serialisable result, or raises
``ToolError(message)``; the engine turns that error into a clear error *result* for
the model instead of failing the run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from app.catalog.definitions import AgentDefinition, Catalog
from app.config import Settings
from app.contract.events import Event
from app.tools.sandbox import Sandbox


@dataclass(frozen=True, slots=True)
class ToolContext:
    """Per-call state handed to a tool: configuration, the catalog snapshot of the run,
    the running agent, ids, the shared HTTP client and the call's time budget."""

    settings: Settings
    catalog: Catalog
    agent: AgentDefinition | None
    run_id: str
    chat_id: str
    http: httpx.AsyncClient
    #: the tool call's time budget in seconds (``budget.tool.timeoutMs``)
    timeout_s: float
    #: the gateway's process sandbox (SPEC §14); ``None`` = a new one from ``settings``
    sandbox: Sandbox | None = None
    #: sends a run event (SPEC §23: ``artifact.publish``); ``None`` outside a run
    emit: Callable[[Event], None] | None = None

    def process_sandbox(self) -> Sandbox:
        return self.sandbox if self.sandbox is not None else Sandbox(self.settings)


BuiltinTool = Callable[[dict[str, Any], ToolContext], Awaitable[Any]]
