"""Helpers shared by the loaders: reading files and turning pydantic errors into reasons."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from app.catalog import jsonc
from app.errors import DefinitionError, describe_validation_error

M = TypeVar("M", bound=BaseModel)

logger = logging.getLogger(__name__)

#: the largest definition file the catalog reads; every reload reads every file, so a bigger one
#: (a prompt pasted many times, a file something appends to) is rejected instead
MAX_DEFINITION_BYTES = 1024 * 1024


def read_text(path: Path) -> str:
    """A definition file as text (UTF-8); unreadable, undecodable, larger than
    ``MAX_DEFINITION_BYTES`` or not a regular file → ``DefinitionError``.

    Opened with ``O_NONBLOCK`` and checked with ``fstat``: a FIFO under a definition's name
    (``viewports/x.html``) blocked the open until something wrote to it, and with it the
    catalog build, so the gateway never started and hot reload stopped.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, encoding="utf-8") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise DefinitionError("not a regular file (a FIFO, a socket or a device?): a definition must be a file")
            size = info.st_size
            text = handle.read(MAX_DEFINITION_BYTES + 1) if size <= MAX_DEFINITION_BYTES else None
        if text is None or len(text.encode("utf-8", "surrogatepass")) > MAX_DEFINITION_BYTES:
            raise DefinitionError(f"the file is larger than {MAX_DEFINITION_BYTES} bytes (1 MiB), the most a "
                                  "definition file may be" + (f" ({size} bytes)" if size else ""))
        return text
    except UnicodeDecodeError as exc:
        raise DefinitionError(f"not UTF-8 text (byte {exc.start})") from exc
    except OSError as exc:
        raise DefinitionError(f"cannot read: {exc.strerror or exc}") from exc


def read_object(path: Path) -> dict[str, Any]:
    """A definition file parsed as a relaxed-JSON object."""
    return jsonc.loads_object(read_text(path))


def validate(model: type[M], data: Any, prefix: str = "") -> M:
    """``model.model_validate(data)`` with a readable ``DefinitionError`` on failure."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        reason = describe_validation_error(exc)
        raise DefinitionError(f"{prefix}{reason}" if prefix else reason) from exc


def rejection_reason(exc: Exception) -> str:
    """Why one definition file is rejected: a ``DefinitionError``'s own reason, any other failure
    named by its type. The loaders catch every ``Exception`` per file with this, so one hostile or
    unforeseen file (a RecursionError deep inside a parser) is that file's rejection and never
    takes the other files, the startup or the hot reload down."""
    if isinstance(exc, DefinitionError):
        return exc.message
    logger.error("a definition file failed to load unexpectedly", exc_info=exc)
    if isinstance(exc, RecursionError):
        return "the definition is nested too deeply to load (RecursionError)"
    if isinstance(exc, MemoryError):
        return "the definition is too large to load (MemoryError)"
    detail = " ".join(str(exc).split())[:200]
    return f"the definition could not be loaded ({type(exc).__name__}{': ' + detail if detail else ''})"
