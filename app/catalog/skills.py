"""Skills, ``skills/<skill-id>/SKILL.md`` (SPEC §3.4).

``SKILL.md`` starts with YAML front matter (``name``, ``description``; other keys such
as ``license`` are allowed and ignored) between ``---`` lines, followed by the
instruction body. The id is the folder name, lower-cased.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from app.catalog._edge import read_text
from app.catalog.definitions import SkillDefinition
from app.errors import DefinitionError, PathEscapeError
from app.paths import check_key

SKILL_FILE = "SKILL.md"


def split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    """``(front matter mapping, body)`` of a SKILL.md text."""
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        raise DefinitionError("SKILL.md must start with YAML front matter between '---' lines")
    for index in range(1, len(lines)):
        if lines[index].strip() == "---":
            header = "".join(lines[1:index])
            body = "".join(lines[index + 1 :])
            break
    else:
        raise DefinitionError("the YAML front matter is not closed by a '---' line")
    try:
        meta = yaml.safe_load(header)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 2}: " if mark is not None else ""
        raise DefinitionError(f"front matter: {where}{exc.problem}") from exc
    except yaml.YAMLError as exc:
        raise DefinitionError(f"front matter: {exc}") from exc
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise DefinitionError("front matter must be a YAML mapping")
    return meta, body.strip("\n")


def skill_id(folder: Path) -> str:
    """The id of a skill folder (its name, lower-cased), validated as a key."""
    try:
        return check_key(folder.name.lower(), "skill id")
    except PathEscapeError as exc:
        raise DefinitionError(exc.message) from exc


def parse_skill(text: str, folder: Path) -> SkillDefinition:
    """Validate a SKILL.md text found in ``folder``."""
    ident = skill_id(folder)
    meta, body = split_front_matter(text)
    name = meta.get("name", ident)
    description = meta.get("description")
    if not isinstance(name, str) or not name.strip():
        raise DefinitionError("front matter 'name' must be a non-empty string")
    if not isinstance(description, str) or not description.strip():
        raise DefinitionError("front matter 'description' is required (a non-empty string)")
    return SkillDefinition(id=ident, name=name.strip(), description=description.strip(), body=body, folder=folder)


def load_skill(folder: Path) -> SkillDefinition:
    """Read ``folder/SKILL.md``; raises ``DefinitionError`` with the reason."""
    path = folder / SKILL_FILE
    if not path.is_file():
        raise DefinitionError(f"missing {SKILL_FILE}")
    return parse_skill(read_text(path), folder)
