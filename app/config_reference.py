"""The configuration reference (``docs/configuration.md``), generated from the ``Settings`` model.

``python -m app.config_reference > docs/configuration.md`` (or ``agw config-reference``) writes
it; ``tests/test_config_reference.py`` fails when the committed file differs. Every row comes
from ``app.config``: the dotted key (the field aliases), the environment variable (``ENV_KEYS``),
the type and default (the field), and the meaning — the field's ``description=``, else the
``#:`` comment lines written right above the field.
"""

from __future__ import annotations

import inspect
import re
import textwrap
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from app.config import ENV_KEYS, NOT_CONFIGURABLE, Settings, map_entry_model

REGENERATE = "python -m app.config_reference > docs/configuration.md"

_HEADER = f"""\
# Configuration reference

<!-- Generated from app/config.py by `{REGENERATE}`; do not edit by hand. -->

Sources, lowest priority first: built-in defaults → `application.yml` in the deployment folder →
`/opt/application.yml` → the environment variables below (SPEC §2). Both files are optional; a
malformed one stops the gateway with the file and line. `${{NAME:default}}` placeholders in YAML
values are expanded. Lists accept a YAML list or a comma-separated string (the environment form).
Relative folders are resolved against the deployment folder.

A key no setting reads (a typo such as `sever:`) is reported at start as a WARNING naming the file
and the closest known key; `agw validate` lists them too.

Calls to model providers (and HTTP tools) honour the standard proxy variables `HTTP_PROXY`,
`HTTPS_PROXY`, `ALL_PROXY` and `NO_PROXY`, as any httpx client does; a host in `NO_PROXY` is
reached directly. The proxies' URLs are never logged.
"""

_FIELD_LINE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*:")


@dataclass(frozen=True)
class Row:
    """One setting: its dotted key and what the reference says about it."""

    key: str
    env: str
    type: str
    default: str
    meaning: str


@dataclass(frozen=True)
class Section:
    """The settings of one settings class at ``prefix`` (``agent.tools.sandbox``)."""

    prefix: str
    doc: str
    rows: tuple[Row, ...]


def doc_comments(model: type[BaseModel]) -> dict[str, str]:
    """The ``#:`` comments right above each field of ``model`` (and of its settings base classes)."""
    comments: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or cls is BaseModel:
            continue
        try:
            source = inspect.getsource(cls)
        except (OSError, TypeError):
            continue
        pending: list[str] = []
        for line in textwrap.dedent(source).splitlines()[1:]:
            stripped = line.strip()
            if stripped.startswith("#:"):
                pending.append(stripped[2:].strip())
                continue
            match = _FIELD_LINE.match(stripped)
            if match and pending:
                comments[match.group(1)] = " ".join(pending)
            pending = []
    return comments


def _own_doc(model: type[BaseModel]) -> str:
    doc = model.__dict__.get("__doc__")
    if not doc:
        return ""
    return " ".join(inspect.cleandoc(doc).split())


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is list:
        (item,) = typing.get_args(annotation) or (str,)
        return f"list of {_type_name(item)}s"
    names = {int: "integer", float: "number", bool: "boolean", str: "string"}
    if isinstance(annotation, type) and annotation in names:
        return names[annotation]
    return getattr(annotation, "__name__", str(annotation))


def _constraints(field: FieldInfo) -> str:
    parts: list[str] = []
    for item in field.metadata:
        if isinstance(item, annotated_types.Gt):
            parts.append(f"> {item.gt}")
        elif isinstance(item, annotated_types.Ge):
            parts.append(f"≥ {item.ge}")
        elif getattr(item, "pattern", None):
            choices = re.fullmatch(r"\^\(([\w|-]+)\)\$", str(item.pattern))
            parts.append(" | ".join(choices.group(1).split("|")) if choices else f"matches `{item.pattern}`")
    return ", ".join(parts)


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "(required)"
    else:
        value = field.default
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list):
        return f"`{', '.join(map(str, value))}`" if value else "(empty)"
    if isinstance(value, str) and not value:
        return "(empty)"
    return f"`{value}`"


def _markdown(text: str) -> str:
    """Docstring text (reStructuredText literals) as Markdown."""
    return text.replace("``", "`")


def _cell(text: str) -> str:
    return _markdown(text).replace("|", "\\|").replace("\n", " ")


def sections(model: type[BaseModel] = Settings, prefix: str = "") -> Iterator[Section]:
    """Every settings class under ``model``, depth first in field order, with its leaf settings."""
    env_of = {dotted: name for name, dotted in ENV_KEYS.items()}
    comments = doc_comments(model)
    rows: list[Row] = []
    nested: list[tuple[type[BaseModel], str]] = []
    for name, field in model.model_fields.items():
        if name in NOT_CONFIGURABLE:
            continue
        key = f"{prefix}{field.alias or name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            nested.append((annotation, key + "."))
            continue
        entry = map_entry_model(annotation)
        if entry is not None:
            nested.append((entry, key + ".<name>."))
            continue
        constraints = _constraints(field)
        type_name = _type_name(annotation) + (f" ({constraints})" if constraints else "")
        meaning = field.description or comments.get(name, "")
        rows.append(Row(key, env_of.get(key, ""), type_name, _default(field), meaning))
    if rows:
        yield Section(prefix.rstrip("."), _own_doc(model), tuple(rows))
    for child, child_prefix in nested:
        yield from sections(child, child_prefix)


def render() -> str:
    """The whole of ``docs/configuration.md``."""
    out = [_HEADER]
    for section in sections():
        out.append(f"\n## `{section.prefix}`\n")
        if section.doc:
            out.append(f"\n{_markdown(section.doc)}\n")
        out.append("\n| key | env var | type | default | meaning |\n|---|---|---|---|---|\n")
        for row in section.rows:
            env = f"`{row.env}`" if row.env else "—"
            out.append(f"| `{row.key}` | {env} | {_cell(row.type)} | {_cell(row.default)} | {_cell(row.meaning)} |\n")
    return "".join(out)


def main() -> None:
    print(render(), end="")


if __name__ == "__main__":
    main()
