"""``agent_file_create``: create or update ``agents/<key>.json`` (SPEC §3.2, §3.3).

Writes Agent JSON v2 only. The upstream tool's shortcuts are mapped onto the v2
structure — ``systemPrompt`` → the mode's block (``plain`` / ``react`` /
``planExecute.plan|execute``), ``planSystemPrompt`` / ``executeSystemPrompt`` /
``summarySystemPrompt`` → ``planExecute.*``, ``maxSteps`` → ``react.maxSteps`` or
``planExecute.maxSteps``, ``modelKey`` → ``modelConfig.modelKey`` — and fields may
also come inside a ``config`` object (explicit arguments win). Legacy fields are
refused. An existing file is updated (the new fields merged over it). The key goes
through ``check_key``; every model, tool and skill named must exist in the catalog;
the model defaults to the catalog's first. The file is written atomically (temp file
+ ``os.replace``) and goes live through hot reload.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app.config import deep_merge
from app.errors import PathEscapeError, ToolError
from app.paths import check_key
from app.tools.base import ToolContext

logger = logging.getLogger(__name__)

_MODES = ("ONESHOT", "REACT", "PLAN_EXECUTE")
_TOOL_CHOICES = ("NONE", "AUTO", "REQUIRED")
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


def _read_existing(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        existing = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ToolError(
            f"agents/{path.name} exists but is not plain JSON (comments or triple-quoted prompts?); "
            "refusing to overwrite it"
        ) from exc
    if not isinstance(existing, dict):
        raise ToolError(f"agents/{path.name} exists but does not hold a JSON object; refusing to overwrite it")
    return existing


def _pick_mode(fields: Mapping[str, Any], existing: Mapping[str, Any]) -> str:
    mode = fields.get("mode") or existing.get("mode")
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


def build_agent(args: Mapping[str, Any], ctx: ToolContext, existing: Mapping[str, Any] | None) -> dict[str, Any]:
    """The Agent JSON v2 object for these arguments (merged over ``existing``)."""
    config = _obj(args.get("config"), "config")
    _check_fields(config)
    _check_fields(args)
    fields = deep_merge(config, {k: v for k, v in args.items() if k != "config" and v is not None})
    base = dict(existing or {})
    mode = _pick_mode(fields, base)
    defaults = ctx.settings.agent.tools.agent_file_create

    agent: dict[str, Any] = {k: v for k, v in base.items() if k != "key"}
    for name in _V2_FIELDS:
        if name in fields:
            value, current = fields[name], agent.get(name)
            if isinstance(value, Mapping) and isinstance(current, Mapping):
                agent[name] = deep_merge(current, value)
            else:
                agent[name] = value
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
                if name not in ctx.catalog.tools:
                    raise ToolError(f"unknown tool {name!r} in {prefix}toolConfig.{group}")
    skills = list(agent.get("skills") or [])
    skill_config = agent.get("skillConfig")
    if isinstance(skill_config, Mapping):
        skills += list(skill_config.get("skills") or [])
    for name in skills:
        if not isinstance(name, str) or name.lower() not in ctx.catalog.skills:
            raise ToolError(f"unknown skill {name!r}")


def _write_atomically(path: Path, document: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


async def agent_file_create(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """The ``agent_file_create`` built-in → ``{ok, key, path, created}``."""
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
    existing = _read_existing(path)
    document = {"key": key, **build_agent(args, ctx, existing)}
    _write_atomically(path, document)
    logger.info("run %s: agent_file_create wrote %s (%s)", ctx.run_id, path, "updated" if existing else "created")
    try:
        shown = path.relative_to(ctx.settings.base_dir.resolve()).as_posix()
    except ValueError:
        shown = f"{agents_dir.name}/{path.name}"
    return {"ok": True, "key": key, "path": shown, "created": existing is None}
