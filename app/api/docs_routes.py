"""The API documentation, served offline (SPEC §22): ``/docs``, ``/redoc``, ``/asyncapi.json``.

| route | what |
|---|---|
| ``GET /docs`` | Swagger UI over ``/openapi.json`` |
| ``GET /redoc`` | ReDoc over ``/openapi.json`` |
| ``GET /docs/static/*`` | the Swagger UI and ReDoc assets, from the ``fastapi-offline`` package |
| ``GET /asyncapi.json`` | the SSE run events as an AsyncAPI 3.0 document (``app.contract.asyncapi``) |

No page loads anything from another host: scripts, styles and the favicon come from
``/docs/static/``, Swagger UI's online validator is off, ReDoc does not fetch Google Fonts, and a
``Content-Security-Policy`` makes the browser refuse anything else (ReDoc's footer logo).
The routes are outside ``/api/**`` (public, like the OpenAPI document) and outside the OpenAPI
document itself. ``openapi_with_events(app)`` is FastAPI's ``openapi()`` customisation: it links
the AsyncAPI document from ``info.description`` and from the responses of the SSE operations.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.staticfiles import StaticFiles

from app import __version__
from app.contract.asyncapi import asyncapi_document
from app.contract.events import EVENT_TYPES, TERMINAL_TYPES

#: Swagger UI 5 (``swagger-ui-bundle.js``, ``swagger-ui.css``), ReDoc 2 and a favicon, shipped by the package
ASSETS_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
STATIC_PREFIX = "/docs/static"
ASYNCAPI_PATH = "/asyncapi.json"
#: the operations whose 200 answer is the run-event stream
STREAM_OPERATIONS: tuple[tuple[str, str], ...] = (
    ("/api/ap/query", "post"),
    ("/api/ap/run/stream", "get"),
    ("/api/ap/chat/stream", "get"),
)

#: the pages may load nothing from another host, even what a bundle would fetch on its own (ReDoc's
#: footer logo comes from its CDN): the browser refuses such requests before they leave. Inline
#: script and style are the page's own initialiser and the bundles' injected styles.
DOCS_CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

router = APIRouter()


def _offline(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = DOCS_CSP
    return page


def _root(request: Request) -> str:
    """The mount prefix (``root_path``) of this app, so the pages also work behind a path prefix."""
    return str(request.scope.get("root_path") or "")


@router.get("/docs", include_in_schema=False)
async def swagger_ui(request: Request) -> HTMLResponse:
    root = _root(request)
    openapi_url = request.app.openapi_url or "/openapi.json"
    return _offline(get_swagger_ui_html(
        openapi_url=root + openapi_url,
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=f"{root}{STATIC_PREFIX}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{STATIC_PREFIX}/swagger-ui.css",
        swagger_favicon_url=f"{root}{STATIC_PREFIX}/favicon.png",
        # Swagger UI would otherwise send the document to an online validator for its badge
        swagger_ui_parameters={"validatorUrl": None},
    ))


@router.get("/redoc", include_in_schema=False)
async def redoc(request: Request) -> HTMLResponse:
    root = _root(request)
    openapi_url = request.app.openapi_url or "/openapi.json"
    return _offline(get_redoc_html(
        openapi_url=root + openapi_url,
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{root}{STATIC_PREFIX}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{STATIC_PREFIX}/favicon.png",
        with_google_fonts=False,
    ))


@router.get(ASYNCAPI_PATH, include_in_schema=False)
async def asyncapi() -> JSONResponse:
    return JSONResponse(asyncapi_document(__version__))


router.mount(STATIC_PREFIX, StaticFiles(directory=ASSETS_DIR), name="docs-static")


# --------------------------------------------------------------------------- OpenAPI links


def _events_paragraph() -> str:
    terminal = ", ".join(f"`{t}`" for t in EVENT_TYPES if t in TERMINAL_TYPES)
    return (
        f"**Run events (Server-Sent Events):** the streams of {', '.join(f'`{p}`' for p, _ in STREAM_OPERATIONS)} "
        f"are described by the AsyncAPI document at [{ASYNCAPI_PATH}]({ASYNCAPI_PATH}), generated from the "
        "event classes: one message per event type with its fields. Each event is one SSE message "
        f"(`event: message`, `id: <seq>`, one `data:` JSON line); the stream ends after {terminal}. "
        f"Event types: {', '.join(f'`{t}`' for t in EVENT_TYPES)}."
    )


def _stream_response(existing: dict[str, Any]) -> dict[str, Any]:
    """The 200 response of an SSE operation: the event stream, linked to the AsyncAPI document."""
    content = dict(existing.get("content") or {})
    content["text/event-stream"] = {"schema": {
        "type": "string",
        "description": f"SSE messages; each `data:` line is one run event of {ASYNCAPI_PATH} (RunEvent).",
    }}
    return {
        **existing,
        "description": (
            f"A Server-Sent-Events stream of run events; every event type and its fields: "
            f"[{ASYNCAPI_PATH}]({ASYNCAPI_PATH}). A query with `stream: false` is answered with one JSON "
            "envelope instead (`answer` and the same `events` as a list)."
        ),
        "content": content,
    }


_LOCAL_DEFS = "#/$defs/"
_COMPONENT_SCHEMAS = "#/components/schemas/"


def _hoist_defs(node: Any, into: dict[str, Any]) -> Any:
    """Move the ``$defs`` of request-body schemas given as ``model_json_schema()`` (``openapi_extra``)
    into ``components.schemas`` and point their ``#/$defs/…`` references there: inside an OpenAPI
    document ``#/$defs`` would name the document's root, where nothing is (ReDoc refuses to render)."""
    if isinstance(node, str) and node.startswith(_LOCAL_DEFS):  # a ``$ref`` or a discriminator mapping
        return _COMPONENT_SCHEMAS + node[len(_LOCAL_DEFS):]
    if isinstance(node, list):
        return [_hoist_defs(item, into) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "$defs" and isinstance(value, dict):
            for name, schema in value.items():
                hoisted = _hoist_defs(schema, into)
                if into.setdefault(name, hoisted) != hoisted:
                    raise ValueError(f"two request schemas define a different {name!r}: rename one of the models")
        else:
            out[key] = _hoist_defs(value, into)
    return out


def link_event_docs(document: dict[str, Any]) -> dict[str, Any]:
    """A copy of an OpenAPI document with the AsyncAPI link in ``info.description`` and on the
    200 response of every SSE operation, and with nested ``$defs`` moved to ``components.schemas``
    (pure: the argument is left alone)."""
    linked = copy.deepcopy(document)
    hoisted: dict[str, Any] = {}
    linked["paths"] = _hoist_defs(linked.get("paths", {}), hoisted)
    if hoisted:
        schemas = linked.setdefault("components", {}).setdefault("schemas", {})
        for name, schema in hoisted.items():
            if schemas.setdefault(name, schema) != schema:
                raise ValueError(f"request schema {name!r} clashes with the component of that name")
    info = linked.setdefault("info", {})
    info["description"] = "\n\n".join(part for part in (info.get("description"), _events_paragraph()) if part)
    paths = linked.get("paths", {})
    for path, method in STREAM_OPERATIONS:
        operation = paths.get(path, {}).get(method)
        if operation is not None:
            responses = operation.setdefault("responses", {})
            responses["200"] = _stream_response(responses.get("200", {}))
    return linked


def openapi_with_events(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """FastAPI's ``openapi()`` customisation: ``app.openapi = openapi_with_events(app)``."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = link_event_docs(build())
        return app.openapi_schema

    return openapi


__all__ = ["ASSETS_DIR", "link_event_docs", "openapi_with_events", "router"]
