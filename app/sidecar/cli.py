"""``agw sidecar`` / ``python -m app sidecar`` (SPEC §10)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from app.config import load_settings
from app.sidecar.protocol import take_stdout


def _sidecar(args: argparse.Namespace) -> int:
    # imported here, like ``uvicorn`` in ``agw serve``: other sub-commands stay quick to start
    from app.sidecar.server import run_sidecar

    out = take_stdout()  # from here on only protocol lines reach the real stdout
    settings = load_settings(Path(args.dir))
    return asyncio.run(run_sidecar(settings, out, http_port=args.http_port))


def add_sidecar_command(commands: Any) -> None:
    """Register ``sidecar`` on the ``agw`` sub-command parser."""
    parser = commands.add_parser("sidecar", help="run the gateway as JSON-RPC 2.0 over stdin/stdout")
    parser.add_argument("--dir", default=argparse.SUPPRESS, help="deployment folder")
    parser.add_argument("--http-port", type=int, default=None,
                        help="also serve the HTTP API of the same gateway on 127.0.0.1:PORT")
    parser.set_defaults(handler=_sidecar)
