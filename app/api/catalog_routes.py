"""Catalog HTTP routes (SPEC §3, §4): agents, viewports, data files, rejections, health.

| route | data |
|---|---|
| ``GET /api/ap/agents`` | ``[{key, name, icon, description, mode, modelKey, tools}]`` |
| ``GET /api/ap/agent?agentKey=`` | one agent: stages with the resolved model (key, modelId, protocol, provider key — never a base URL or API key), tools (name, kind) per stage, skills |
| ``GET /api/ap/viewport?viewportKey=`` | ``{"html": …}`` or the viewport's JSON object (SPEC §3.5) |
| ``GET /api/ap/data?file=&download=&token=`` | a file of the data folder, inline or as attachment |
| ``GET /api/ap/catalog/rejections`` | ``[{kind, file, reason}]``: definition files that did not load, and why |
| ``GET /healthz`` | ``{status: "UP", version, catalogVersion}`` |

The routes read ``request.app.state.gateway`` (``settings`` and ``catalog``, a
``CatalogManager``) and take one snapshot per request.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any, Protocol

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse

from app import __version__
from app.api.envelope import EnvelopeResponse, ok
from app.api.file_routes import DOWNLOAD_HEADERS
from app.catalog.definitions import Catalog
from app.catalog.manager import CatalogManager
from app.config import Settings
from app.errors import NotFoundError, RequestError
from app.paths import check_key, confine, fs_name_error
from app.security.data_tokens import verify_data_token
from app.views import agent_detail, agent_summary

router = APIRouter()


class _Gateway(Protocol):
    settings: Settings
    catalog: CatalogManager


def _gateway(request: Request) -> _Gateway:
    gateway: _Gateway = request.app.state.gateway
    return gateway


def _catalog(request: Request) -> Catalog:
    return _gateway(request).catalog.snapshot


def _required(value: str | None, name: str) -> str:
    if value is None or value == "":
        raise RequestError(f"missing query parameter '{name}'")
    return value


# --------------------------------------------------------------------------- routes


@router.get("/api/ap/agents")
async def list_agents(request: Request) -> EnvelopeResponse:
    """Every loaded agent, in file-name order."""
    return ok([agent_summary(agent) for agent in _catalog(request).agents.values()])


@router.get("/api/ap/agent")
async def get_agent(request: Request, agent_key: str | None = Query(None, alias="agentKey")) -> EnvelopeResponse:
    """One agent's detail; 400 for a missing/invalid key, 404 for an unknown one."""
    key = check_key(_required(agent_key, "agentKey"), "agentKey")
    agent = _catalog(request).agents.get(key)
    if agent is None:
        raise NotFoundError(f"unknown agent: {key}")
    return ok(agent_detail(agent))


@router.get("/api/ap/viewport")
async def get_viewport(
    request: Request,
    viewport_key: str | None = Query(None, alias="viewportKey"),
    chat_id: str | None = Query(None, alias="chatId"),
    run_id: str | None = Query(None, alias="runId"),
) -> EnvelopeResponse:
    """A viewport's payload (SPEC §3.5). ``chatId``/``runId`` are accepted for context only."""
    key = check_key(_required(viewport_key, "viewportKey"), "viewportKey")
    viewport = _catalog(request).viewports.get(key)
    if viewport is None:
        raise NotFoundError(f"unknown viewport: {key}")
    return ok(dict(viewport.data))


def check_data_token(request: Request, file: str) -> None:
    """Signed data links (SPEC §9 "Data links", ``app.security.data_tokens``).

    With ``agent.chat-image-token.secret`` set, ``token`` must be a valid, unexpired HMAC
    of ``file`` (current or previous secret): 401 without one, 403 for a bad one.
    """
    verify_data_token(_gateway(request).settings.agent.chat_image_token, file, request.query_params.get("token"))


def _is_file(path: Path, name: str) -> bool:
    """``path.is_file()``, where an ``OSError`` the name causes is the client's error, not a 500."""
    try:
        return path.is_file()
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise fs_name_error(exc, "file") from exc
        raise NotFoundError(f"no such file: {name}") from exc


@router.get("/api/ap/data")
async def get_data(
    request: Request,
    file: str | None = Query(None),
    download: bool = Query(False),
    token: str | None = Query(None),
) -> FileResponse:
    """A file from the data folder; never outside it (``app.paths.confine``)."""
    name = _required(file, "file")
    data_dir = _gateway(request).settings.data_dir
    path = confine(data_dir, name, "file")
    # hidden files (the gateway's own state in ``.agw/``: schedules, credentials) are never served:
    # judged on the path that is opened (after every decoding, through symlinks), not on the name
    if any(part.startswith(".") for part in (*Path(name).parts, *path.relative_to(data_dir.resolve()).parts)):
        raise NotFoundError(f"no such file: {name}")
    check_data_token(request, name)
    if not _is_file(path, name):
        raise NotFoundError(f"no such file: {name}")
    # inline for images in chats, but never as a page of the gateway's origin (an HTML or SVG
    # file's script would run beside the web console): the same headers as artifacts
    return FileResponse(
        path,
        filename=path.name,
        content_disposition_type="attachment" if download else "inline",
        headers=DOWNLOAD_HEADERS,
    )


@router.get("/api/ap/catalog/rejections")
async def list_rejections(request: Request) -> EnvelopeResponse:
    """Definition files that were rejected in the current snapshot, with the reason."""
    return ok(
        [
            {"kind": rejection.kind, "file": rejection.file, "reason": rejection.reason}
            for rejection in _catalog(request).rejections
        ]
    )


@router.get("/healthz")
async def healthz(request: Request) -> EnvelopeResponse:
    """Liveness: ``UP`` while the process serves requests. In a cluster (SPEC §16) it also reports
    this instance and its Redis connection; with Redis unreachable it answers 503 ``DOWN`` (new
    runs are refused meanwhile), so a load balancer sends work elsewhere."""
    data: dict[str, Any] = {"status": "UP", "version": __version__, "catalogVersion": _catalog(request).version}
    cluster = getattr(request.app.state.gateway, "cluster", None)
    if cluster is None:
        return ok(data)
    data["cluster"] = {"instance": cluster.instance_id, "redis": "up" if cluster.healthy else "down"}
    if cluster.healthy:
        return ok(data)
    data["status"] = "DOWN"
    data["cluster"]["error"] = cluster.last_error
    return EnvelopeResponse({"code": 5031, "msg": f"the cluster store (Redis) is unreachable: {cluster.last_error}",
                             "data": data}, status_code=503)
