"""A response known only when a run ends (``stream: false``), with the run stream's client rules.

``POST /api/ap/query`` with ``stream: false`` and ``POST /v1/chat/completions`` without ``stream``
answer once the run ended. Until then nothing is sent, but the client and the server are still
watched as for a stream (``app.api.sse.EventStream``):

* the client's disconnect cancels the work (``produce``): the run's reader is closed, and the run
  is cancelled when its ``onDisconnect`` says so (SPEC §6, §15); nothing is sent to nobody;
* the server stopping calls ``on_shutdown`` (the run is cancelled), so the request ends with the
  run's cancelled answer instead of holding the server's exit until the run ends by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.api.sse import StreamShutdown

logger = logging.getLogger(__name__)


class DeferredResponse(Response):
    """The response ``produce`` returns, sent when it is ready; see the module docstring."""

    def __init__(self, produce: Callable[[], Coroutine[Any, Any, Response]], *, shutdown: StreamShutdown,
                 on_shutdown: Callable[[], object]) -> None:
        super().__init__()
        self._produce = produce
        self._shutdown = shutdown
        self._on_shutdown = on_shutdown

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        work = loop.create_task(self._produce())
        gone = asyncio.Event()

        async def until_disconnect() -> None:
            try:
                while (await receive())["type"] != "http.disconnect":
                    pass
            except Exception:
                logger.exception("listening for the client's disconnect failed; the answer still comes")
                return
            gone.set()
            work.cancel()  # the run's reader closes with it, and cancels the run if onDisconnect says so

        listener = loop.create_task(until_disconnect())

        def stopping() -> None:
            self._on_shutdown()

        unregister = self._shutdown.register(stopping)
        try:
            answer = await work  # cancelling the request's task cancels the work too
        except asyncio.CancelledError:
            if gone.is_set() and work.cancelled():
                return  # the client went away: nobody to answer
            raise
        finally:
            unregister()
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
        await answer(scope, receive, send)


__all__ = ["DeferredResponse"]
