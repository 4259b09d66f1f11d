"""The ``agw`` command: ``agw serve``, ``agw sidecar``, ``agw credentials …``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from app import __version__
from app.api.app import create_app
from app.composition import add_sidecar_command
from app.config import load_settings
from app.credentials.cli import add_credentials_command
from app.errors import ConfigError


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # watchfiles reports every change at INFO; the catalog logs what matters (reloads, rejections)
    logging.getLogger("watchfiles").setLevel(logging.WARNING)


def _serve(args: argparse.Namespace) -> int:
    overrides: dict[str, dict[str, object]] = {"server": {}}
    if args.port is not None:
        overrides["server"]["port"] = args.port
    if args.host is not None:
        overrides["server"]["host"] = args.host
    settings = load_settings(Path(args.dir), overrides=overrides)
    app = create_app(settings)
    uvicorn.run(app, host=settings.server.host, port=settings.server.port, log_level=args.log_level.lower(),
                log_config=None)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agw", description="Agent Gateway")
    parser.add_argument("--version", action="version", version=f"agw {__version__}")
    parser.add_argument("--dir", default=".", help="deployment folder (default: the working directory)")
    parser.add_argument("--log-level", default="INFO")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP gateway")
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--host", default=None)
    serve.add_argument("--dir", default=argparse.SUPPRESS, help="deployment folder")
    serve.set_defaults(handler=_serve)
    add_sidecar_command(commands)
    add_credentials_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.log_level)
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        print(f"agw: configuration error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
