"""The FastAPI application (SPEC §4). ``create_app(settings)`` builds it; the lifespan builds the ``Gateway``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import __version__
from app.api import (
    agui_routes,
    catalog_routes,
    chat_routes,
    docs_routes,
    file_routes,
    fork_routes,
    mcp_routes,
    openai_routes,
    run_routes,
    run_watch_routes,
    schedule_routes,
    usage_routes,
    web_routes,
)
from app.api.envelope import (
    gateway_error_handler,
    http_error_handler,
    unexpected_error_handler,
    validation_error_handler,
)
from app.config import Settings
from app.errors import GatewayError
from app.credentials import provider_api_keys
from app.gateway import Gateway
from app.logs import apply_format as apply_log_format
from app.security.access_log import access_log_masking
from app.api.lane import add_direct_lane
from app.api.pacing import AdmissionPacer
from app.api.sse import StreamShutdown
from app.security.cors import ScopedCORSMiddleware
from app.security.cross_site import CrossSiteGuard
from app.security.jwt_auth import AuthMiddleware, build_verifier


def create_app(settings: Settings, gateway: Gateway | None = None, *, lean_parser: bool | None = None) -> FastAPI:
    """The HTTP app. With ``gateway`` (the sidecar's ``--http-port``) it serves that running
    gateway and leaves its lifecycle to the caller; otherwise the lifespan builds its own
    (``lean_parser``: how that gateway parses upstream answers, see ``Gateway``)."""
    apply_log_format(settings.logging.format)  # before uvicorn logs its first line
    verifier = build_verifier(settings)  # SPEC §9 fail closed: ConfigError when auth has no key source
    # decrypt api-key-ref credentials now, so a wrong master secret stops `agw serve` with a clear
    # configuration error instead of a failed lifespan (SPEC §12)
    api_keys = provider_api_keys(settings) if gateway is None else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # SPEC §9 "Logs": no data-link token or other URL credential in uvicorn's access log
        with access_log_masking():
            app.state.streams = streams = StreamShutdown()
            try:
                if gateway is not None:
                    app.state.gateway = gateway
                    yield
                    return
                async with Gateway(settings, api_keys, lean_parser=lean_parser) as owned:
                    app.state.gateway = owned
                    yield
            finally:
                await streams.aclose()

    app = FastAPI(
        title="Agent Gateway",
        version=__version__,
        description="Definition-driven streaming agent gateway. The contract: docs/API.md in the repository.",
        lifespan=lifespan,
        docs_url=None,  # SPEC §22: /docs and /redoc are served offline by docs_routes
        redoc_url=None,
    )
    app.add_exception_handler(GatewayError, gateway_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(Exception, unexpected_error_handler)
    app.include_router(catalog_routes.router)
    app.include_router(run_routes.router)
    app.include_router(run_watch_routes.router)
    app.include_router(openai_routes.router)  # SPEC §17: /v1/models, /v1/chat/completions
    app.include_router(agui_routes.router)  # SPEC §17: /ag-ui/{agentKey}
    app.include_router(chat_routes.router)
    app.include_router(fork_routes.router)  # SPEC §20: POST /api/ap/chat/fork
    app.include_router(file_routes.router)  # SPEC §23: POST /api/ap/upload, GET /api/ap/artifact
    app.include_router(schedule_routes.router)
    app.include_router(usage_routes.router)  # SPEC §19: GET /api/ap/usage
    app.include_router(mcp_routes.router)  # SPEC §18: GET /api/ap/mcp-servers, /mcp
    app.include_router(web_routes.router)  # the web console: GET / and /console/*
    app.include_router(docs_routes.router)  # SPEC §22: /docs, /redoc offline; /asyncapi.json
    app.openapi = docs_routes.openapi_with_events(app)  # type: ignore[method-assign]
    # issue 13: the run-starting endpoints (``@direct``) are found first and run by starlette,
    # without FastAPI's per-request dependency solving; their FastAPI routes document them
    add_direct_lane(app, (run_routes.router, openai_routes.router, agui_routes.router))
    # SPEC §9: auth on /api/**. CORS is added last so it is outermost: preflights are answered
    # before auth, and 401s carry CORS headers.
    app.add_middleware(AuthMiddleware, verifier=verifier, data_tokens=bool(settings.agent.chat_image_token.secret))
    if verifier is None:  # SPEC §9: with auth off, no other web site may change anything here
        app.add_middleware(CrossSiteGuard, cors=settings.agent.cors, allowed_hosts=settings.server.allowed_hosts)
    if settings.agent.cors.enabled:
        app.add_middleware(ScopedCORSMiddleware, cors=settings.agent.cors)
    # issue 13: a burst of new requests is let in a few per loop iteration, so the streams
    # already flowing are not stalled behind it (outermost: CORS and auth work is paced too)
    app.add_middleware(AdmissionPacer)
    return app
