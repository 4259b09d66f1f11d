"""Admission pacing: a burst of new requests cannot stall the streams already flowing.

asyncio runs every ready task's step in one loop iteration before it looks at the sockets
again. When 200 requests arrive together, all 200 first steps (middleware, auth, body,
starting the run: about half a millisecond of CPU each) run back to back, and no upstream
delta is read or forwarded for the 100 ms that takes. ``AdmissionPacer`` lets at most
``per_iteration`` new requests begin their work per loop iteration; the others wait their
turn in arrival order (a semaphore: first come, first admitted) and the loop reads its
sockets between turns. Nothing is refused and nothing waits when requests do not arrive in
a burst: a request that finds a free slot goes on in the same step, with no suspension.
The total work is the same; it is interleaved with the live streams instead of ahead of
them, and the first requests of a burst are served first instead of all at the end.
Measured in docs/DECISIONS.md ("Hot path").
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Receive, Scope, Send

#: new requests let in per loop iteration (the others wait for the next ones, in order)
PER_ITERATION = 4


class AdmissionPacer:
    """Pure ASGI middleware: at most ``per_iteration`` HTTP requests begin per loop iteration."""

    def __init__(self, app: ASGIApp, per_iteration: int = PER_ITERATION) -> None:
        if per_iteration < 1:
            raise ValueError("per_iteration must be at least 1")
        self.app = app
        self.per_iteration = per_iteration
        self._gate: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            loop = asyncio.get_running_loop()
            gate = self._gate
            if gate is None or self._loop is not loop:  # a semaphore belongs to one loop
                gate = self._gate = asyncio.Semaphore(self.per_iteration)
                self._loop = loop
            await gate.acquire()
            # the slot comes back in the next iteration, after the loop has read its sockets
            loop.call_soon(gate.release)
        await self.app(scope, receive, send)


__all__ = ["PER_ITERATION", "AdmissionPacer"]
