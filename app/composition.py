"""Where layers that must not know each other are put together (SPEC §10).

``agw sidecar --http-port N`` serves the HTTP API (``app.api``) of the sidecar's own gateway
(``app.sidecar``). The sidecar never imports ``app.api`` (tests/test_import_graph.py): it runs
whatever ``ExtraService`` it is handed beside its stdin loop, and this module hands it the HTTP
API. Only the command line (``app.cli``) imports this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any

import typer
import uvicorn

from app.cli.options import DirOption, LogLevelOption, deployment_dir, effective_log_level, fail, log_unknown_keys
from app.cli.serve import listening_socket
from app.config import Settings, load_settings
from app.logs import queue_stderr_logging
from app.sidecar import SHUTDOWN_GRACE_S
from app.sidecar.stdio import take_stdout

if TYPE_CHECKING:  # the gateway itself is imported when the sidecar starts: ``agw`` starts quickly
    from app.gateway import Gateway
    from app.sidecar.server import ExtraService

logger = logging.getLogger(__name__)


async def _serve_http(app: Any, sock: socket.socket, keep_alive_seconds: int, stop: asyncio.Event) -> None:
    """Serve ``app`` on the bound ``sock`` until ``stop``; set ``stop`` when serving ends first."""
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="on", timeout_keep_alive=keep_alive_seconds))
    serving = asyncio.create_task(_serve_until_exit(server, sock))
    waiting = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, waiting}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    waiting.cancel()
    with contextlib.suppress(Exception):
        await serving
    stop.set()


async def _serve_until_exit(server: uvicorn.Server, sock: socket.socket) -> None:
    """``server.serve``; uvicorn's ``sys.exit`` (a failed start) ends the HTTP API, not the event loop."""
    try:
        await server.serve(sockets=[sock])
    except SystemExit as exc:
        logger.error("sidecar: the HTTP API stopped (uvicorn exited with status %s); stopping", exc.code)


def http_api(settings: Settings, port: int) -> ExtraService:
    """The sidecar service serving the HTTP API of the sidecar's gateway on 127.0.0.1:``port``.

    The port is bound when the service is entered, before the sidecar reads its first request: a
    busy port is a one-line error and exit status 2, never a sidecar that answered and then died."""

    @contextlib.asynccontextmanager
    async def serve(gateway: Gateway, stop: asyncio.Event) -> AsyncIterator[None]:
        from app.api.app import create_app

        app = create_app(settings, gateway)  # ConfigError (SPEC §9 fail closed) stops the sidecar here
        try:
            sock = listening_socket("127.0.0.1", port)
        except OSError as exc:
            raise fail(f"cannot listen on 127.0.0.1:{port} (--http-port): {exc.strerror or exc}", 2) from None
        task = asyncio.create_task(_serve_http(app, sock, settings.server.keep_alive_seconds, stop))
        logger.info("sidecar: HTTP API on http://127.0.0.1:%d", port)
        try:
            yield
        finally:
            stop.set()
            await task
            sock.close()

    return serve


def sidecar(
    ctx: typer.Context,
    dir: DirOption = None,
    log_level: LogLevelOption = None,
    http_port: Annotated[int | None, typer.Option(
        "--http-port", help="Also serve the HTTP API of the same gateway on 127.0.0.1:PORT.")] = None,
    shutdown_grace: Annotated[float, typer.Option(
        "--shutdown-grace", min=0, help="Seconds requests may take to answer after EOF or SIGTERM (their runs are "
        "cancelled first); then each is cancelled and answered with a -32000 error.")] = SHUTDOWN_GRACE_S,
) -> int:
    """Run the gateway as JSON-RPC 2.0 over stdin/stdout (SPEC §10)."""
    effective_log_level(ctx)  # logs go to stderr
    if sys.stdin is None:
        raise fail("stdin is closed: the sidecar reads its JSON-RPC requests from stdin", 2)
    try:
        out = take_stdout()  # from here on only protocol lines reach the real stdout
    except OSError as exc:
        raise fail(f"stdout is not open ({exc.strerror}): the sidecar writes its JSON-RPC answers there", 2) from None
    logs = queue_stderr_logging()  # a host that never reads stderr must not stop the event loop
    try:
        settings = load_settings(deployment_dir(ctx, dir))
        log_unknown_keys(settings.base_dir)
        services = [http_api(settings, http_port)] if http_port is not None else []
        from app.sidecar.server import run_sidecar

        return asyncio.run(run_sidecar(settings, out, extra_services=services, shutdown_grace_s=shutdown_grace))
    finally:
        logs.close()


def add_sidecar_command(app: typer.Typer) -> None:
    """Register ``sidecar`` (``agw sidecar`` / ``python -m app sidecar``) on the ``agw`` Typer app."""
    app.command("sidecar")(sidecar)


__all__ = ["add_sidecar_command", "http_api"]
