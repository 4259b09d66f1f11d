"""Where ``browser_open`` may connect: public addresses only (SPEC §13, §9).

The URL a model passes to ``browser_open`` — and every redirect, sub-resource, ``fetch`` and
WebSocket of the page it opens — is chosen by whoever wrote the page or the prompt. Without
a guard, Chromium in the gateway's network reads the gateway's own API on loopback, Redis,
the cloud metadata service (``169.254.169.254``) and the private network, and hands what it
read back to the model. So:

* ``check_url_target`` refuses a URL whose host is, or resolves to, a non-public address
  (loopback, private, link-local, CGNAT, multicast, unspecified…) before a browser starts;
* ``EgressProxy`` is an HTTP proxy on loopback, one per call, that Chromium must use for
  everything (``proxy_settings``: loopback included). It resolves each host itself, refuses
  non-public addresses, and connects to the very address it checked, so a name that
  resolves once to a public and then to a private address (DNS rebinding) gains nothing.

``agent.tools.browser.allowed-private-networks`` lists networks (CIDR) that are reachable all
the same (an intranet the browser tool is meant for, loopback in tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from app.errors import ToolError

if TYPE_CHECKING:  # Playwright is the optional extra ``[browser]``
    from playwright.async_api import ProxySettings

logger = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

#: the longest request head (request line and headers) the proxy reads
MAX_HEAD_BYTES = 64 * 1024
_PIPE_CHUNK = 64 * 1024
#: the proxy's own answers: a refused host (the reason as plain text), an unreachable one
_REFUSED = ("HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {length}\r\n"
            "Connection: close\r\n\r\n")
_BAD_GATEWAY = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
_HOP_BY_HOP = frozenset({b"connection", b"proxy-connection", b"keep-alive", b"proxy-authorization"})


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """``allowed-private-networks`` as networks; ``ValueError`` naming a malformed entry."""
    networks: list[Network] = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a network (CIDR such as 10.0.0.0/8 or 127.0.0.1/32)") from exc
    return tuple(networks)


def is_allowed(address: Address, allowed: Sequence[Network]) -> bool:
    """A public unicast address, or one inside ``allowed``."""
    if any(address in network for network in allowed):
        return True
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return is_allowed(address.ipv4_mapped, allowed)  # ::ffff:127.0.0.1 is 127.0.0.1
    return address.is_global and not address.is_multicast


async def resolve_allowed(host: str, port: int, allowed: Sequence[Network]) -> Address:
    """The address to connect to for ``host``: every address it resolves to must be allowed
    (``ToolError`` otherwise, and when it does not resolve)."""
    name = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise ToolError(f"browser_open cannot resolve {name!r}") from exc
    addresses = [ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in infos]
    refused = [a for a in addresses if not is_allowed(a, allowed)]
    if not addresses or refused:
        shown = refused[0] if refused else "nothing"
        raise ToolError(
            f"browser_open does not open {name!r}: it resolves to {shown}, a loopback, private or otherwise "
            "non-public address (list the network in agent.tools.browser.allowed-private-networks to allow it)"
        )
    return addresses[0]


async def check_url_target(url: str, allowed: Sequence[Network]) -> None:
    """``ToolError`` unless the host of the http(s) ``url`` is a public (or allowed) address."""
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError as exc:
        raise ToolError(f"browser_open: invalid port in {url[:200]}") from exc
    await resolve_allowed(parts.hostname or "", port, allowed)


class EgressProxy:
    """A loopback HTTP proxy for one ``browser_open`` call (see the module docstring).

    ``async with EgressProxy(allowed) as proxy:`` → ``proxy.url``; leaving it closes the
    server and every connection still open. ``refused`` lists the hosts it turned away.
    """

    def __init__(self, allowed: Sequence[Network]) -> None:
        self.allowed = tuple(allowed)
        self.refused: list[str] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    async def __aenter__(self) -> EgressProxy:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0, limit=MAX_HEAD_BYTES)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 1.0)

    # -- one client connection

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, _, header_block = head.partition(b"\r\n")
        method, target, version = request_line.decode("latin-1").split(" ", 2)
        if method == "CONNECT":  # https and WebSockets: a tunnel to host:port
            host, _, port_text = target.rpartition(":")
            port, first = int(port_text), b""
        else:  # plain http: an absolute URL
            parts = urlsplit(target)
            if parts.scheme.lower() != "http" or not parts.hostname:
                await _refuse(writer, f"{target[:200]} is not an http URL")
                return
            host, port = parts.hostname, parts.port or 80
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            first = _origin_head(method, path, version, header_block)
        try:
            address = await resolve_allowed(host, port, self.allowed)
        except ToolError as exc:
            self.refused.append(host)
            logger.info("browser_open: egress to %s:%d refused", host, port)
            await _refuse(writer, exc.message)
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(str(address), port)
        except OSError:
            writer.write(_BAD_GATEWAY)
            await writer.drain()
            return
        self._writers.add(upstream_writer)
        try:
            if method == "CONNECT":
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                upstream_writer.write(first)
            # either side ending ends the exchange (a plain request is one request per connection)
            pipes = {asyncio.ensure_future(_pipe(reader, upstream_writer)),
                     asyncio.ensure_future(_pipe(upstream_reader, writer))}
            try:
                await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pipe in pipes:
                    pipe.cancel()
                await asyncio.gather(*pipes, return_exceptions=True)
        finally:
            self._writers.discard(upstream_writer)
            upstream_writer.transport.abort()


def _origin_head(method: str, path: str, version: str, header_block: bytes) -> bytes:
    """The request head for the origin: origin-form target, no proxy or keep-alive headers and
    ``Connection: close`` (one request per proxied connection: the next one may name another host)."""
    lines = [f"{method} {path} {version}".encode("latin-1")]
    for line in header_block.split(b"\r\n"):
        if line and line.split(b":", 1)[0].strip().lower() not in _HOP_BY_HOP:
            lines.append(line)
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def _refuse(writer: asyncio.StreamWriter, reason: str) -> None:
    body = reason.encode("utf-8")
    writer.write(_REFUSED.format(length=len(body)).encode("latin-1") + body)
    await writer.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while chunk := await reader.read(_PIPE_CHUNK):
        writer.write(chunk)
        await writer.drain()


def proxy_settings(proxy: EgressProxy) -> ProxySettings:
    """Playwright's ``proxy`` launch option: everything through ``proxy``, loopback included
    (Chromium sends loopback addresses past any proxy unless told ``<-loopback>``)."""
    return {"server": proxy.url, "bypass": "<-loopback>"}


__all__ = ["EgressProxy", "check_url_target", "is_allowed", "parse_networks", "proxy_settings", "resolve_allowed"]
