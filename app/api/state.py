"""The gateway a request is served by: ``app.state.gateway``, set by ``create_app``'s lifespan."""

from __future__ import annotations

from fastapi import Request

from app.gateway import Gateway


def gateway_of(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


__all__ = ["gateway_of"]
