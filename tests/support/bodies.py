"""An ASGI middleware for tests that records the response body chunks the app sends for one path.

Each recorded chunk is one ASGI ``send``: one write to the socket. The wire-level tests use it to
check which events went out together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.devtools import FakeUpstream
from app.devtools.script import text_script
from tests.support.deployment import agent, write_agent
from tests.support.server import GatewayServer


class RecordBodies:
    """Records in ``bodies`` the ``http.response.body`` chunks the app sends for ``path``."""

    def __init__(self, app: Any, bodies: list[bytes], path: str) -> None:
        self.app, self.bodies, self.path = app, bodies, path

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        async def recording(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body" and scope.get("path") == self.path:
                self.bodies.append(message["body"])
            await send(message)

        await self.app(scope, receive, recording)


def recording_gateway(deploy: Path, upstream: FakeUpstream, path: str,
                      answer: list[str]) -> tuple[GatewayServer, list[bytes]]:
    """A gateway (not started) with a ONESHOT agent ``plain`` whose next answer is ``answer``, and the
    list that will hold the body chunks it sends for ``path``."""
    write_agent(deploy, "plain", agent("ONESHOT"))
    upstream.enqueue(text_script(answer))
    bodies: list[bytes] = []
    server = GatewayServer(deploy)
    server.app.add_middleware(RecordBodies, bodies=bodies, path=path)
    return server, bodies
