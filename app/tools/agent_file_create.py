"""``agent_file_create``: create a NEW ``agents/<key>.json`` (SPEC §3.2, §3.3, §14).

Writes Agent JSON v2 only. The upstream tool's shortcuts are mapped onto the v2
structure — ``systemPrompt`` → the mode's block (``plain`` / ``react`` /
``planExecute.plan|execute``), ``planSystemPrompt`` / ``executeSystemPrompt`` /
``summarySystemPrompt`` → ``planExecute.*``, ``maxSteps`` → ``react.maxSteps`` or
``planExecute.maxSteps``, ``modelKey`` → ``modelConfig.modelKey`` — and fields may
also come inside a ``config`` object (explicit arguments win). Legacy fields are
refused. The key goes through ``check_key``; every model, tool and skill named must
exist in the catalog; the model defaults to the catalog's first.

Hardening (SPEC §14):

* Only new keys. A key already in the catalog, or any ``agents/`` entry that would
  load under that key (``<key>.json`` in any letter case, so case-variants on
  case-insensitive file systems too), is a tool error: existing agents are never
  updated or overwritten. The final file is created exclusively (``os.link`` of a
  fully written temp file, which fails when the name exists), so of two concurrent
  calls with one key only one succeeds, and a reader never sees a partial file.
* No privilege escalation. The new agent is validated exactly as the loader will
  (``parse_agent``); its effective tools (every stage, inheritance applied) and skills
  must all be tools and skills the calling agent has. The plan tools PLAN_EXECUTE
  forces into its stages act only on the run's own plan and are always allowed.
  Without a calling agent, no tools and no skills may be given. Its budget may not exceed the
  calling agent's (the default budget without one), field by field.

The file goes live through hot reload.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app.catalog._edge import MAX_DEFINITION_BYTES
from app.catalog.agents import ENGINE_TOOLS, AgentRefs, parse_agent
from app.catalog.definitions import AgentDefinition, Budget, ToolDefinition
from app.catalog.mcp import WILDCARD, McpTools, split_mcp_name
from app.config import deep_merge
from app.errors import DefinitionError, PathEscapeError, ToolError
from app.paths import check_key
from app.tools.base import ToolContext

logger = logging.getLogger(__name__)

_MODES = ("ONESHOT", "REACT", "PLAN_EXECUTE")
_TOOL_CHOICES = ("NONE", "AUTO", "REQUIRED")
#: the suffix the catalog loads agent files from (compared case-insensitively, as the loader does)
_AGENT_SUFFIX = ".json"
#: v2 fields copied as they are
_V2_FIELDS = (
    "name", "icon", "description", "mode", "modelConfig", "toolConfig", "skillConfig", "skills",
    "toolChoice", "budget", "plain", "react", "planExecute", "runtimePrompts",
)  # fmt: skip
_SHORTCUTS = (
    "key", "agentId", "modelKey", "systemPrompt", "planSystemPrompt", "executeSystemPrompt",
    "summarySystemPrompt", "maxSteps", "config",
)  # fmt: skip
_LEGACY = ("verify", "output", "toolPolicy", "reasoning", "tools", "deepThink")
_MODEL_CONFIG_LEGACY = ("providerKey", "model")
_BUDGET_LEGACY = ("maxModelCalls", "maxToolCalls", "maxSteps", "timeoutMs", "retryCount")


def _obj(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ToolError(f"{name!r} must be an object")
    return dict(value)


def _str(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ToolError(f"{name!r} must be a string")
    return value


def _check_fields(fields: Mapping[str, Any]) -> None:
    for name in fields:
        if name in _LEGACY:
            raise ToolError(f"legacy field {name!r} is not supported (Agent JSON v2 only)")
        if name not in _V2_FIELDS and name not in _SHORTCUTS:
            raise ToolError(f"unknown agent field {name!r}")
    model_config = fields.get("modelConfig")
    if isinstance(model_config, Mapping):
        for name in _MODEL_CONFIG_LEGACY:
            if name in model_config:
                raise ToolError(f"legacy field 'modelConfig.{name}' is not supported; use modelConfig.modelKey")
    budget = fields.get("budget")
    if isinstance(budget, Mapping):
        for name in _BUDGET_LEGACY:
            if name in budget:
                raise ToolError(f"legacy field 'budget.{name}' is not supported; use budget.model / budget.tool")


def _pick_mode(fields: Mapping[str, Any]) -> str:
    mode = fields.get("mode")
    if mode is None:
        if any(fields.get(k) for k in ("planSystemPrompt", "executeSystemPrompt", "summarySystemPrompt")):
            mode = "PLAN_EXECUTE"
        elif fields.get("maxSteps") is not None:
            mode = "REACT"
        else:
            mode = "ONESHOT"
    if not isinstance(mode, str) or mode.upper() not in _MODES:
        raise ToolError(f"mode must be one of {', '.join(_MODES)}, got {mode!r}")
    return mode.upper()


def build_agent(args: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """The Agent JSON v2 object (without ``key``) for these arguments."""
    config = _obj(args.get("config"), "config")
    _check_fields(config)
    _check_fields(args)
    fields = deep_merge(config, {k: v for k, v in args.items() if k != "config" and v is not None})
    mode = _pick_mode(fields)
    defaults = ctx.settings.agent.tools.agent_file_create

    agent: dict[str, Any] = {name: fields[name] for name in _V2_FIELDS if name in fields}
    agent["mode"] = mode

    model_config = _obj(agent.get("modelConfig"), "modelConfig")
    model_key = _str(fields.get("modelKey"), "modelKey")
    if model_key:
        model_config["modelKey"] = model_key
    agent["modelConfig"] = model_config

    prompt = _str(fields.get("systemPrompt"), "systemPrompt")
    max_steps = fields.get("maxSteps")
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1):
        raise ToolError("'maxSteps' must be a positive integer")
    default_prompt = defaults.default_system_prompt
    if mode == "ONESHOT":
        block = _obj(agent.get("plain"), "plain")
        block["systemPrompt"] = prompt or block.get("systemPrompt") or default_prompt
        agent["plain"] = block
    elif mode == "REACT":
        block = _obj(agent.get("react"), "react")
        block["systemPrompt"] = prompt or block.get("systemPrompt") or default_prompt
        if max_steps is not None:
            block["maxSteps"] = max_steps
        agent["react"] = block
    else:
        block = _obj(agent.get("planExecute"), "planExecute")
        for stage, shortcut, fallback in (
            ("plan", "planSystemPrompt", prompt),
            ("execute", "executeSystemPrompt", prompt),
            ("summary", "summarySystemPrompt", None),
        ):
            stage_block = _obj(block.get(stage), f"planExecute.{stage}")
            value = _str(fields.get(shortcut), shortcut) or fallback
            if value:
                stage_block["systemPrompt"] = value
            if stage != "summary" and not stage_block.get("systemPrompt"):
                stage_block["systemPrompt"] = default_prompt
            if stage_block or stage != "summary":
                block[stage] = stage_block
        if max_steps is not None:
            block["maxSteps"] = max_steps
        agent["planExecute"] = block

    tool_choice = agent.get("toolChoice")
    if tool_choice is not None:
        if not isinstance(tool_choice, str) or tool_choice.upper() not in _TOOL_CHOICES:
            raise ToolError(f"toolChoice must be one of {', '.join(_TOOL_CHOICES)}, got {tool_choice!r}")
        agent["toolChoice"] = tool_choice.upper()

    _resolve_models(agent, ctx)
    _check_references(agent, ctx)
    return agent


def _stage_blocks(agent: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    blocks: list[tuple[str, Mapping[str, Any]]] = [("", agent)]
    for name in ("plain", "react"):
        if isinstance(agent.get(name), Mapping):
            blocks.append((f"{name}.", agent[name]))
    plan_execute = agent.get("planExecute")
    if isinstance(plan_execute, Mapping):
        for name in ("plan", "execute", "summary"):
            if isinstance(plan_execute.get(name), Mapping):
                blocks.append((f"planExecute.{name}.", plan_execute[name]))
    return blocks


def _resolve_models(agent: dict[str, Any], ctx: ToolContext) -> None:
    models = ctx.catalog.models
    keys: list[tuple[str, Any]] = []
    for prefix, block in _stage_blocks(agent):
        config = block.get("modelConfig")
        if isinstance(config, Mapping) and "modelKey" in config:
            keys.append((f"{prefix}modelConfig.modelKey", config["modelKey"]))
    if not keys:
        if not models:
            raise ToolError("no models are configured: cannot choose a modelKey")
        agent["modelConfig"]["modelKey"] = next(iter(models))
        return
    for where, key in keys:
        if not isinstance(key, str) or key not in models:
            known = ", ".join(sorted(models)) or "none"
            raise ToolError(f"unknown model {key!r} in {where} (known models: {known})")


def _check_references(agent: Mapping[str, Any], ctx: ToolContext) -> None:
    for prefix, block in _stage_blocks(agent):
        tool_config = block.get("toolConfig")
        if tool_config is None:
            continue
        if not isinstance(tool_config, Mapping):
            raise ToolError(f"'{prefix}toolConfig' must be an object or null")
        for group in ("backends", "frontends", "actions"):
            names = tool_config.get(group) or []
            if not isinstance(names, list):
                raise ToolError(f"'{prefix}toolConfig.{group}' must be a list of tool names")
            for name in names:
                if isinstance(name, str) and group == "backends" and split_mcp_name(name) is not None:
                    _check_mcp_name(name, f"{prefix}toolConfig.{group}", ctx)
                elif name not in ctx.catalog.tools:
                    raise ToolError(f"unknown tool {name!r} in {prefix}toolConfig.{group}")
    skills = list(agent.get("skills") or [])
    skill_config = agent.get("skillConfig")
    if isinstance(skill_config, Mapping):
        skills += list(skill_config.get("skills") or [])
    for name in skills:
        if not isinstance(name, str) or name.lower() not in ctx.catalog.skills:
            raise ToolError(f"unknown skill {name!r}")


def _caller_mcp(ctx: ToolContext) -> dict[str, McpTools]:
    """The calling agent's own MCP tools (SPEC §18), by server: all a new agent may be given."""
    servers: dict[str, dict[str, ToolDefinition]] = {}
    for tool in ctx.agent.all_tools if ctx.agent is not None else ():
        parts = split_mcp_name(tool.name)
        if parts is not None:
            servers.setdefault(parts[0], {})[tool.name] = tool
    return {key: McpTools(key, "up", tools) for key, tools in servers.items()}


def _check_mcp_name(name: str, where: str, ctx: ToolContext) -> None:
    """An MCP tool (``mcp__<server>__<tool>``) the calling agent has itself; never a wildcard.

    ``mcp__<server>__*`` would stand for whatever that server lists when the new agent loads,
    which may be more than the calling agent was given: the tools are named one by one.
    """
    server, tool = split_mcp_name(name) or ("", "")
    if tool == WILDCARD:
        raise ToolError(f"{name!r} in {where}: agent_file_create takes MCP tools by name, not a wildcard "
                        f"(the server may list tools the calling agent does not have); name each tool")
    if name not in _caller_mcp(ctx).get(server, McpTools(server, "down")).tools:
        raise ToolError(f"unknown tool {name!r} in {where}: the calling agent has no such MCP tool")


def _as_loaded(document: Mapping[str, Any], key: str, ctx: ToolContext) -> AgentDefinition:
    """``document`` validated exactly as the catalog will load it (inheritance applied).

    The "has an implementation" check of backend tools is left to ``_check_privileges``:
    every tool the new agent may keep is one the calling agent has, and so one that
    already passed that check when the caller loaded (or an engine tool).
    """
    refs = AgentRefs(
        models=ctx.catalog.models,
        tools=ctx.catalog.tools,
        skills=ctx.catalog.skills,
        builtin_tools=frozenset(ctx.catalog.tools),
        mcp=_caller_mcp(ctx),
    )
    try:
        return parse_agent(document, key, refs)
    except DefinitionError as exc:
        raise ToolError(f"the new agent would not load: {exc.message}") from exc


def _check_privileges(new: AgentDefinition, caller: AgentDefinition | None) -> None:
    """Refuse tools and skills the calling agent does not have itself (SPEC §14)."""
    has_tools = {tool.name for tool in caller.all_tools} if caller is not None else set()
    has_skills = {skill.id for skill in caller.skills} if caller is not None else set()
    extra = {
        "tools": sorted(t.name for t in new.all_tools if t.name not in has_tools and t.name not in ENGINE_TOOLS),
        "skills": sorted(s.id for s in new.skills if s.id not in has_skills),
    }
    for what, names in extra.items():
        if not names:
            continue
        if caller is None:
            raise ToolError(
                f"agent_file_create has no calling agent, so the new agent may not have any {what}: "
                f"{', '.join(names)}"
            )
        raise ToolError(
            f"agent_file_create may not give the new agent {what} the calling agent {caller.key!r} "
            f"does not have: {', '.join(names)}"
        )
    _check_budget(new.budget, caller)


def _check_budget(new: Budget, caller: AgentDefinition | None) -> None:
    """Refuse a budget above the calling agent's (the defaults without one), field by field.

    The budget is what bounds a run's calls, retries and time: a larger one would let a created
    agent run, and spend, more than the operator allowed its creator.
    """
    has = caller.budget if caller is not None else Budget()
    over = [
        f"budget.{name} {value} > {limit}"
        for name, value, limit in (
            ("runTimeoutMs", new.run_timeout_ms, has.run_timeout_ms),
            ("model.maxCalls", new.model.max_calls, has.model.max_calls),
            ("model.timeoutMs", new.model.timeout_ms, has.model.timeout_ms),
            ("model.retryCount", new.model.retry_count, has.model.retry_count),
            ("tool.maxCalls", new.tool.max_calls, has.tool.max_calls),
            ("tool.timeoutMs", new.tool.timeout_ms, has.tool.timeout_ms),
            ("tool.retryCount", new.tool.retry_count, has.tool.retry_count),
        )
        if value > limit
    ]
    if over:
        whose = f"the calling agent {caller.key!r}" if caller is not None else "the default (there is no calling agent)"
        raise ToolError(f"agent_file_create may not give the new agent a larger budget than {whose}: "
                        f"{', '.join(over)}")


def _exists_error(key: str, what: str) -> ToolError:
    return ToolError(
        f"agent {key!r} already exists ({what}); agent_file_create creates only new agents "
        "and never updates or overwrites an existing one — choose another key"
    )


def _check_new_key(key: str, agents_dir: Path, ctx: ToolContext) -> None:
    """Refuse a key that is taken: in the catalog or on disk, in any letter case."""
    folded = key.casefold()
    for known in ctx.catalog.agents:
        if known.casefold() == folded:
            raise _exists_error(key, f"the catalog has agent {known!r}")
    try:
        entries = list(agents_dir.iterdir())
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ToolError(f"cannot list the agents folder to check that {key!r} is new: {exc}") from exc
    for entry in entries:
        if entry.suffix.lower() == _AGENT_SUFFIX and entry.stem.casefold() == folded:
            raise _exists_error(key, f"agents/{entry.name} is there")


def _file_bytes(document: Mapping[str, Any]) -> bytes:
    """The agent file's bytes; ``ToolError`` when the catalog would not read them.

    The catalog rejects a definition file over ``MAX_DEFINITION_BYTES``: written all the same,
    the agent would never go live while its key stayed taken (no second call may reuse it).
    """
    data = (json.dumps(document, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
    if len(data) > MAX_DEFINITION_BYTES:
        raise ToolError(f"the agent file would be {len(data)} bytes, over the {MAX_DEFINITION_BYTES} bytes (1 MiB) "
                        "the catalog reads from a definition file; shorten the prompts")
    return data


def _create_exclusively(path: Path, key: str, document: Mapping[str, Any]) -> None:
    """Write ``document`` to ``path`` atomically, failing if ``path`` exists (even a dangling link).

    The bytes go to a hidden temp file first (the catalog ignores names starting with
    ``.``); ``os.link`` then gives it its final name in one step and refuses an existing
    one, so concurrent calls cannot both win and readers never see a partial file.
    """
    data = _file_bytes(document)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        try:
            os.link(tmp, path)
        except FileExistsError as exc:
            raise _exists_error(key, f"agents/{path.name} appeared while it was being created") from exc
        except OSError as exc:
            raise ToolError(f"cannot create agents/{path.name}: {exc.strerror or exc}") from exc
    finally:
        Path(tmp).unlink(missing_ok=True)


async def agent_file_create(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """The ``agent_file_create`` built-in → ``{ok, key, path, created}`` (``created`` is always true)."""
    raw_config = args.get("config")
    config: Mapping[str, Any] = raw_config if isinstance(raw_config, Mapping) else {}
    raw_key = args.get("key") or args.get("agentId") or config.get("key") or config.get("agentId")
    if not raw_key:
        raise ToolError("'key' is required")
    try:
        key = check_key(raw_key, "agent key")
    except PathEscapeError as exc:
        raise ToolError(exc.message) from exc
    agents_dir = ctx.settings.agents_dir
    path = agents_dir / f"{key}.json"
    if path.is_symlink():
        raise ToolError(f"agents/{key}.json is a symbolic link; refusing to write through it")
    _check_new_key(key, agents_dir, ctx)
    document = {"key": key, **build_agent(args, ctx)}
    _check_privileges(_as_loaded(document, key, ctx), ctx.agent)
    _create_exclusively(path, key, document)
    logger.info("run %s: agent_file_create created %s", ctx.run_id, path)
    try:
        shown = path.relative_to(ctx.settings.base_dir.resolve()).as_posix()
    except ValueError:
        shown = f"{agents_dir.name}/{path.name}"
    return {"ok": True, "key": key, "path": shown, "created": True}
