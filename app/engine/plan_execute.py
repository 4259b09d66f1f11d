"""PLAN_EXECUTE (SPEC §5): plan stage → task-by-task execute stage → optional summary.

The plan tools are implemented here because they act on the run's plan:
``_plan_add_tasks_`` (plan stage, forced), ``_plan_update_task_`` (execute stage,
forced) and ``_plan_get_tasks_`` (only where a stage lists it).
"""

from __future__ import annotations

from typing import Any

from app.catalog.definitions import Stage
from app.contract import events as ev
from app.engine.context import Plan, PlanTask, RunContext
from app.contract.events import now_ms
from app.engine.ids import plan_id
from app.engine.prompts import system_prompt, task_list_text, task_prompt
from app.engine.steps import end_step, flush_step
from app.engine.tool_exec import EngineTool, disclose_skills, execute_call, execute_calls, refuse_call, refuse_unoffered
from app.engine.react import ONE_AT_A_TIME
from app.engine.turn import model_turn
from app.errors import RunFailed

ADD_TASKS = "_plan_add_tasks_"
UPDATE_TASK = "_plan_update_task_"
GET_TASKS = "_plan_get_tasks_"
STATUSES = {"init", "completed", "failed", "canceled"}
#: legacy status names read as their current equivalent
LEGACY_STATUS = {"in_progress": "init", "cancelled": "canceled", "done": "completed"}
#: a plan's size: every change re-sends the whole list (``plan.update``), so a model looping in
#: ``_plan_add_tasks_`` (or told to by an injected prompt) must not grow it without end
MAX_PLAN_TASKS = 200
MAX_TASK_DESCRIPTION_CHARS = 2000
SETTLE_NUDGE = (
    "Task {task_id} is still open. If it is done, call _plan_update_task_ with taskId "
    '"{task_id}" and status "completed" (or "failed"); otherwise continue working on it.'
)


def _emit_plan(ctx: RunContext, created: bool) -> None:
    """SPEC §5: a new plan is ``plan.create`` followed at once by ``plan.update`` (the upstream web
    client draws its plan panel from ``plan.update`` only); every later change is ``plan.update``."""
    assert ctx.plan is not None
    if created:
        ctx.emit(ev.PlanCreate(plan_id=ctx.plan.plan_id, chat_id=ctx.chat_id, plan=ctx.plan.as_list()))
    ctx.emit(ev.PlanUpdate(plan_id=ctx.plan.plan_id, chat_id=ctx.chat_id, plan=ctx.plan.as_list()))
    ctx.plan_dirty = True


async def add_tasks(args: dict[str, Any], ctx: RunContext) -> str:
    items = args.get("tasks")
    if items is None and args.get("description"):
        items = [args]
    if not isinstance(items, list) or not items:
        return "失败: tasks must be a non-empty list of {taskId?, description}"
    created = ctx.plan is None
    if ctx.plan is None:
        ctx.plan = Plan(plan_id=plan_id())
    plan = ctx.plan
    for item in items:
        if not isinstance(item, dict) or not str(item.get("description", "")).strip():
            return "失败: every task needs a description"
        if len(str(item["description"]).strip()) > MAX_TASK_DESCRIPTION_CHARS:
            return f"失败: a task description is at most {MAX_TASK_DESCRIPTION_CHARS} characters"
    if len(plan.tasks) + len(items) > MAX_PLAN_TASKS:
        return (f"失败: a plan holds at most {MAX_PLAN_TASKS} tasks; it has {len(plan.tasks)}, "
                f"and {len(items)} more were asked for")
    taken = {task.task_id for task in plan.tasks}
    for item in items:
        task_id = str(item.get("taskId") or "").strip()[:128] or f"task_{len(plan.tasks) + 1}"
        while task_id in taken:
            task_id = f"{task_id}_{len(plan.tasks) + 1}"
        taken.add(task_id)
        status = LEGACY_STATUS.get(str(item.get("status", "init")), str(item.get("status", "init")))
        plan.tasks.append(PlanTask(task_id, str(item["description"]).strip(), status if status in STATUSES else "init"))
    _emit_plan(ctx, created)
    return "\n".join(f"{t.task_id} | {t.status} | {t.description}" for t in plan.tasks)


async def get_tasks(args: dict[str, Any], ctx: RunContext) -> str:
    if ctx.plan is None:
        return "no plan yet"
    current = ctx.task_id or next((t.task_id for t in ctx.plan.tasks if t.status == "init"), "none")
    return f"{task_list_text(ctx.plan)}\ncurrent taskId: {current}"


def _settle_event(ctx: RunContext, task: PlanTask) -> None:
    cls = {"completed": ev.TaskComplete, "failed": ev.TaskFail, "canceled": ev.TaskCancel}.get(task.status)
    if cls is not None:
        ctx.emit(cls(task_id=task.task_id, run_id=ctx.run_id, description=task.description))


def settle_open_task(ctx: RunContext, status: str, error: dict[str, Any] | None = None) -> None:
    """A run that ends while a task is open settles it (SPEC §6): ``failed`` with ``task.fail``
    (carrying the run's error) or ``canceled`` with ``task.cancel``; no-op without an open task."""
    task = ctx.plan.find(ctx.task_id) if ctx.plan is not None and ctx.task_id else None
    if task is None or task.status != "init":
        return
    task.status = status
    _emit_plan(ctx, created=False)
    if status == "failed":
        ctx.emit(ev.TaskFail(task_id=task.task_id, run_id=ctx.run_id, description=task.description, error=error))
    else:
        _settle_event(ctx, task)


async def update_task(args: dict[str, Any], ctx: RunContext) -> str:
    if ctx.plan is None:
        return "失败: there is no plan"
    task = ctx.plan.find(str(args.get("taskId", "")))
    if task is None:
        known = ", ".join(t.task_id for t in ctx.plan.tasks)
        return f"失败: unknown taskId {args.get('taskId')!r}; known: {known}"
    status = LEGACY_STATUS.get(str(args.get("status")), str(args.get("status")))
    if status not in STATUSES:
        return f"失败: status must be one of init/completed/failed/canceled, got {args.get('status')!r}"
    description = args.get("description")
    if isinstance(description, str) and len(description.strip()) > MAX_TASK_DESCRIPTION_CHARS:
        return f"失败: a task description is at most {MAX_TASK_DESCRIPTION_CHARS} characters"
    task.status = status
    if isinstance(description, str) and description.strip():
        task.description = description.strip()
    _emit_plan(ctx, created=False)
    _settle_event(ctx, task)
    return "OK"


def _is_failure(result: Any) -> bool:
    """A plan tool's failure: its own ``失败: …`` text, or an error result (e.g. arguments not JSON)."""
    if isinstance(result, str):
        return result.startswith("失败")
    return isinstance(result, dict) and result.get("ok") is False


def _engine_tools(stage: Stage) -> dict[str, EngineTool]:
    """The plan tools the stage offers (its forced tool plus any it lists); no others run there."""
    table: dict[str, EngineTool] = {ADD_TASKS: add_tasks, UPDATE_TASK: update_task, GET_TASKS: get_tasks}
    return {tool.name: table[tool.name] for tool in stage.tools if tool.name in table}


async def _plan_stage(ctx: RunContext) -> None:
    stage = ctx.agent.stages["plan"]
    ctx.stage = "plan"
    tools = list(stage.tools)
    system = system_prompt(ctx.agent, stage, tools)
    engine = _engine_tools(stage)
    if stage.deep_thinking:
        draft = await model_turn(ctx, stage, system, tools, tool_choice="none", reasoning_enabled=True,  # agent-plan-draft
                                 no_calls=True)
        refuse_unoffered(ctx, draft.calls)
        await flush_step(ctx, system)
        tools = [tool for tool in tools if tool.name == ADD_TASKS]
        system = system_prompt(ctx.agent, stage, tools)
    # agent-plan-generate
    turn = await model_turn(ctx, stage, system, tools, tool_choice="required", reasoning_enabled=False,
                            allowed_tools=[ADD_TASKS] if stage.deep_thinking else None)
    await execute_calls(ctx, turn.calls, engine)
    await flush_step(ctx, system)
    if ctx.plan is None or not ctx.plan.tasks:
        raise RunFailed("the plan stage did not create any task (_plan_add_tasks_ was not called)",
                        error_code="plan_not_created")


async def _execute_task(ctx: RunContext, task: PlanTask, system: str, budget: list[int]) -> bool:
    """Work on one task until it is settled. Returns False when the step budget ran out."""
    stage = ctx.agent.stages["execute"]
    tools = list(stage.tools)
    engine = _engine_tools(stage)
    assert ctx.plan is not None
    ctx.record({"role": "user", "content": [{"type": "text", "text": task_prompt(ctx.agent, ctx.plan, task)}],
                "ts": now_ms(), "_taskId": task.task_id})
    nudged = repaired = False
    while task.status == "init":
        if budget[0] <= 0:
            return False
        budget[0] -= 1
        turn = await model_turn(ctx, stage, system, tools, tool_choice="auto", one_call=True)
        if not turn.calls:
            if nudged:  # the engine settles a task the model keeps answering without updating
                task.status = "completed"
                _emit_plan(ctx, created=False)
                _settle_event(ctx, task)
            else:
                nudged = True
                ctx.record({"role": "user", "content": [{"type": "text",
                            "text": SETTLE_NUDGE.format(task_id=task.task_id)}], "ts": now_ms()})
            await flush_step(ctx, system)
            continue
        first, *extra = turn.calls
        result = await execute_call(ctx, first, engine)
        for call in extra:
            refuse_call(ctx, call, ONE_AT_A_TIME)
        disclose_skills(ctx)
        if first.name == UPDATE_TASK and _is_failure(result):
            if repaired:  # one repair allowed; then the engine gives up on the task
                task.status = "failed"
                _emit_plan(ctx, created=False)
                _settle_event(ctx, task)
            repaired = True
        await flush_step(ctx, system)
    return True


async def _execute_stage(ctx: RunContext) -> str | None:
    stage = ctx.agent.stages["execute"]
    ctx.stage = "execute"
    system = system_prompt(ctx.agent, stage, list(stage.tools))
    budget = [ctx.agent.plan_max_steps]
    assert ctx.plan is not None
    index = 0
    while index < len(ctx.plan.tasks):  # tasks may be appended while executing
        task = ctx.plan.tasks[index]
        index += 1
        if task.status != "init":
            continue
        ctx.task_id = task.task_id
        ctx.emit(ev.TaskStart(task_id=task.task_id, run_id=ctx.run_id, description=task.description))
        finished = await _execute_task(ctx, task, system, budget)
        if not finished:
            task.status = "canceled"
            _emit_plan(ctx, created=False)
            _settle_event(ctx, task)
            await flush_step(ctx, system)
            ctx.task_id = None
            return "max_steps"
        ctx.task_id = None
        if any(t.status == "failed" for t in ctx.plan.tasks):
            return "task_failed"
    return None


async def _summary_stage(ctx: RunContext) -> str:
    stage = ctx.agent.stages["summary"]
    ctx.stage = "summary"
    tools = list(stage.tools)
    system = system_prompt(ctx.agent, stage, tools)
    turn = await model_turn(ctx, stage, system, tools, tool_choice="auto" if tools else None)
    if turn.calls:
        await execute_calls(ctx, turn.calls, _engine_tools(stage))
        await flush_step(ctx, system)
        turn = await model_turn(ctx, stage, system, tools, tool_choice="none", no_calls=True)
        refuse_unoffered(ctx, turn.calls)
    await end_step(ctx, system)
    ctx.final_text = turn.content
    return turn.finish_reason or "stop"


async def run_plan_execute(ctx: RunContext) -> str:
    """Returns the finish reason: ``stop``, ``max_steps`` or ``task_failed``."""
    await _plan_stage(ctx)
    outcome = await _execute_stage(ctx)
    if outcome == "max_steps":
        return outcome
    if "summary" in ctx.agent.stages:
        reason = await _summary_stage(ctx)
        return outcome or reason
    return outcome or "stop"
