"""Tool definition files, ``tools/*.backend | *.frontend | *.action`` (SPEC §3.3).

Each file holds ``{"tools": [item, …]}``. The suffix decides the kind. A bad item is
reported on its own (the file's other items still load); a file that is not even a
``{"tools": [...]}`` object fails as a whole. Duplicate names across files are handled
by ``app.catalog.loader`` (first file in sorted order wins).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.catalog._edge import read_object, validate
from app.catalog.definitions import ToolDefinition, ToolKind
from app.errors import DefinitionError

#: file suffix → tool kind
SUFFIX_KINDS: Mapping[str, ToolKind] = {
    ".backend": ToolKind.BACKEND,
    ".frontend": ToolKind.FRONTEND,
    ".action": ToolKind.ACTION,
}

#: OpenAI function names; also usable as a viewport key
_NAME_PATTERN = r"^[A-Za-z0-9_\-]{1,64}$"


class RawTool(BaseModel):
    """One item of a tool file; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    type: Literal["function"]
    name: str = Field(pattern=_NAME_PATTERN)
    description: str
    parameters: dict[str, Any]
    after_call_hint: str | None = Field(None, alias="afterCallHint")
    tool_api: str | None = Field(None, alias="toolApi")
    tool_type: str | None = Field(None, alias="toolType", pattern=r"^[a-z_]{1,32}$")
    tool_key: str | None = Field(None, alias="toolKey", pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")

    @field_validator("parameters")
    @classmethod
    def _schema_object(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("type", "object") != "object":
            raise ValueError('must be a JSON Schema with "type": "object"')
        if "properties" in value and not isinstance(value["properties"], dict):
            raise ValueError('"properties" must be an object')
        return value

    @field_validator("tool_api")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"must be an http(s) URL, got {value!r}")
        return value


class RawToolFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tools: list[Any]


@dataclass(frozen=True, slots=True)
class ToolFile:
    """What one tool file yielded: the valid tools and a reason per bad item."""

    tools: tuple[ToolDefinition, ...]
    problems: tuple[str, ...]


def tool_kind(path: Path) -> ToolKind | None:
    """The kind a file's suffix declares, or ``None`` for files that are not tool files."""
    return SUFFIX_KINDS.get(path.suffix.lower())


def parse_tool(item: object, kind: ToolKind, source: Path | None = None) -> ToolDefinition:
    """Validate one item of a tool file."""
    raw = validate(RawTool, item)
    if raw.tool_api is not None and kind is not ToolKind.BACKEND:
        raise DefinitionError(f"{raw.name}: toolApi is only allowed in .backend files")
    if (raw.tool_type is not None or raw.tool_key is not None) and kind is not ToolKind.FRONTEND:
        raise DefinitionError(f"{raw.name}: toolType/toolKey are only allowed in .frontend files")
    frontend = kind is ToolKind.FRONTEND
    return ToolDefinition(
        name=raw.name,
        kind=kind,
        description=raw.description,
        parameters=raw.parameters,
        after_call_hint=raw.after_call_hint,
        tool_api=raw.tool_api,
        tool_type=(raw.tool_type or "html") if frontend else None,
        tool_key=(raw.tool_key or raw.name) if frontend else None,
        source=source,
    )


def parse_tool_file(data: object, kind: ToolKind, source: Path | None = None) -> ToolFile:
    """Validate a parsed tool file; per-item problems are collected, not raised."""
    raw = validate(RawToolFile, data)
    tools: list[ToolDefinition] = []
    problems: list[str] = []
    seen: set[str] = set()
    for index, item in enumerate(raw.tools):
        label = f"tools[{index}]"
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            label += f" ({item['name']})"
        try:
            tool = parse_tool(item, kind, source)
        except DefinitionError as exc:
            problems.append(f"{label}: {exc.message}")
            continue
        if tool.name in seen:
            problems.append(f"{label}: tool {tool.name!r} is defined twice in this file; the second is skipped")
            continue
        seen.add(tool.name)
        tools.append(tool)
    return ToolFile(tools=tuple(tools), problems=tuple(problems))


def load_tool_file(path: Path) -> ToolFile:
    """Read one tool file; raises ``DefinitionError`` when the file as a whole is unusable."""
    kind = tool_kind(path)
    if kind is None:
        raise DefinitionError(f"unknown tool file suffix {path.suffix!r} (use .backend, .frontend or .action)")
    return parse_tool_file(read_object(path), kind, source=path)
