"""The built-in web console (the demo page): ``GET /`` and the static files under ``/console/``.

The page itself is public (it holds no data); every call it makes goes to ``/api/**`` and is
authorised there like any other client (SPEC §9). The files live in ``app/web/`` (package
data): plain HTML/JS/CSS, no build step, no external resources.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
#: the page is small and changes with the package: always revalidate
_NO_CACHE = {"Cache-Control": "no-cache"}

router = APIRouter()


@router.get("/", include_in_schema=False)
async def console_page() -> FileResponse:
    return FileResponse(WEB_DIR / "index.html", media_type="text/html; charset=utf-8", headers=_NO_CACHE)


router.mount("/console", StaticFiles(directory=WEB_DIR, check_dir=False), name="console")

__all__ = ["WEB_DIR", "router"]
