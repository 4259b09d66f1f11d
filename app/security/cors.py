"""CORS from ``agent.cors.*`` (SPEC §2): Starlette's ``CORSMiddleware``, scoped to a path pattern.

``allowed-origin-patterns`` entries are exact origins or patterns with ``*`` wildcards
(``https://*.example.com``, ``http://localhost:*``): exact ones become
``allow_origins``, wildcard ones one ``allow_origin_regex`` where ``*`` matches any run
of characters except ``/`` (a lone ``*`` allows every origin). ``path-pattern`` is an
Ant-style pattern (``/api/**``: ``**`` any sub-path, ``*`` one segment); requests
outside it pass through untouched. Installed only when ``agent.cors.enabled``.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from app.config import CorsSettings


def origin_regex(patterns: list[str]) -> str | None:
    """One regex (for ``re.fullmatch``) covering every wildcard origin pattern, or ``None``."""
    parts: list[str] = []
    for pattern in patterns:
        if "*" not in pattern:
            continue
        if pattern.strip() == "*":
            parts.append(".*")
        else:
            parts.append("[^/]*".join(re.escape(piece) for piece in pattern.strip().split("*")))
    return "|".join(f"(?:{part})" for part in parts) if parts else None


def path_regex(pattern: str) -> re.Pattern[str]:
    """An Ant-style path pattern (``/api/**``) as a compiled regex."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("/**", i):
            out.append("(?:/.*)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def cors_options(cors: CorsSettings) -> dict[str, Any]:
    """Keyword arguments for ``CORSMiddleware`` from the settings."""
    exact = [p.strip() for p in cors.allowed_origin_patterns if p.strip() and "*" not in p]
    return {
        "allow_origins": exact,
        "allow_origin_regex": origin_regex(cors.allowed_origin_patterns),
        "allow_methods": [m.upper() for m in cors.allowed_methods],
        "allow_headers": cors.allowed_headers,
        "expose_headers": cors.exposed_headers,
        "allow_credentials": cors.allow_credentials,
        "max_age": cors.max_age_seconds,
    }


class ScopedCORSMiddleware:
    """``CORSMiddleware`` for paths matching ``agent.cors.path-pattern`` only."""

    def __init__(self, app: ASGIApp, cors: CorsSettings) -> None:
        self.app = app
        self._cors = CORSMiddleware(app, **cors_options(cors))
        self._paths = path_regex(cors.path_pattern or "/**")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self._paths.fullmatch(scope.get("path", "")):
            await self._cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)


__all__ = ["ScopedCORSMiddleware", "cors_options", "origin_regex", "path_regex"]
