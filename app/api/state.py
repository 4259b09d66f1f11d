"""The gateway a request is served by (``app.state.gateway``) and the app's open event streams
(``app.state.streams``), both set by ``create_app``'s lifespan."""

from __future__ import annotations

from fastapi import Request

from app.api.sse import StreamShutdown
from app.gateway import Gateway


def gateway_of(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def streams_of(request: Request) -> StreamShutdown:
    """The app's event streams, ended together when the server stops (``app.api.sse``)."""
    streams: StreamShutdown = request.app.state.streams
    return streams


__all__ = ["gateway_of", "streams_of"]
