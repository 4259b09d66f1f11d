"""Build one ``Catalog`` snapshot from the definition folders (SPEC §3).

Order: models → tools → skills → viewports → agents (agents are validated against
the others). A bad file never raises: it becomes a ``Rejection(kind, file, reason)``
and is logged at WARNING. Missing folders are empty; names starting with ``.`` are
ignored; files are read in sorted order so duplicates resolve deterministically
(the first file wins).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

from app.catalog.agents import AgentRefs, load_agent_files
from app.catalog.definitions import (
    AgentDefinition,
    Catalog,
    ModelDefinition,
    Rejection,
    SkillDefinition,
    ToolDefinition,
    ViewportDefinition,
)
from app.catalog._edge import read_object, rejection_reason
from app.catalog.mcp import McpTools
from app.catalog.models import is_group_file, parse_group, parse_model
from app.catalog.skills import load_skill
from app.catalog.tools import load_tool_file, tool_kind
from app.catalog.viewports import load_viewport, viewport_type
from app.config import Settings

logger = logging.getLogger(__name__)


class _Rejections:
    """Collects rejections for one build and logs each once."""

    def __init__(self, base_dir: Path) -> None:
        self._base_dir = base_dir
        self.items: list[Rejection] = []

    def display(self, path: Path) -> str:
        try:
            return path.relative_to(self._base_dir).as_posix()
        except ValueError:
            return str(path)

    def add(self, kind: str, path: Path, reason: str) -> None:
        rejection = Rejection(kind=kind, file=self.display(path), reason=reason)  # type: ignore[arg-type]
        logger.warning("rejected %s definition %s: %s", kind, rejection.file, reason)
        self.items.append(rejection)


def visible_entries(folder: Path) -> list[Path]:
    """The folder's entries in sorted order, without hidden names; ``[]`` when it is missing."""
    try:
        entries = [entry for entry in folder.iterdir() if not entry.name.startswith(".")]
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        logger.warning("cannot list definition folder %s: %s", folder, exc)
        return []
    return sorted(entries, key=lambda entry: entry.name)


def _files(folder: Path, suffixes: Iterable[str] | None = None) -> list[Path]:
    wanted = {suffix.lower() for suffix in suffixes} if suffixes is not None else None
    return [
        entry
        for entry in visible_entries(folder)
        if entry.is_file() and (wanted is None or entry.suffix.lower() in wanted)
    ]


def load_models(settings: Settings, rejections: _Rejections) -> dict[str, ModelDefinition]:
    """Provider models first, then groups (SPEC §19) resolved against them."""
    providers = frozenset(settings.agent.providers)
    models: dict[str, ModelDefinition] = {}
    groups: list[tuple[Path, dict[str, object]]] = []
    for path in _files(settings.models_dir, [".json"]):
        try:
            data = read_object(path)
            if is_group_file(data):
                groups.append((path, data))
                continue
            models[path.stem] = parse_model(data, path.stem, providers, source=path)
        except Exception as exc:  # noqa: BLE001 - one bad file is that file's rejection
            rejections.add("model", path, rejection_reason(exc))
    plain = dict(models)
    group_keys = frozenset(path.stem for path, _ in groups)
    for path, data in groups:
        try:
            models[path.stem] = parse_group(data, path.stem, plain, source=path, group_keys=group_keys)
        except Exception as exc:  # noqa: BLE001 - one bad file is that file's rejection
            rejections.add("model", path, rejection_reason(exc))
    return models


def load_tools(settings: Settings, rejections: _Rejections) -> dict[str, ToolDefinition]:
    tools: dict[str, ToolDefinition] = {}
    for path in visible_entries(settings.tools_dir):
        if not path.is_file() or tool_kind(path) is None:
            continue
        try:
            loaded = load_tool_file(path)
        except Exception as exc:  # noqa: BLE001 - one bad file is that file's rejection
            rejections.add("tool", path, rejection_reason(exc))
            continue
        for problem in loaded.problems:
            rejections.add("tool", path, problem)
        for tool in loaded.tools:
            first = tools.get(tool.name)
            if first is not None:
                first_file = rejections.display(first.source) if first.source else "?"
                rejections.add(
                    "tool",
                    path,
                    f"duplicate tool name {tool.name!r}: already defined in {first_file}; "
                    f"the definition in {rejections.display(path)} is skipped",
                )
                continue
            tools[tool.name] = tool
    return tools


def load_skills(settings: Settings, rejections: _Rejections) -> dict[str, SkillDefinition]:
    skills: dict[str, SkillDefinition] = {}
    for folder in visible_entries(settings.skills_dir):
        if not folder.is_dir():
            continue
        try:
            skill = load_skill(folder)
        except Exception as exc:  # noqa: BLE001 - one bad file is that file's rejection
            rejections.add("skill", folder / "SKILL.md", rejection_reason(exc))
            continue
        first = skills.get(skill.id)
        if first is not None:
            rejections.add(
                "skill",
                folder / "SKILL.md",
                f"duplicate skill id {skill.id!r}: already defined by {rejections.display(first.folder)}",
            )
            continue
        skills[skill.id] = skill
    return skills


def load_viewports(settings: Settings, rejections: _Rejections) -> dict[str, ViewportDefinition]:
    folder = settings.viewports_dir
    viewports: dict[str, ViewportDefinition] = {}
    for path in visible_entries(folder):
        if viewport_type(path) is None or path.is_dir():
            continue
        try:
            viewport = load_viewport(path, folder)
        except Exception as exc:  # noqa: BLE001 - one bad file is that file's rejection
            rejections.add("viewport", path, rejection_reason(exc))
            continue
        first = viewports.get(viewport.key)
        if first is not None:
            rejections.add(
                "viewport",
                path,
                f"duplicate viewport key {viewport.key!r}: already defined by {rejections.display(first.path)}",
            )
            continue
        viewports[viewport.key] = viewport
    return viewports


def load_agents(settings: Settings, refs: AgentRefs, rejections: _Rejections) -> dict[str, AgentDefinition]:
    """Every agent file; GRAPH agents after the others, which their agent nodes may name (SPEC §21)."""
    return load_agent_files(_files(settings.agents_dir, [".json"]), refs,
                            lambda path, reason: rejections.add("agent", path, reason))


def build_catalog(settings: Settings, builtin_tools: frozenset[str], version: int = 0,
                  mcp: Mapping[str, McpTools] | None = None) -> Catalog:
    """Read every definition folder into a new ``Catalog``; never raises for a bad file.

    ``mcp``: the MCP servers' tools at this moment (SPEC §18), for agents that list them."""
    rejections = _Rejections(settings.base_dir.resolve())
    models = load_models(settings, rejections)
    tools = load_tools(settings, rejections)
    skills = load_skills(settings, rejections)
    viewports = load_viewports(settings, rejections)
    refs = AgentRefs(models=models, tools=tools, skills=skills, builtin_tools=frozenset(builtin_tools),
                     mcp=mcp or {})
    agents = load_agents(settings, refs, rejections)
    return Catalog(
        models=models,
        tools=tools,
        skills=skills,
        viewports=viewports,
        agents=agents,
        rejections=tuple(rejections.items),
        version=version,
    )
