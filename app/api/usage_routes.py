"""``GET /api/ap/usage`` (SPEC §19): totals of the usage ledger per day, agent, model or user.

A caller sees only their own lines unless their JWT names ``agent.auth.admin-role`` in its
``roles``/``role`` claim; with auth off the one anonymous user owns the gateway and sees all.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from app.api.auth import current_user
from app.api.envelope import ok
from app.gateway import Gateway
from app.usage import usage_report

router = APIRouter()


def _sees_everyone(request: Request, gateway: Gateway) -> bool:
    auth = gateway.settings.agent.auth
    if not auth.enabled:
        return True
    return auth.admin_role in getattr(request.state, "roles", frozenset())


@router.get("/api/ap/usage", summary="Usage totals (calls, tokens, points, errors) per day, agent, model or user")
async def get_usage(
    request: Request,
    from_: str | None = Query(None, alias="from", max_length=64, description="first UTC day, YYYY-MM-DD"),
    to: str | None = Query(None, max_length=64, description="last UTC day, YYYY-MM-DD (default today)"),
    groupBy: str | None = Query(None, max_length=64, description="day | agent | model | user (default day)"),
    user: str = Depends(current_user),
) -> Response:
    gateway: Gateway = request.app.state.gateway
    params = {"from": from_, "to": to, "groupBy": groupBy}
    return ok(await usage_report(gateway.services.ledger, params, None if _sees_everyone(request, gateway) else user))


__all__ = ["router"]
