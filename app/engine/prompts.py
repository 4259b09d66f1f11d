"""System prompts, tool appendix, skill catalog and disclosure, task prompts (SPEC §3.3–§3.4, §5)."""

from __future__ import annotations

from collections.abc import Sequence

from app.catalog.definitions import AgentDefinition, SkillDefinition, Stage, ToolDefinition
from app.engine.context import Plan, PlanTask


def tool_appendix(agent: AgentDefinition, tools: Sequence[ToolDefinition]) -> str:
    """The "tool descriptions" and "after-call instructions" sections for ``tools``."""
    if not tools:
        return ""
    prompts = agent.runtime_prompts
    lines = [f"## {prompts.tool_description_title}"]
    lines += [f"- {tool.name}: {tool.description}" for tool in tools]
    hints = [tool for tool in tools if tool.after_call_hint]
    if hints:
        lines += ["", f"## {prompts.after_call_hint_title}"]
        lines += [f"- {tool.name}: {tool.after_call_hint}" for tool in hints]
    return "\n".join(lines)


def skill_catalog(agent: AgentDefinition) -> str:
    if not agent.skills:
        return ""
    lines = [f"## {agent.runtime_prompts.skill_catalog_header}"]
    lines += [f"- {skill.id} ({skill.name}): {skill.description}" for skill in agent.skills]
    return "\n".join(lines)


def system_prompt(agent: AgentDefinition, stage: Stage, tools: Sequence[ToolDefinition]) -> str:
    parts = [stage.system_prompt.strip(), tool_appendix(agent, tools), skill_catalog(agent)]
    return "\n\n".join(part for part in parts if part)


def skill_disclosure(agent: AgentDefinition, skill: SkillDefinition, max_chars: int) -> str:
    """The full skill body, disclosed the first time a run uses the skill."""
    prompts = agent.runtime_prompts
    body = skill.body
    if len(body) > max_chars:
        body = body[:max_chars] + f"\n…[truncated at {max_chars} characters]"
    return f"{prompts.skill_disclosure_header}\n[{skill.id}] {skill.name}\n{prompts.skill_instructions_label}:\n{body}"


def task_list_text(plan: Plan) -> str:
    return "\n".join(f"- {t.task_id} | {t.status} | {t.description}" for t in plan.tasks)


def task_prompt(agent: AgentDefinition, plan: Plan, task: PlanTask) -> str:
    """Fill ``taskExecutionPromptTemplate``: ``{task_list}``/``{taskList}``, ``{task_id}``/``{taskId}``,
    ``{task_description}``/``{taskDescription}`` (single or double braces)."""
    values = {
        "task_list": task_list_text(plan),
        "task_id": task.task_id,
        "task_description": task.description,
        "taskList": task_list_text(plan),
        "taskId": task.task_id,
        "taskDescription": task.description,
    }
    text = agent.runtime_prompts.task_execution_prompt_template
    for name, value in values.items():
        text = text.replace("{{" + name + "}}", value).replace("{" + name + "}", value)
    return text
