"""The gateway's one upstream client (issue 13): httpx on the leanest transport installed.

With httptools (the ``fast`` extra, which ``agw serve`` also uses for its own server) the
transport is ``H1Transport`` (``app/llm/h1.py``): responses parsed by llhttp, straight from
the lean network backend. Without it, ``StreamingTransport`` (``app/llm/network.py``): httpx's
own httpcore/h11 transport over the same backend and a linear pool. Both are tested; the
choice is made once, when the gateway builds its client.
"""

from __future__ import annotations

import http.cookiejar
import importlib.util
import logging

import httpx

from app.llm.network import StreamingTransport

logger = logging.getLogger(__name__)


def has_httptools() -> bool:
    return importlib.util.find_spec("httptools") is not None


def streaming_transport(limits: httpx.Limits, *, lean_parser: bool | None = None) -> httpx.AsyncBaseTransport:
    """``H1Transport`` (falling back to ``StreamingTransport`` for ``HEAD``/``CONNECT``) when
    httptools is installed, else ``StreamingTransport``. ``lean_parser`` forces the choice."""
    fallback = StreamingTransport(limits)
    if lean_parser is False or (lean_parser is None and not has_httptools()):
        return fallback
    from app.llm.h1 import H1Transport  # imports httptools

    return H1Transport(limits, fallback)


def shared_client(limits: httpx.Limits, timeout: httpx.Timeout, *, lean_parser: bool | None = None) -> httpx.AsyncClient:
    """The gateway's one upstream client, shared by every user's runs: on the lean transport, and
    with no cookie jar worth the name. httpx keeps the cookies a server sets and sends them on
    every later request to that server, so a provider's (or a tool's target's) session or
    load-balancer cookie set during one user's call would ride along on the next user's call;
    a policy that accepts no domain keeps the jar empty."""
    transport = streaming_transport(limits, lean_parser=lean_parser)
    logger.info("upstream answers are parsed by %s",
                "httptools" if not isinstance(transport, StreamingTransport) else "h11 (httpcore)")
    client = httpx.AsyncClient(limits=limits, timeout=timeout, transport=transport)
    client.cookies.jar.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    return client


__all__ = ["has_httptools", "shared_client", "streaming_transport"]
