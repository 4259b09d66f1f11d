"""The direct lane: the run-starting endpoints, served by a plain starlette ``Route`` (issue 13).

FastAPI documents every route (OpenAPI, ``/docs``) and, for every request, searches its
included routers, solves the endpoint's dependencies and opens two exit stacks around it.
The endpoints that start runs take only the ``Request``: they read and validate their body
themselves (``read_json``), find the caller with ``user_of`` and read a path parameter from
``request.path_params`` (declared for the documentation in the route's ``openapi_extra``).
For them FastAPI's request handling does nothing, and it cost 0.3–0.5 ms of CPU per run, a
fifth of a short run's (measured side by side; docs/DECISIONS.md, "Direct lane").

``@direct`` marks such an endpoint. ``add_direct_lane`` puts a starlette ``Route`` with the
same path, methods and endpoint in front of the app's routes, so the router finds it first
and starlette runs it: the same exception handlers (``wrap_app_handling_exceptions``), the
same middleware around it, the same 405 for another method. The FastAPI route stays: it is
what the documentation shows, and it is the same function.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable

from fastapi import APIRouter, FastAPI, Request
from fastapi.routing import APIRoute
from starlette.responses import Response
from starlette.routing import Route

Endpoint = Callable[[Request], Awaitable[Response]]

_MARK = "__agw_direct__"


def direct(endpoint: Endpoint) -> Endpoint:
    """Serve this endpoint on the direct lane; it must take the ``Request`` and nothing else."""
    parameters = list(inspect.signature(endpoint).parameters.values())
    if len(parameters) != 1 or parameters[0].kind not in (parameters[0].POSITIONAL_ONLY,
                                                          parameters[0].POSITIONAL_OR_KEYWORD):
        raise TypeError(f"{endpoint.__qualname__}: a direct endpoint takes only the request")
    setattr(endpoint, _MARK, True)
    return endpoint


def direct_routes(routers: Iterable[APIRouter]) -> list[Route]:
    """A starlette ``Route`` for every ``@direct`` endpoint of ``routers``, in their order."""
    return [
        Route(route.path, route.endpoint, methods=sorted(route.methods or ()), name=route.name)
        for router in routers
        for route in router.routes
        if isinstance(route, APIRoute) and getattr(route.endpoint, _MARK, False)
    ]


def add_direct_lane(app: FastAPI, routers: Iterable[APIRouter]) -> list[Route]:
    """Put the direct routes of ``routers`` (included in ``app`` without a prefix) first."""
    lane = direct_routes(routers)
    app.router.routes[:0] = lane
    return lane
