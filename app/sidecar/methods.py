"""The sidecar's JSON-RPC methods (SPEC §10): the HTTP API's data, over stdio.

| method | params | result |
|---|---|---|
| ``gateway.health`` | — | ``{status, version, catalogVersion}`` |
| ``agent.list`` | — | as ``GET /api/ap/agents`` |
| ``agent.get`` | ``{agentKey}`` | as ``GET /api/ap/agent`` |
| ``agent.query`` | the query body (SPEC §4) | ``{runId, chatId, requestId, finishReason, status, error?}``; meanwhile each event is an ``agent.event`` notification ``{requestId, id, event}`` (``id``: the call's JSON-RPC id) |
| ``agent.submit`` | ``{runId, toolId, params}`` | as ``POST /api/ap/submit`` |
| ``agent.cancel`` | ``{runId}`` | ``{cancelled}`` |
| ``chat.list`` / ``chat.get`` | — / ``{chatId, includeRawMessages?}`` | as HTTP |
| ``chat.upload`` | ``{path, chatId?, requestId?}`` (a file on the desktop's disk) | as ``POST /api/ap/upload``: ``{chatId, reference}`` (SPEC §23) |
| ``viewport.get`` | ``{viewportKey}`` | as HTTP |
| ``scheduler.add`` / ``.list`` / ``.remove`` | SPEC §11 body / — / ``{jobId}`` | the job / the jobs / ``{jobId, removed}`` |
| ``llm.usage`` | ``{from?, to?, groupBy?}`` | as ``GET /api/ap/usage`` (SPEC §19) |
| ``llm.providers`` | — | ``[{providerKey, baseUrl, hasKey}]`` (never a key) |
| ``llm.models`` | — | ``[{modelKey, provider, protocol, modelId, group?, limits, breaker}]`` |

The caller is always ``anonymous``: a desktop app is single-user. ``agent.query`` with
``stream: false`` sends no notifications and returns ``answer`` and ``events`` too.
Errors: bad params → -32602; gateway errors → -32000 with ``data: {code, status}``
(``code`` is the HTTP envelope's code).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.contract.bodies import SubmitRequest
from app.contract.bodies import QueryRequest
from app.errors import GatewayError, NotFoundError, RequestError, describe_validation_error
from app.gateway import Gateway
from app.runs import Run
from app.paths import check_key
from app.scheduler import parse_schedule_request
from app.sidecar.protocol import APPLICATION_ERROR, INVALID_PARAMS, LineWriter, RpcError, notification
from app.files.uploads import Uploads
from app.usage import model_list, provider_list, usage_report
from app.views import agent_detail, agent_summary, chat_history, chat_list, viewport_data

#: the one user of a desktop sidecar (as with auth disabled over HTTP)
OWNER = "anonymous"

ParamsT = TypeVar("ParamsT", bound=BaseModel)
Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class _Params(BaseModel):
    model_config = ConfigDict(extra="ignore")


class AgentGetParams(_Params):
    agentKey: str = Field(min_length=1, max_length=128)


class CancelParams(_Params):
    runId: str = Field(min_length=1, max_length=128)


class AttachParams(_Params):
    runId: str = Field(min_length=1, max_length=128)
    after: int = Field(0, ge=0, le=2**53)
    #: echoed in every notification of this attachment (tells it from the query's own stream)
    attachId: str | None = Field(None, min_length=1, max_length=128)


class ChatUploadParams(_Params):
    path: str = Field(min_length=1, max_length=4096)
    chatId: str | None = Field(None, min_length=1, max_length=128)
    requestId: str | None = Field(None, min_length=1, max_length=128)


class ChatGetParams(_Params):
    chatId: str = Field(min_length=1, max_length=256)
    includeRawMessages: bool = False


class ViewportParams(_Params):
    viewportKey: str = Field(min_length=1, max_length=256)


class JobParams(_Params):
    jobId: str = Field(min_length=1, max_length=256)


def _validate(model: type[ParamsT], params: dict[str, Any]) -> ParamsT:
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        raise RpcError(INVALID_PARAMS, f"invalid params: {describe_validation_error(exc, 'params')}") from exc


def _event_head(request_id: str, call_id: Any) -> dict[str, Any]:
    """The params every ``agent.event`` of one call starts with: ``requestId`` (SPEC §10) and,
    when the call has one, its JSON-RPC ``id``."""
    return {"requestId": request_id} if call_id is None else {"requestId": request_id, "id": call_id}


def map_error(exc: GatewayError) -> RpcError:
    """A gateway error as a JSON-RPC error: client mistakes are -32602, the rest -32000."""
    code = INVALID_PARAMS if isinstance(exc, RequestError) else APPLICATION_ERROR
    return RpcError(code, exc.message, {"code": exc.code, "status": exc.status})


class SidecarMethods:
    """Binds each method name of SPEC §10 to the gateway."""

    def __init__(self, gateway: Gateway, writer: LineWriter) -> None:
        self._gateway = gateway
        self._writer = writer
        self._table: Mapping[str, Handler] = {
            "gateway.health": self.health,
            "agent.list": self.agent_list,
            "agent.get": self.agent_get,
            "agent.query": self.agent_query,
            "agent.submit": self.agent_submit,
            "agent.cancel": self.agent_cancel,
            "agent.attach": self.agent_attach,
            "agent.status": self.agent_status,
            "agent.interrupt": self.agent_interrupt,
            "chat.list": self.chat_list,
            "chat.get": self.chat_get,
            "chat.upload": self.chat_upload,
            "viewport.get": self.viewport_get,
            "scheduler.add": self.scheduler_add,
            "scheduler.list": self.scheduler_list,
            "scheduler.remove": self.scheduler_remove,
            "llm.usage": self.llm_usage,
            "llm.providers": self.llm_providers,
            "llm.models": self.llm_models,
        }

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._table)

    def handler(self, method: str, call_id: Any = None) -> Handler | None:
        """The method's handler; ``call_id`` (the request's JSON-RPC id, ``None`` for a notification)
        is named in the ``agent.event`` notifications of ``agent.query`` and ``agent.attach``, so a
        host can tell whose they are before the reply comes (two queries without ``requestId``)."""
        if method == "agent.query":
            return functools.partial(self.agent_query, call_id=call_id)
        if method == "agent.attach":
            return functools.partial(self.agent_attach, call_id=call_id)
        return self._table.get(method)

    # -- methods ---------------------------------------------------------------------

    async def health(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"status": "UP", "version": self._gateway.version,
                "catalogVersion": self._gateway.catalog.snapshot.version}

    async def agent_list(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        return [agent_summary(agent) for agent in self._gateway.catalog.snapshot.agents.values()]

    async def agent_get(self, params: dict[str, Any]) -> dict[str, Any]:
        key = check_key(_validate(AgentGetParams, params).agentKey, "agentKey")
        agent = self._gateway.catalog.snapshot.agents.get(key)
        if agent is None:
            raise NotFoundError(f"unknown agent: {key}")
        return agent_detail(agent)

    async def agent_query(self, params: dict[str, Any], *, call_id: Any = None) -> dict[str, Any]:
        query = _validate(QueryRequest, params)
        runs = self._gateway.runs
        run = await runs.start(query, OWNER)
        events: list[dict[str, Any]] = []
        head = _event_head(run.request_id, call_id)
        # the events already in the run's log go out together: one write, each its own notification
        async for batch in runs.query_batches(run):
            if query.stream:
                await self._writer.send_lines([
                    notification("agent.event", {**head, "event": stamped.wire()}) for stamped in batch])
            else:
                events.extend(stamped.wire() for stamped in batch)
        result = await self._run_result(run)
        if not query.stream:
            result["answer"] = run.final_text
            result["events"] = events
        return result

    async def _run_result(self, run: Run) -> dict[str, Any]:
        """What ``agent.query`` and ``agent.attach`` answer once the run ended."""
        outcome = await run.finished()
        result: dict[str, Any] = {
            "runId": run.run_id, "chatId": run.chat_id, "requestId": run.request_id,
            "finishReason": outcome.finish_reason, "status": outcome.event_status,
        }
        if outcome.error is not None:
            result["error"] = outcome.error
        return result

    async def agent_attach(self, params: dict[str, Any], *, call_id: Any = None) -> dict[str, Any]:
        """SPEC §15: every event of the run after ``after`` as ``agent.event`` notifications, live
        until it ends; the result is the run's outcome. Leaving never cancels the run."""
        body = _validate(AttachParams, params)
        runs = self._gateway.runs
        run = runs.get(body.runId, OWNER)  # a desktop sidecar is one process: its runs are its own
        attach_id = body.attachId or f"attach:{run.run_id}"
        head = {**_event_head(run.request_id, call_id), "attachId": attach_id}
        async for batch in runs.watch_batches(run, body.after):
            await self._writer.send_lines([
                notification("agent.event", {**head, "event": stamped.wire()}) for stamped in batch])
        return {**await self._run_result(run), "attachId": attach_id}

    async def agent_status(self, params: dict[str, Any]) -> dict[str, Any]:
        runs = self._gateway.runs
        return await runs.describe_any(await runs.locate(_validate(CancelParams, params).runId, OWNER))

    async def agent_interrupt(self, params: dict[str, Any]) -> dict[str, bool]:
        return {"cancelled": await self._gateway.runs.interrupt(_validate(CancelParams, params).runId, OWNER)}

    async def agent_submit(self, params: dict[str, Any]) -> dict[str, Any]:
        body = _validate(SubmitRequest, params)
        return self._gateway.runs.submit(body.runId, body.toolId, body.params, OWNER).as_dict()

    async def agent_cancel(self, params: dict[str, Any]) -> dict[str, bool]:
        run_id = _validate(CancelParams, params).runId
        return {"cancelled": await self._gateway.runs.cancel(run_id, OWNER)}

    async def chat_list(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        return await chat_list(self._gateway, OWNER)

    async def chat_upload(self, params: dict[str, Any]) -> dict[str, Any]:
        """SPEC §23: a file of the desktop's disk into a chat (a new one without ``chatId``)."""
        body = _validate(ChatUploadParams, params)
        gateway = self._gateway
        uploads = Uploads(gateway.settings, gateway.chats, gateway.services.sandbox.workspace_for)
        return await uploads.from_path(body.path, owner=OWNER, chat_id=body.chatId, request_id=body.requestId)

    async def chat_get(self, params: dict[str, Any]) -> dict[str, Any]:
        if "includeEvents" in params:
            raise RequestError("the includeEvents parameter is retired: events are always included")
        body = _validate(ChatGetParams, params)
        return await chat_history(self._gateway, body.chatId, OWNER, body.includeRawMessages)

    async def viewport_get(self, params: dict[str, Any]) -> dict[str, Any]:
        return viewport_data(self._gateway, _validate(ViewportParams, params).viewportKey)

    async def scheduler_add(self, params: dict[str, Any]) -> dict[str, Any]:
        return await self._gateway.scheduler.add(parse_schedule_request(params), OWNER)

    async def scheduler_list(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        return self._gateway.scheduler.list(OWNER)

    async def scheduler_remove(self, params: dict[str, Any]) -> dict[str, Any]:
        return await self._gateway.scheduler.remove(_validate(JobParams, params).jobId, OWNER)

    async def llm_usage(self, params: dict[str, Any]) -> dict[str, Any]:
        """SPEC §19: as ``GET /api/ap/usage``; the desktop user owns the gateway and sees every line."""
        return await usage_report(self._gateway.services.ledger, params, None)

    async def llm_providers(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        return provider_list(self._gateway.settings.agent.providers, self._gateway.api_key_for)

    async def llm_models(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        return model_list(self._gateway.catalog.snapshot.models, self._gateway.services.router.state)
