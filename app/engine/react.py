"""REACT (SPEC §5): up to ``react.maxSteps`` turns of think → one tool → observe."""

from __future__ import annotations

from app.engine.context import RunContext
from app.engine.oneshot import TOOL_CHOICE
from app.engine.prompts import system_prompt
from app.engine.steps import end_step, flush_step
from app.engine.tool_exec import disclose_skills, execute_call, refuse_call
from app.engine.turn import model_turn

ONE_AT_A_TIME = "only one tool may be called per turn; call the tools one at a time"


async def run_react(ctx: RunContext) -> str:
    """Returns the finish reason: the model's own, or ``max_steps`` when the cap is hit."""
    stage = ctx.agent.stages["react"]
    ctx.stage = "react"
    tools = list(stage.tools)
    system = system_prompt(ctx.agent, stage, tools)
    for step in range(ctx.agent.react_max_steps):
        choice = TOOL_CHOICE[ctx.agent.tool_choice] if step == 0 else "auto"
        turn = await model_turn(ctx, stage, system, tools, tool_choice=choice, one_call=True)
        if not turn.calls:
            await end_step(ctx, system)
            ctx.final_text = turn.content
            return turn.finish_reason or "stop"
        first, *extra = turn.calls
        await execute_call(ctx, first, {})
        for call in extra:
            refuse_call(ctx, call, ONE_AT_A_TIME)
        disclose_skills(ctx)
        await flush_step(ctx, system)
    return "max_steps"
