"""Who is calling (SPEC §9). With auth disabled everyone is the one anonymous user.

The JWT verification itself lives in ``app/security``; this is the FastAPI dependency.
"""

from __future__ import annotations

from fastapi import Request

from app.contract.identity import ANONYMOUS


async def current_user(request: Request) -> str:
    """The caller's subject, set by the auth middleware (``anonymous`` when auth is off).

    ``async`` on purpose: FastAPI runs a plain ``def`` dependency in a worker thread.
    """
    return str(getattr(request.state, "user", ANONYMOUS))


__all__ = ["ANONYMOUS", "current_user"]
