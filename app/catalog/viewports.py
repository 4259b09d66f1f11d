"""Viewports, ``viewports/<key>.<suffix>`` (SPEC §3.5).

``.html`` → ``html`` (served as ``{"html": text}``); ``.qlc``/``.dqlc`` → ``qlc``;
``.json_schema`` → ``json_schema``; ``.custom`` → ``custom`` — the non-html files must
hold a JSON object. A file whose real location (after symlinks) is outside the
viewport folder is refused: viewports are served to clients.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from app.catalog._edge import read_object, read_text
from app.catalog.definitions import ViewportDefinition
from app.errors import DefinitionError, PathEscapeError
from app.paths import check_key

#: file suffix → viewport type
SUFFIX_TYPES: Mapping[str, str] = {
    ".html": "html",
    ".qlc": "qlc",
    ".dqlc": "qlc",
    ".json_schema": "json_schema",
    ".custom": "custom",
}


def viewport_type(path: Path) -> str | None:
    """The type a file's suffix declares, or ``None`` for files that are not viewports."""
    return SUFFIX_TYPES.get(path.suffix.lower())


def load_viewport(path: Path, folder: Path) -> ViewportDefinition:
    """Read one viewport file inside ``folder``; raises ``DefinitionError`` with the reason."""
    kind = viewport_type(path)
    if kind is None:
        raise DefinitionError(f"unknown viewport suffix {path.suffix!r}")
    try:
        key = check_key(path.stem, "viewport key")
    except PathEscapeError as exc:
        raise DefinitionError(exc.message) from exc
    root = folder.resolve()
    real = path.resolve()
    if root not in real.parents:
        raise DefinitionError("the file resolves outside the viewport folder (symlink?)")
    data: dict[str, object] = {"html": read_text(path)} if kind == "html" else read_object(path)
    return ViewportDefinition(key=key, type=kind, path=real, data=data)
