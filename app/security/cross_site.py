"""Cross-site request refusal while auth is off (SPEC §9: safe by default).

With ``agent.auth.enabled: false`` (the demo deployment, a desktop app's local gateway) nothing
proves who sends a request, and a browser lets any web page send a "simple" cross-site POST
without asking first: ``text/plain`` or ``multipart/form-data`` bodies need no CORS preflight.
The page cannot read the answer, but the request runs: a page the user visits could start agents
(and their tools), answer frontend tools, upload files or interrupt runs on the user's local
gateway. Browsers name the page's origin in ``Origin`` on every cross-site POST, so:

* a request that changes something (any method but ``GET``, ``HEAD``, ``OPTIONS``) and carries an
  ``Origin`` is let in only from the gateway's own origin (the web console) or an origin that
  ``agent.cors.allowed-origin-patterns`` allows (when ``agent.cors.enabled``); others get 403;
* a request without ``Origin`` (curl, SDKs, the sidecar's own clients) is not a browser's
  cross-site request and passes.

With auth on, a bearer token is never sent by a browser on its own, so the guard is not needed
and not installed.
"""

from __future__ import annotations

import re

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from app.config import CorsSettings
from app.security.cors import origin_regex

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class CrossSiteGuard:
    """Pure ASGI middleware: refuses state-changing requests from other sites (see the module docstring)."""

    def __init__(self, app: ASGIApp, cors: CorsSettings | None = None) -> None:
        self.app = app
        patterns = [p.strip() for p in (cors.allowed_origin_patterns if cors is not None and cors.enabled else [])]
        self._exact = {p.lower() for p in patterns if p and "*" not in p}
        regex = origin_regex(patterns)
        self._regex = re.compile(regex, re.IGNORECASE) if regex else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        origin = host = None
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value.decode("latin-1").strip().lower()
            elif name == b"host":
                host = value.decode("latin-1").strip().lower()
        if origin is None or self._allowed(origin, scope.get("scheme", "http"), host):
            await self.app(scope, receive, send)
            return
        body = orjson.dumps({"code": 4030, "msg": f"cross-site request from {origin[:100]!r} refused: with "
                             "agent.auth.enabled false only the gateway's own pages (or origins allowed by "
                             "agent.cors) may change anything", "data": None})
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def _allowed(self, origin: str, scheme: str, host: str | None) -> bool:
        if host is not None and origin == f"{scheme}://{host}":
            return True  # the gateway's own pages (the web console)
        return origin in self._exact or (self._regex is not None and self._regex.fullmatch(origin) is not None)


__all__ = ["CrossSiteGuard"]
