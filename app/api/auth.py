"""Who is calling (SPEC §9). With auth disabled everyone is the one anonymous user.

The JWT verification itself lives in ``app/security``; this is the FastAPI dependency.
"""

from __future__ import annotations

from fastapi import Request

ANONYMOUS = "anonymous"


def current_user(request: Request) -> str:
    """The caller's subject, set by the auth middleware (``anonymous`` when auth is off)."""
    return str(getattr(request.state, "user", ANONYMOUS))
