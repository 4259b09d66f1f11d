"""An ASGI middleware for tests that records the response body chunks the app sends for one path.

Each recorded chunk is one ASGI ``send``: one write to the socket. The wire-level tests use it to
check which events went out together.
"""

from __future__ import annotations

from typing import Any


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
