"""The built-in web console (the demo page): ``GET /`` and the static files under ``/console/``.

The page itself is public (it holds no data); every call it makes goes to ``/api/**`` and is
authorised there like any other client (SPEC §9). The files live in ``app/web/`` (package
data): plain HTML/JS/CSS, no build step, no external resources.

No other origin may frame the console (``frame-ancestors 'self'``, ``X-Frame-Options``): a framed
console's requests come from the gateway's own origin, so with auth off a page that framed it
invisibly could have the user's clicks answer a waiting frontend tool or start a run — what the
cross-site guard refuses to that page itself.
"""

from __future__ import annotations

from pathlib import Path

import os

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
#: no other origin frames the console (clickjacking)
NO_FRAMING = {"Content-Security-Policy": "frame-ancestors 'self'", "X-Frame-Options": "SAMEORIGIN"}
#: the page is small and changes with the package: always revalidate
_NO_CACHE = {"Cache-Control": "no-cache", **NO_FRAMING}

router = APIRouter()


@router.get("/", include_in_schema=False)
async def console_page() -> FileResponse:
    return FileResponse(WEB_DIR / "index.html", media_type="text/html; charset=utf-8", headers=_NO_CACHE)


class _ConsoleFiles(StaticFiles):
    """The console's static files, with ``NO_FRAMING`` on each."""

    def file_response(self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: Scope,
                      status_code: int = 200) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(NO_FRAMING)
        return response


router.mount("/console", _ConsoleFiles(directory=WEB_DIR, check_dir=False), name="console")

__all__ = ["NO_FRAMING", "WEB_DIR", "router"]
