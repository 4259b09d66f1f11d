"""The gateway's exception hierarchy.

Everything the gateway raises on purpose derives from ``GatewayError``. Each class
carries an integer ``code`` (the envelope's ``code``, always > 0) and the HTTP status
it maps to at the API edge. Library errors (httpx, yaml, pydantic) are mapped into
this hierarchy where they are caught, with ``raise X(...) from exc``.

    GatewayError                      code  status
    ├── ConfigError                   1001  500   bad application.yml / env, fails startup
    ├── DefinitionError               1002  422   a definition file that does not validate
    ├── RequestError                  4000  400   bad client input
    │   ├── PayloadTooLarge           4013  413
    │   ├── RequestTimeout            4008  408   an upload body that did not arrive in time
    │   ├── UnsupportedMediaType      4015  415   an upload of a type that is refused or mislabelled
    │   └── PathEscapeError           4003  400   a name that tries to leave its folder
    ├── AuthError                     4010  401
    ├── ForbiddenError                4030  403
    ├── NotFoundError                 4040  404
    ├── ConflictError                 4090  409
    ├── RunLimitExceeded              4290  429   too many live runs (agent.limits.*); Retry-After
    │   └── RateLimited               4291  429   rpm/tpm/daily-tokens (SPEC §19); run.error rate_limited
    ├── ServiceUnavailable            5031  503   e.g. the cluster's Redis is unreachable (SPEC §16)
    ├── UpstreamError                 5020  502   the model provider misbehaved
    │   ├── UpstreamHTTPError         5021        non-2xx before streaming
    │   ├── UpstreamProtocolError     5022        malformed chunk
    │   ├── UpstreamDisconnected      5023        stream ended without finishing
    │   ├── UpstreamTimeout           5024        connect/read stalled past the budget
    │   └── UpstreamTooLarge          5025        one response passed agent.llm.max-response-*
    ├── BudgetExceeded                5030  429   a run budget (calls, time) ran out
    ├── ToolError                     5040  500   a tool failed; becomes an error *result*
    └── RunFailed                     5050  500   a run cannot go on (e.g. no plan was created)
"""

from __future__ import annotations

from pydantic import ValidationError


class GatewayError(Exception):
    """Base of every error the gateway raises deliberately."""

    code: int = 5000
    status: int = 500

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ConfigError(GatewayError):
    code = 1001


class DefinitionError(GatewayError):
    code = 1002
    status = 422


class RequestError(GatewayError):
    code = 4000
    status = 400


class PayloadTooLarge(RequestError):
    code = 4013
    status = 413


class RequestTimeout(RequestError):
    """A request body that did not arrive in time (an upload past ``agent.upload.timeout-seconds``)."""

    code = 4008
    status = 408


class UnsupportedMediaType(RequestError):
    """An upload whose type ``agent.upload.allowed-types`` refuses, or whose content is not what its
    name or declared type says (SPEC §23)."""

    code = 4015
    status = 415


class PathEscapeError(RequestError):
    code = 4003
    status = 400


class AuthError(GatewayError):
    code = 4010
    status = 401


class ForbiddenError(GatewayError):
    code = 4030
    status = 403


class NotFoundError(GatewayError):
    code = 4040
    status = 404


class ConflictError(GatewayError):
    code = 4090
    status = 409


class RunLimitExceeded(GatewayError):
    """A new run would exceed ``agent.limits.concurrent-runs`` or ``agent.limits.user.concurrent-runs``."""

    code = 4290
    status = 429

    def __init__(self, message: str, *, limit: str, retry_after_seconds: int) -> None:
        super().__init__(message)
        #: the setting that refused the run, e.g. ``agent.limits.user.concurrent-runs``
        self.limit = limit
        #: sent as the ``Retry-After`` header
        self.retry_after_seconds = retry_after_seconds


class ServiceUnavailable(GatewayError):
    """The gateway cannot take new work right now (e.g. its cluster store is unreachable)."""

    code = 5031
    status = 503


class RateLimited(RunLimitExceeded):
    """A request or token limit of SPEC §19 (per model, per user). Before a run: HTTP 429 with
    ``Retry-After``; between model calls of a run: ``run.error`` with code ``rate_limited``."""

    code = 4291
    error_code = "rate_limited"


class UpstreamError(GatewayError):
    code = 5020
    status = 502
    error_code = "upstream_error"


class UpstreamHTTPError(UpstreamError):
    code = 5021
    error_code = "upstream_http_error"

    def __init__(self, message: str, *, http_status: int, body: str = "") -> None:
        super().__init__(message)
        self.http_status = http_status
        self.body = body


class UpstreamProtocolError(UpstreamError):
    code = 5022
    error_code = "upstream_malformed_chunk"


class UpstreamDisconnected(UpstreamError):
    code = 5023
    error_code = "upstream_disconnected"


class UpstreamTimeout(UpstreamError):
    code = 5024
    error_code = "upstream_timeout"


class UpstreamTooLarge(UpstreamError):
    """One model response streamed more than ``agent.llm.max-response-chars`` or ``-deltas``."""

    code = 5025
    error_code = "upstream_response_too_large"


class BudgetExceeded(GatewayError):
    code = 5030
    status = 429

    def __init__(self, message: str, *, budget: str) -> None:
        super().__init__(message)
        #: which budget ran out: run_timeout, model_calls, tool_calls, model_timeout, tool_timeout
        self.budget = budget


class ToolError(GatewayError):
    """A tool could not do its job. The engine turns it into an error tool result."""

    code = 5040


class RunFailed(GatewayError):
    """The run cannot go on for a reason of its own (e.g. the plan stage created no tasks)."""

    code = 5050
    status = 500

    def __init__(self, message: str, *, error_code: str) -> None:
        super().__init__(message)
        self.error_code = error_code


def describe_validation_error(exc: ValidationError, root: str = "") -> str:
    """A pydantic error as one readable line: ``dotted.location: message; …``.

    ``root`` names a problem with no location (e.g. ``body``); unknown fields read "unknown field".
    """
    problems: list[str] = []
    for err in exc.errors():
        loc = ".".join(str(part) for part in err.get("loc", ())) or root
        msg = "unknown field" if err.get("type") == "extra_forbidden" else str(err.get("msg"))
        problems.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(problems)
