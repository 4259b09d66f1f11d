"""Writing a run's progress to chat memory, one ``step`` line per model turn (SPEC §8)."""

from __future__ import annotations

from typing import Any

from app.engine.context import RunContext
from app.contract.events import now_ms


async def flush_step(ctx: RunContext, system: str) -> None:
    """Append the messages gathered since the last step as one ``step`` line.

    ``system`` is written on the run's first step and again only when it changed;
    ``plan`` is written whenever the plan changed since the last step.
    """
    line = step_line(ctx, system)
    if line is not None:
        await ctx.services.chats.append(ctx.chat_id, line)


async def end_step(ctx: RunContext, system: str) -> None:
    """The mode's last step. On the run's own context it is left to the run's end, which writes it
    together with the ``run`` line: one trip to the chat writer's thread instead of two (issue 13).
    A graph node's sub-run writes it now: the node's checkpoint follows it."""
    if ctx.WRITES_RUN_END:
        ctx.step_system = system
    else:
        await flush_step(ctx, system)


def step_line(ctx: RunContext, system: str) -> dict[str, Any] | None:
    """The ``step`` line of the messages gathered since the last step (``None`` if there is
    nothing to write); they count as written from here on."""
    if not ctx.pending and not ctx.plan_dirty:
        return None
    ctx.step_seq += 1
    line: dict[str, Any] = {
        "_type": "step",
        "chatId": ctx.chat_id,
        "runId": ctx.run_id,
        "_stage": ctx.stage,
        "_seq": ctx.step_seq,
        "updatedAt": now_ms(),
        "messages": list(ctx.pending),
    }
    if ctx.task_id:
        line["taskId"] = ctx.task_id
    if system != ctx.last_system:
        line["system"] = system
        ctx.last_system = system
    if ctx.plan is not None and ctx.plan_dirty:
        line["plan"] = ctx.plan.as_memory()
        ctx.plan_dirty = False
    ctx.pending.clear()
    return line
