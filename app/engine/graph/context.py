"""The context one graph node runs in (SPEC §21).

A node sees its own conversation — the messages the model gets, the memory messages of the
node, its task id, the agent whose stage it runs (the graph agent, or the sub-agent of an
``agent`` node) — while everything that must stay unique or bounded across the whole run is
the run's own: event ids (``{runId}_c_{n}``…), the memory ``_seq``, the tool-call count of
the budget, the last system prompt written to memory, usage, tool results, the deadline.
Several nodes may run at once (parallel branches), so those counters are read and written
through to the run's ``RunContext`` instead of being copied.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from app.catalog.definitions import AgentDefinition
from app.engine.context import RunContext

#: RunContext fields a node shares with its run (read and written through, never copied)
SHARED = frozenset({"step_seq", "reasoning_blocks", "content_blocks", "tool_calls", "last_system"})


class NodeContext(RunContext):
    """A ``RunContext`` for one node visit: own messages and task id, the run's counters."""

    __slots__ = ("root",)
    root: RunContext
    WRITES_RUN_END = False  # the node's checkpoint follows its last step

    def __init__(self, run: RunContext, *, task_id: str, agent: AgentDefinition | None = None,
                 history: list[dict[str, Any]] | None = None) -> None:
        root: RunContext = run.root if isinstance(run, NodeContext) else run
        self.root = root  # first: the shared fields below read through it
        for item in dataclasses.fields(RunContext):
            if item.name not in SHARED:
                setattr(self, item.name, getattr(root, item.name))
        self.agent = agent or root.agent
        self.history = history if history is not None else []
        self.messages = []
        self.pending = []
        self.stage = "graph"
        self.task_id = task_id
        self.disclosed_skills = set()
        self.to_disclose = []
        self.plan = None  # the graph's plan is the run's; a node (or a sub-run) has none of its own
        self.plan_dirty = False
        self.final_text = ""
        self.last_call_tokens = 0

    @property
    def step_seq(self) -> int:
        return self.root.step_seq

    @step_seq.setter
    def step_seq(self, value: int) -> None:
        self.root.step_seq = value

    @property
    def reasoning_blocks(self) -> int:
        return self.root.reasoning_blocks

    @reasoning_blocks.setter
    def reasoning_blocks(self, value: int) -> None:
        self.root.reasoning_blocks = value

    @property
    def content_blocks(self) -> int:
        return self.root.content_blocks

    @content_blocks.setter
    def content_blocks(self, value: int) -> None:
        self.root.content_blocks = value

    @property
    def tool_calls(self) -> int:
        return self.root.tool_calls

    @tool_calls.setter
    def tool_calls(self, value: int) -> None:
        self.root.tool_calls = value

    @property
    def last_system(self) -> str | None:
        return self.root.last_system

    @last_system.setter
    def last_system(self, value: str | None) -> None:
        self.root.last_system = value
