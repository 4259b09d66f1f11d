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
from typing import Any

import httpx
from httpx._utils import get_environment_proxies  # httpx's own reading of *_PROXY / NO_PROXY

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


class NoCookieJar(http.cookiejar.CookieJar):
    """A cookie jar that keeps nothing and adds nothing.

    The shared client must not carry a cookie from one user's call to the next (see
    ``shared_client``). A jar that never stores gives that by construction, and it also skips
    the work a storing jar does on every response: building an ``email.message`` of all its
    headers to look for ``Set-Cookie`` (24.5 → 18.6 µs per response measured; httpx still builds
    its urllib compatibility objects). The refusing policy stays as a second line."""

    def __init__(self) -> None:
        super().__init__(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))

    def extract_cookies(self, response: object, request: object) -> None:
        return None

    def set_cookie(self, cookie: http.cookiejar.Cookie) -> None:
        return None

    def add_cookie_header(self, request: object) -> None:
        return None


class NoCookies(httpx.Cookies):
    """The shared client's cookies: always empty. On top of ``NoCookieJar``, it skips what httpx
    does for every response before the jar is even asked: build urllib compatibility objects of
    the request (its URL parsed again) and of the response (its headers as an ``email.message``)."""

    def __init__(self) -> None:
        super().__init__(NoCookieJar())

    def extract_cookies(self, response: httpx.Response) -> None:
        return None

    def set_cookie_header(self, request: httpx.Request) -> None:
        return None


#: the most parsed endpoint URLs an ``UpstreamClient`` keeps (a handful of providers in practice)
MAX_PARSED_URLS = 256


class UpstreamClient(httpx.AsyncClient):
    """httpx's client with cookies that are never kept (``NoCookies``, set once: assigning other
    cookies is refused) and ``url()``, which parses each endpoint URL once instead of per call."""

    def __init__(self, **kwargs: Any) -> None:
        if "cookies" in kwargs:
            raise TypeError("the upstream client keeps no cookies")
        super().__init__(cookies=NoCookieJar(), **kwargs)  # httpx's own slot too, though every use goes through ``cookies``
        self._no_cookies = NoCookies()
        self._urls: dict[str, httpx.URL] = {}

    @property
    def cookies(self) -> httpx.Cookies:
        return self._no_cookies

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        raise TypeError("the upstream client keeps no cookies")

    def url(self, url: str) -> httpx.URL:
        """``url`` parsed, from a small cache (httpx parses a string URL on every request: about
        50 µs, with the host's IP-address checks)."""
        parsed = self._urls.get(url)
        if parsed is None:
            if len(self._urls) >= MAX_PARSED_URLS:
                self._urls.clear()
            parsed = self._urls[url] = httpx.URL(url)
        return parsed


def shared_client(limits: httpx.Limits, timeout: httpx.Timeout, *, lean_parser: bool | None = None) -> UpstreamClient:
    """The gateway's one upstream client, shared by every user's runs: on the lean transport, and
    with cookies that are never kept. httpx keeps the cookies a server sets and sends them on
    every later request to that server, so a provider's (or a tool's target's) session or
    load-balancer cookie set during one user's call would ride along on the next user's call."""
    transport = streaming_transport(limits, lean_parser=lean_parser)
    logger.info("upstream answers are parsed by %s",
                "httptools" if not isinstance(transport, StreamingTransport) else "h11 (httpcore)")
    return UpstreamClient(limits=limits, timeout=timeout, transport=transport, mounts=environment_proxies(limits))


def environment_proxies(limits: httpx.Limits) -> dict[str, httpx.AsyncBaseTransport | None]:
    """``HTTP_PROXY`` / ``HTTPS_PROXY`` / ``ALL_PROXY`` / ``NO_PROXY`` as httpx's mounts.

    httpx honours the environment's proxies only when it builds its own transport; the gateway
    passes one (the lean transport), so without these mounts an egress proxy would be bypassed
    or, where the proxy is the only way out, every provider call would fail. A proxied origin
    goes through httpx's own transport with the proxy (as a plain ``httpx.AsyncClient`` would);
    a ``NO_PROXY`` host keeps the lean transport (mount ``None``). The proxies' URLs are not
    logged: they may carry credentials."""
    mounts: dict[str, httpx.AsyncBaseTransport | None] = {}
    for pattern, proxy in get_environment_proxies().items():
        mounts[pattern] = None if proxy is None else httpx.AsyncHTTPTransport(proxy=proxy, limits=limits)
    proxied = sorted(pattern for pattern, mount in mounts.items() if mount is not None)
    if proxied:
        logger.info("upstream requests for %s go through the proxy set in the environment", ", ".join(proxied))
    return mounts


__all__ = ["MAX_PARSED_URLS", "NoCookieJar", "NoCookies", "UpstreamClient", "environment_proxies", "has_httptools", "shared_client",
           "streaming_transport"]
