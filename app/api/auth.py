"""Who is calling (SPEC §9). With auth disabled everyone is the one anonymous user.

The JWT verification itself lives in ``app/security``; this is how an endpoint reads its result.
"""

from __future__ import annotations

from fastapi import Request

from app.contract.identity import ANONYMOUS


def user_of(request: Request) -> str:
    """The caller's subject, set by the auth middleware (``anonymous`` when auth is off)."""
    return str(getattr(request.state, "user", ANONYMOUS))


async def current_user(request: Request) -> str:
    """``user_of`` as a FastAPI dependency (the direct lane's endpoints call ``user_of``).

    ``async`` on purpose: FastAPI runs a plain ``def`` dependency in a worker thread.
    """
    return user_of(request)


__all__ = ["ANONYMOUS", "current_user", "user_of"]
