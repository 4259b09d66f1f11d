"""``agw serve``: the HTTP gateway (SPEC §4) on ``server.host``:``server.port``.

The listening socket is bound before the app starts, so a busy port is a one-line error
(exit 2) instead of a started-then-failed gateway.

The event loop and the HTTP parser are chosen at start-up (issue 13): uvloop and httptools
when they are installed (the extra ``fast``), else asyncio's loop and h11 (pure Python).
``--loop``/``--http`` force one; the choice is logged at INFO. The gateway's upstream client
parses answers with the same one (``H1Transport`` on httptools, else httpcore's h11).
"""

from __future__ import annotations

import importlib.util
import logging
import socket
from typing import Annotated, Any

import typer
import uvicorn

from app.cli.options import (
    DirOption,
    LogLevelOption,
    deployment_dir,
    effective_log_level,
    fail,
    log_unknown_keys,
)
from app.config import Settings, load_settings

logger = logging.getLogger(__name__)


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def server_stack(loop: str = "auto", http: str = "auto") -> tuple[str, str]:
    """The event loop and HTTP implementation to run on: ``auto`` takes the fast one when installed.

    Raises ``ValueError`` for a name that is not one of the choices or a forced one not installed.
    """
    if loop not in ("auto", "uvloop", "asyncio"):
        raise ValueError(f"unknown event loop {loop!r} (auto, uvloop, asyncio)")
    if http not in ("auto", "httptools", "h11"):
        raise ValueError(f"unknown HTTP implementation {http!r} (auto, httptools, h11)")
    for name, forced in (("uvloop", loop), ("httptools", http)):
        if forced == name and not _installed(name):
            raise ValueError(f"{name} is not installed (pip install 'agent-gateway[fast]')")
    if loop == "auto":
        loop = "uvloop" if _installed("uvloop") else "asyncio"
    if http == "auto":
        http = "httptools" if _installed("httptools") else "h11"
    return loop, http


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host``:``port`` and listening; ``OSError`` when the port is taken."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: TIME_WAIT is no conflict
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


#: how long a stopping server waits for its open requests before it cancels them: the streams end
#: within ``app.api.sse.SHUTDOWN_GRACE_SECONDS`` (3 s: their runs are cancelled, each client gets
#: ``run.cancel``); this bounds what cannot end by itself, e.g. a client that stopped reading its
#: stream. A number here, so that the other sub-commands need not import the gateway to start
#: (tests/api/test_event_stream.py checks that it stays above the grace)
SHUTDOWN_TIMEOUT_SECONDS = 10


def uvicorn_config(app: Any, settings: Settings, level: str, loop: str, http: str) -> uvicorn.Config:
    """The server's configuration: address, logging (ours), the stack, the idle keep-alive time,
    and a bounded graceful shutdown (``SHUTDOWN_TIMEOUT_SECONDS``)."""
    return uvicorn.Config(app, host=settings.server.host, port=settings.server.port, log_level=level.lower(),
                          log_config=None, loop=loop, http=http, timeout_keep_alive=settings.server.keep_alive_seconds,
                          timeout_graceful_shutdown=SHUTDOWN_TIMEOUT_SECONDS)


def serve(
    ctx: typer.Context,
    dir: DirOption = None,
    log_level: LogLevelOption = None,
    port: Annotated[int | None, typer.Option("--port", help="HTTP port (default: server.port).")] = None,
    host: Annotated[str | None, typer.Option("--host", help="Bind address (default: server.host).")] = None,
    loop: Annotated[str, typer.Option(
        "--loop", help="Event loop: auto (uvloop when installed), uvloop or asyncio.")] = "auto",
    http: Annotated[str, typer.Option(
        "--http", help="HTTP/1.1 implementation: auto (httptools when installed), httptools or h11.")] = "auto",
) -> int:
    """Run the HTTP gateway."""
    level = effective_log_level(ctx)
    overrides: dict[str, dict[str, object]] = {"server": {}}
    if port is not None:
        overrides["server"]["port"] = port
    if host is not None:
        overrides["server"]["host"] = host
    settings = load_settings(deployment_dir(ctx, dir), overrides=overrides)
    log_unknown_keys(settings.base_dir)
    try:
        loop, http = server_stack(loop, http)
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    # the upstream client parses with the same implementation as the server: h11 means pure Python
    from app.api.app import create_app  # the whole gateway: not imported for the other sub-commands

    app = create_app(settings, lean_parser=http == "httptools")  # ConfigError (SPEC §9, §12) stops here
    where = f"{settings.server.host}:{settings.server.port}"
    try:
        sock = listening_socket(settings.server.host, settings.server.port)
    except OSError as exc:
        raise fail(f"cannot listen on {where}: {exc.strerror or exc}", 2) from None
    server = uvicorn.Server(uvicorn_config(app, settings, level, loop, http))
    logger.info("serving on %s with the %s event loop and %s", where, loop, http)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0 if server.started else 3
