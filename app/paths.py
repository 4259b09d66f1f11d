"""Confinement of user-supplied names to their folder (SPEC §9 "Paths").

Every name a client or a model supplies (chat id, agent key, viewport key, data file,
skill, script) goes through here before it touches the file system.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from urllib.parse import unquote

from app.errors import PathEscapeError, RequestError

#: ids we generate or accept for chats, agents, viewports, skills: no separators, no dots first
SAFE_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
#: longest relative path / single folder or file name accepted (bytes, UTF-8): Linux PATH_MAX / NAME_MAX
MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255


def ascii_int(text: str, max_digits: int = 18) -> int | None:
    """``text`` as a non-negative int when it is ASCII digits only (at most ``max_digits`` of them),
    else ``None``. For every number read from a client, a file or an upstream: ``str.isdigit``
    also takes "²" or "①", which ``int`` refuses (a crash where a clear error was meant), and
    ``int`` refuses more than 4300 digits."""
    return int(text) if len(text) <= max_digits and text.isascii() and text.isdigit() else None


def check_key(value: str, what: str) -> str:
    """A bare key (no folders): letters, digits, ``_ . -``; never ``..``; ≤128 chars."""
    if not isinstance(value, str) or not SAFE_KEY.fullmatch(value) or ".." in value:
        raise PathEscapeError(f"invalid {what}: {value!r}")
    return value


def confine(root: Path, relative: str, what: str = "path") -> Path:
    """Resolve ``relative`` under ``root`` (following symlinks) or raise ``PathEscapeError``.

    Refuses NUL bytes, absolute paths, ``..`` segments, backslashes and percent-encoded
    separators, then checks that the fully resolved path is still inside the resolved root.
    A name longer than the file system takes (``MAX_PATH_BYTES`` in all, ``MAX_NAME_BYTES``
    per part) or that cannot be resolved (``ENAMETOOLONG``, a symlink loop…) is a ``RequestError``
    (400), never an ``OSError``.
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
    check_length(decoded, what)
    base = root.resolve()
    try:
        resolved = (base / candidate).resolve()
    except OSError as exc:
        raise fs_name_error(exc, what) from exc
    except RuntimeError as exc:  # Python < 3.13 reports a symlink loop this way
        raise RequestError(f"{what} cannot be resolved: symbolic link loop") from exc
    if resolved != base and base not in resolved.parents:
        raise PathEscapeError(f"{what} leaves its folder: {relative!r}")
    return resolved


def check_length(relative: str, what: str) -> None:
    """``RequestError`` ("… name too long") for a path the file system would refuse for its length."""
    size = len(relative.encode("utf-8", errors="surrogatepass"))
    if size > MAX_PATH_BYTES:
        raise RequestError(f"{what} name too long: {size} bytes (at most {MAX_PATH_BYTES})")
    longest = max((len(part.encode("utf-8", errors="surrogatepass")) for part in relative.split("/")), default=0)
    if longest > MAX_NAME_BYTES:
        raise RequestError(f"{what} name too long: a part of {longest} bytes (at most {MAX_NAME_BYTES})")


def fs_name_error(exc: OSError, what: str) -> RequestError:
    """The client error for an ``OSError`` a user-supplied name caused (too long, a symlink loop…)."""
    if exc.errno == errno.ENAMETOOLONG:
        return RequestError(f"{what} name too long")
    reason = os.strerror(exc.errno) if exc.errno is not None else type(exc).__name__
    return RequestError(f"{what} cannot be resolved: {reason}")
