"""The FastAPI application (SPEC §4). ``create_app(settings)`` builds it; the lifespan builds the ``Gateway``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import __version__
from app.api import catalog_routes, chat_routes, run_routes
from app.api.envelope import (
    gateway_error_handler,
    http_error_handler,
    unexpected_error_handler,
    validation_error_handler,
)
from app.config import Settings
from app.errors import GatewayError
from app.gateway import Gateway


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with Gateway(settings) as gateway:
            app.state.gateway = gateway
            yield

    app = FastAPI(
        title="Agent Gateway",
        version=__version__,
        description="Definition-driven streaming agent gateway. See SPEC.md §4 for the contract.",
        lifespan=lifespan,
    )
    app.add_exception_handler(GatewayError, gateway_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(Exception, unexpected_error_handler)
    app.include_router(catalog_routes.router)
    app.include_router(run_routes.router)
    app.include_router(chat_routes.router)
    return app
