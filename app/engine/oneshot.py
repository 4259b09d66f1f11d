"""ONESHOT (SPEC §5): one model call; if it called tools, run them and make one more call."""

from __future__ import annotations

from app.engine.context import RunContext
from app.engine.prompts import system_prompt
from app.engine.steps import end_step, flush_step
from app.engine.tool_exec import execute_calls, refuse_unoffered
from app.engine.turn import ToolChoiceWire, model_turn

TOOL_CHOICE: dict[str, ToolChoiceWire] = {"NONE": "none", "AUTO": "auto", "REQUIRED": "required"}


async def run_oneshot(ctx: RunContext) -> str:
    """Returns the finish reason."""
    stage = ctx.agent.stages["plain"]
    ctx.stage = "oneshot"
    tools = list(stage.tools)
    system = system_prompt(ctx.agent, stage, tools)
    turn = await model_turn(ctx, stage, system, tools, tool_choice=TOOL_CHOICE[ctx.agent.tool_choice])
    if turn.calls:
        await execute_calls(ctx, turn.calls, {})
        await flush_step(ctx, system)
        turn = await model_turn(ctx, stage, system, tools, tool_choice="none", no_calls=True)
        refuse_unoffered(ctx, turn.calls)
    await end_step(ctx, system)
    ctx.final_text = turn.content
    return turn.finish_reason or "stop"
