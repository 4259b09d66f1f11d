"""Confinement of user-supplied names to their folder (SPEC §9 "Paths").

Every name a client or a model supplies (chat id, agent key, viewport key, data file,
skill, script) goes through here before it touches the file system.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

from app.errors import PathEscapeError

#: ids we generate or accept for chats, agents, viewports, skills: no separators, no dots first
SAFE_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")


def check_key(value: str, what: str) -> str:
    """A bare key (no folders): letters, digits, ``_ . -``; never ``..``; ≤128 chars."""
    if not isinstance(value, str) or not SAFE_KEY.fullmatch(value) or ".." in value:
        raise PathEscapeError(f"invalid {what}: {value!r}")
    return value


def confine(root: Path, relative: str, what: str = "path") -> Path:
    """Resolve ``relative`` under ``root`` (following symlinks) or raise ``PathEscapeError``.

    Refuses NUL bytes, absolute paths, ``..`` segments, backslashes and percent-encoded
    separators, then checks that the fully resolved path is still inside the resolved root.
    """
    if not isinstance(relative, str) or not relative:
        raise PathEscapeError(f"missing {what}")
    decoded = unquote(relative)
    if "\x00" in decoded or "\\" in decoded:
        raise PathEscapeError(f"invalid {what}: {relative!r}")
    if decoded != relative and ("/" in decoded or "%" in decoded):
        raise PathEscapeError(f"invalid {what} (encoded separator): {relative!r}")
    candidate = Path(decoded)
    if candidate.is_absolute() or decoded.startswith("~"):
        raise PathEscapeError(f"{what} must be relative: {relative!r}")
    if any(part == ".." for part in candidate.parts):
        raise PathEscapeError(f"{what} may not contain '..': {relative!r}")
    base = root.resolve()
    resolved = (base / candidate).resolve()
    if resolved != base and base not in resolved.parents:
        raise PathEscapeError(f"{what} leaves its folder: {relative!r}")
    return resolved
