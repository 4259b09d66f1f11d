"""What every ``agw`` command shares: the global options, logging, terminal output, clean errors.

``--dir`` and ``--log-level`` are accepted before the sub-command (``agw --dir D serve``) and
after it (``agw serve --dir D``); the one nearest the sub-command wins. Nothing here is module
state: the values are read from the click context chain of the running command.
"""

from __future__ import annotations

import logging
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from app.config import unknown_keys_in_files



class LogLevel(str, Enum):
    """The accepted ``--log-level`` values (any case)."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


DirOption = Annotated[
    Path | None,
    typer.Option("--dir", help="Deployment folder (default: the working directory).", show_default=False),
]
LogLevelOption = Annotated[
    LogLevel | None,
    typer.Option("--log-level", case_sensitive=False, help="Log level of the stderr log (default: INFO).",
                 show_default=False),
]

logger = logging.getLogger("app.cli")


def _nearest(ctx: typer.Context, name: str) -> Any:
    """The value of option ``name`` on the command nearest ``ctx`` that was given it, or None."""
    current: Any = ctx
    while current is not None:
        value = current.params.get(name)
        if value is not None:
            return value
        current = current.parent
    return None


def deployment_dir(ctx: typer.Context, own: Path | None = None) -> Path:
    """The deployment folder: ``own`` (a positional argument), else the nearest ``--dir``, else ``.``."""
    return Path(own if own is not None else (_nearest(ctx, "dir") or "."))


def effective_log_level(ctx: typer.Context, default: str = "INFO") -> str:
    """The nearest ``--log-level`` (upper case), else ``default``; logging is configured with it."""
    given = _nearest(ctx, "log_level")
    level = (given.value if isinstance(given, LogLevel) else str(given or default)).upper()
    configure_logging(level)
    return level


def configure_logging(level: str) -> None:
    """Log records go to stderr only (stdout carries the command's output, or the sidecar protocol)."""
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # watchfiles reports every change at INFO; the catalog logs what matters (reloads, rejections)
    logging.getLogger("watchfiles").setLevel(logging.WARNING)


def log_unknown_keys(base_dir: Path) -> None:
    """One WARNING per configuration key no setting reads, naming its file and the closest key."""
    for file, key, suggestion in unknown_keys_in_files(base_dir):
        hint = f"did you mean {suggestion!r}?" if suggestion else "no similar key"
        logger.warning("unknown configuration key %r in %s (%s); it is ignored", key, file, hint)


def out_console() -> Console:
    """The command's output (stdout): no markup parsing, no wrapping of long lines."""
    return Console(file=sys.stdout, soft_wrap=True, highlight=False, markup=False, emoji=False)


def err_console() -> Console:
    return Console(file=sys.stderr, soft_wrap=True, highlight=False, markup=False, emoji=False)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``agw: message`` on stderr; the caller raises the returned ``typer.Exit``."""
    print(f"agw: {message}", file=sys.stderr)
    return typer.Exit(code)


__all__ = [
    "DirOption",
    "LogLevel",
    "LogLevelOption",
    "configure_logging",
    "deployment_dir",
    "err_console",
    "fail",
    "effective_log_level",
    "log_unknown_keys",
    "out_console",
]
