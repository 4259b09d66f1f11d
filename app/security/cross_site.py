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

That alone trusts ``Host``, and DNS rebinding forges it: a page at ``http://attacker.example:8080``
whose name the attacker re-points at 127.0.0.1 is *same-origin* with the local gateway (the
browser sends ``Host`` and ``Origin`` both naming ``attacker.example:8080``), so it could start
agents and read every chat, ``GET`` included. So every request (any method, streams too) must
name in ``Host`` an IP literal (rebinding needs a DNS name: ``127.0.0.1``, ``[::1]``, the
machine's LAN address when bound to 0.0.0.0), ``localhost``, or a name in
``server.allowed-hosts``; any other name gets 403 (except ``GET /healthz``, a load balancer's
probe). A request without ``Host`` is not a browser's and passes.

With auth on, a bearer token is never sent by a browser on its own, so the guard is not needed
and not installed.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from app.config import CorsSettings
from app.security.cors import origin_regex

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def host_name(host: str) -> str:
    """The name of a ``Host`` header without its port, brackets and trailing dot, lower case."""
    host = host.strip().lower()
    if host.startswith("["):  # an IPv6 literal: [::1]:8080
        return host[1:host.find("]")] if "]" in host else host
    name, colon, port = host.rpartition(":")
    if colon and port.isdigit():
        host = name
    return host.rstrip(".")


class HostNames:
    """The ``Host`` names a gateway with auth off answers (see the module docstring)."""

    def __init__(self, allowed: Sequence[str] = ()) -> None:
        names = [host_name(name) for name in allowed if name.strip()]
        self._any = "*" in names
        self._exact = {"localhost", *(name for name in names if not name.startswith("*."))}
        self._suffixes = tuple(name[1:] for name in names if name.startswith("*."))  # ".example.com"

    def allows(self, host: str) -> bool:
        name = host_name(host)
        if self._any or name in self._exact or (self._suffixes and name.endswith(self._suffixes)):
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True  # an IP literal: a page can only reach it under its own origin


class CrossSiteGuard:
    """Pure ASGI middleware: refuses state-changing requests from other sites (see the module docstring)."""

    def __init__(self, app: ASGIApp, cors: CorsSettings | None = None, allowed_hosts: Sequence[str] = ()) -> None:
        self.app = app
        self._hosts = HostNames(allowed_hosts)
        patterns = [p.strip() for p in (cors.allowed_origin_patterns if cors is not None and cors.enabled else [])]
        self._exact = {p.lower() for p in patterns if p and "*" not in p}
        regex = origin_regex(patterns)
        self._regex = re.compile(regex, re.IGNORECASE) if regex else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        origin = host = None
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value.decode("latin-1").strip().lower()
            elif name == b"host":
                host = value.decode("latin-1").strip().lower()
                if not self._hosts.allows(host) and not _health_probe(scope):
                    await _refuse(scope, send, f"requests for host {host[:100]!r} refused: with agent.auth.enabled "
                                  "false only localhost, IP addresses and server.allowed-hosts are answered")
                    return
        if (scope["type"] != "http" or scope["method"] in _SAFE_METHODS or origin is None
                or self._allowed(origin, scope.get("scheme", "http"), host)):
            await self.app(scope, receive, send)
            return
        await _refuse(scope, send, f"cross-site request from {origin[:100]!r} refused: with agent.auth.enabled "
                      "false only the gateway's own pages (or origins allowed by agent.cors) may change anything")

    def _allowed(self, origin: str, scheme: str, host: str | None) -> bool:
        if host is not None and origin == f"{scheme}://{host}":
            return True  # the gateway's own pages (the web console)
        return origin in self._exact or (self._regex is not None and self._regex.fullmatch(origin) is not None)


def _health_probe(scope: Scope) -> bool:
    """``GET /healthz`` answers any ``Host``: a load balancer's probe names whatever it likes, and the
    answer (status, version, catalog version) is nothing a rebinding page could use."""
    return scope["type"] == "http" and scope["path"] == "/healthz" and scope["method"] in ("GET", "HEAD")


async def _refuse(scope: Scope, send: Send, message: str) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    body = orjson.dumps({"code": 4030, "msg": message, "data": None})
    await send({"type": "http.response.start", "status": 403,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


__all__ = ["CrossSiteGuard", "HostNames", "host_name"]
