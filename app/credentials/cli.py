"""``agw credentials set NAME | list | delete NAME`` (SPEC §12).

``set`` reads the value from ``--value`` or, without it, from stdin (one trailing
newline stripped). ``list`` prints entry names only, one per line. The master secret
comes from the configured environment variable or file (``credentials.*`` settings).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from app.config import load_settings
from app.credentials.store import CredentialError, CredentialStore, check_name, master_secret, store_path


def _open(args: argparse.Namespace, *, create: bool) -> CredentialStore:
    settings = load_settings(Path(args.dir))
    secret = master_secret(settings.credentials, settings.base_dir)
    path = store_path(settings)
    return CredentialStore.open_or_create(path, secret) if create else CredentialStore.open(path, secret)


def _set(args: argparse.Namespace) -> int:
    name = check_name(args.name)
    value: str = args.value if args.value is not None else sys.stdin.read()
    if args.value is None and value.endswith("\n"):
        value = value[:-1].removesuffix("\r")
    if not value:
        raise CredentialError("refusing to store an empty value")
    store = _open(args, create=True)
    store.set(name, value)
    store.save()
    print(f"stored credential {name!r} in {store.path}", file=sys.stderr)
    return 0


def _list(args: argparse.Namespace) -> int:
    settings = load_settings(Path(args.dir))
    if not store_path(settings).exists():
        return 0
    for name in _open(args, create=False).names():
        print(name)
    return 0


def _delete(args: argparse.Namespace) -> int:
    store = _open(args, create=False)
    if not store.delete(args.name):
        print(f"agw: no credential named {args.name!r}", file=sys.stderr)
        return 1
    store.save()
    print(f"deleted credential {args.name!r}", file=sys.stderr)
    return 0


def _run(handler: Any) -> Any:
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return int(handler(args))
        except CredentialError as exc:
            print(f"agw: {exc.message}", file=sys.stderr)
            return 1

    return wrapped


def add_credentials_command(commands: Any) -> None:
    """Register ``credentials`` on the ``agw`` sub-command parser."""
    parser = commands.add_parser("credentials", help="manage encrypted provider credentials (SPEC §12)")
    parser.add_argument("--dir", default=argparse.SUPPRESS, help="deployment folder")
    actions = parser.add_subparsers(dest="credentials_command", required=True)
    set_cmd = actions.add_parser("set", help="store NAME (value from --value or stdin)")
    set_cmd.add_argument("name")
    set_cmd.add_argument("--value", default=None, help="the secret (default: read from stdin)")
    set_cmd.set_defaults(handler=_run(_set))
    list_cmd = actions.add_parser("list", help="list entry names")
    list_cmd.set_defaults(handler=_run(_list))
    delete_cmd = actions.add_parser("delete", help="delete NAME")
    delete_cmd.add_argument("name")
    delete_cmd.set_defaults(handler=_run(_delete))
    for sub in (set_cmd, list_cmd, delete_cmd):
        sub.add_argument("--dir", default=argparse.SUPPRESS, help="deployment folder")
