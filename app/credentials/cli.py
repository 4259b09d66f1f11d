"""``agw credentials set NAME | list | delete NAME`` (SPEC §12).

``set`` reads the value from ``--value`` or, without it, from stdin (one trailing
newline stripped). ``list`` prints entry names only, one per line. The master secret
comes from the configured environment variable or file (``credentials.*`` settings).
A credential error is one line on stderr and exit code 1.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import wraps
from pathlib import Path
from typing import Annotated, ParamSpec

import typer

from app.cli.options import DirOption, LogLevelOption, deployment_dir, effective_log_level
from app.config import load_settings
from app.credentials.store import CredentialError, CredentialStore, check_name, editing, master_secret, store_path

P = ParamSpec("P")


def _open(folder: Path) -> CredentialStore:
    settings = load_settings(folder)
    return CredentialStore.open(store_path(settings), master_secret(settings.credentials, settings.base_dir))


def _editing(folder: Path, *, create: bool) -> AbstractContextManager[CredentialStore]:
    """The store opened for a change, under its lock (``store.editing``): save inside the ``with``."""
    settings = load_settings(folder)
    return editing(store_path(settings), master_secret(settings.credentials, settings.base_dir), create=create)


def _clean_errors(command: Callable[P, int]) -> Callable[P, int]:
    """A ``CredentialError`` becomes ``agw: <message>`` on stderr and exit code 1."""

    @wraps(command)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> int:
        try:
            return command(*args, **kwargs)
        except CredentialError as exc:
            print(f"agw: {exc.message}", file=sys.stderr)
            return 1

    return wrapped


@_clean_errors
def set_(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Entry name.")],
    value: Annotated[str | None, typer.Option("--value", help="The secret (default: read from stdin).")] = None,
    dir: DirOption = None,
    log_level: LogLevelOption = None,
) -> int:
    """Store NAME (the value from --value or stdin)."""
    effective_log_level(ctx)
    name = check_name(name)
    secret: str = value if value is not None else sys.stdin.read()
    if value is None and secret.endswith("\n"):
        secret = secret[:-1].removesuffix("\r")
    if not secret:
        raise CredentialError("refusing to store an empty value")
    with _editing(deployment_dir(ctx, dir), create=True) as store:
        store.set(name, secret)
        store.save()
    print(f"stored credential {name!r} in {store.path}", file=sys.stderr)
    return 0


@_clean_errors
def list_(ctx: typer.Context, dir: DirOption = None, log_level: LogLevelOption = None) -> int:
    """List entry names, one per line."""
    effective_log_level(ctx)
    folder = deployment_dir(ctx, dir)
    if not store_path(load_settings(folder)).exists():
        return 0
    for name in _open(folder).names():
        print(name)
    return 0


@_clean_errors
def delete(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Entry name.")],
    dir: DirOption = None,
    log_level: LogLevelOption = None,
) -> int:
    """Delete NAME."""
    effective_log_level(ctx)
    with _editing(deployment_dir(ctx, dir), create=False) as store:
        if not store.delete(name):
            print(f"agw: no credential named {name!r}", file=sys.stderr)
            return 1
        store.save()
    print(f"deleted credential {name!r}", file=sys.stderr)
    return 0


def _group(dir: DirOption = None, log_level: LogLevelOption = None) -> None:
    """Manage encrypted provider credentials (SPEC §12)."""


def add_credentials_command(app: typer.Typer) -> None:
    """Register ``credentials set|list|delete`` on the ``agw`` Typer app."""
    group = typer.Typer(no_args_is_help=True)
    group.callback()(_group)
    group.command("set")(set_)
    group.command("list")(list_)
    group.command("delete")(delete)
    app.add_typer(group, name="credentials")
