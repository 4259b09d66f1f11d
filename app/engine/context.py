"""Per-run state, passed explicitly through the engine (SPEC §5)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx

from app.catalog.definitions import AgentDefinition, Catalog, ModelDefinition
from app.config import Settings
from app.contract.events import Event
from app.engine.pricing import points_for
from app.engine.submits import SubmitRegistry
from app.memory.store import ChatStore
from app.tools.base import BuiltinTool
from app.engine.limits import RateLimiter
from app.engine.routing import ModelRouter
from app.tools.sandbox import Sandbox
from app.usage.ledger import UsageLedger


@dataclass(slots=True)
class RunServices:
    """The gateway-wide things a run uses (built once in the lifespan)."""

    settings: Settings
    http: httpx.AsyncClient
    chats: ChatStore
    submits: SubmitRegistry
    builtin_tools: Mapping[str, BuiltinTool]
    #: provider key → API key (plain or decrypted credential)
    api_key_for: Callable[[str], str]
    #: runs every process tool (SPEC §14)
    sandbox: Sandbox
    #: group member order and circuit breakers (SPEC §19)
    router: ModelRouter
    #: request/token limits (SPEC §19)
    limiter: RateLimiter
    #: one line per model call in data/.agw/usage (SPEC §19)
    ledger: UsageLedger
    #: a cluster-wide lease on a chat (SPEC §16), held with the local chat lock; None = one instance
    chat_lease: Callable[[str], AbstractAsyncContextManager[None]] | None = None


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    model_calls: int = 0
    points: float = 0.0
    #: the provider model that answered the last call (a group's member, SPEC §19)
    model_key: str | None = None

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "promptTokens": self.prompt_tokens,
            "completionTokens": self.completion_tokens,
            "totalTokens": self.total_tokens,
            "modelCalls": self.model_calls,
            "points": round(self.points, 4),
        }
        if self.model_key is not None:
            data["modelKey"] = self.model_key
        return data


@dataclass(slots=True)
class PlanTask:
    task_id: str
    description: str
    status: str = "init"

    def as_dict(self) -> dict[str, Any]:
        return {"taskId": self.task_id, "description": self.description, "status": self.status}


@dataclass(slots=True)
class Plan:
    plan_id: str
    tasks: list[PlanTask] = field(default_factory=list)

    def as_list(self) -> list[dict[str, Any]]:
        return [task.as_dict() for task in self.tasks]

    def as_memory(self) -> dict[str, Any]:
        return {"planId": self.plan_id, "tasks": self.as_list()}

    def find(self, task_id: str) -> PlanTask | None:
        return next((task for task in self.tasks if task.task_id == task_id), None)


class RunDeadline:
    """The run's ``runTimeoutMs`` (SPEC §5), paused while a frontend tool waits for the user
    (docs/DECISIONS.md: the budget bounds the run minus that wait). Waits may overlap (parallel
    graph branches): the clock stops at the first and starts again, with the time that was left,
    when the last one ends."""

    __slots__ = ("_timeout", "_waits", "_left")

    def __init__(self, timeout: asyncio.Timeout) -> None:
        self._timeout = timeout
        self._waits = 0
        self._left: float | None = None

    def pause(self) -> None:
        self._waits += 1
        when = self._timeout.when()
        if self._waits == 1 and when is not None and not self._timeout.expired():
            self._left = max(0.0, when - asyncio.get_running_loop().time())
            self._timeout.reschedule(None)

    def resume(self) -> None:
        self._waits -= 1
        if self._waits == 0 and self._left is not None:
            left, self._left = self._left, None
            if not self._timeout.expired():  # an expiring deadline cannot be changed (nor needs to be)
                self._timeout.reschedule(asyncio.get_running_loop().time() + left)


@dataclass(slots=True)
class RunContext:
    """Everything one run owns. Nothing here is shared with another run."""

    #: this context's run ends with ``RunExecution._finish``, which writes what is left (``end_step``)
    WRITES_RUN_END: ClassVar[bool] = True

    services: RunServices
    catalog: Catalog
    agent: AgentDefinition
    run_id: str
    chat_id: str
    request_id: str
    owner: str
    emit: Callable[[Event], None]
    #: prior runs' messages, already in model shape (replay window)
    history: list[dict[str, Any]]
    #: this run's messages in memory shape (SPEC §8)
    messages: list[dict[str, Any]] = field(default_factory=list)
    #: messages not yet written to memory as a step
    pending: list[dict[str, Any]] = field(default_factory=list)
    step_seq: int = 0
    last_system: str | None = None
    #: the system prompt of the run's last step when the mode left it to the run's end (``end_step``)
    step_system: str | None = None
    stage: str = "oneshot"
    task_id: str | None = None
    reasoning_blocks: int = 0
    content_blocks: int = 0
    tool_calls: int = 0
    usage: Usage = field(default_factory=Usage)
    results_by_tool: dict[str, Any] = field(default_factory=dict)
    disclosed_skills: set[str] = field(default_factory=set)
    to_disclose: list[str] = field(default_factory=list)
    plan: Plan | None = None
    plan_dirty: bool = False
    #: the run's deadline, paused while a frontend tool waits
    deadline: RunDeadline | None = None
    final_text: str = ""
    #: prompt + completion tokens of the last model call (for the token limits)
    last_call_tokens: int = 0

    def next_reasoning_id(self) -> str:
        self.reasoning_blocks += 1
        return f"{self.run_id}_r_{self.reasoning_blocks}"

    def next_content_id(self) -> str:
        self.content_blocks += 1
        return f"{self.run_id}_c_{self.content_blocks}"

    def record(self, message: dict[str, Any]) -> None:
        """Add a memory-shaped message to this run (and to the next step line)."""
        self.messages.append(message)
        self.pending.append(message)

    def add_usage(self, model: ModelDefinition, prompt: int, completion: int) -> None:
        self.usage.model_key = model.key
        self.usage.prompt_tokens += prompt
        self.usage.completion_tokens += completion
        self.usage.total_tokens += prompt + completion
        self.usage.points += points_for(model.pricing, prompt, completion)
