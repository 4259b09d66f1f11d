"""OpenAI chat completions ↔ the run contract (SPEC §17 "OpenAI") — a pure translation.

No web framework here: the route (``app.api.openai_routes``) reads the body, starts the run
and writes what this module returns.

Request side: ``ChatCompletionRequest`` validates ``POST /v1/chat/completions``;
``to_run_request`` makes the run's ``QueryRequest`` (``model`` = agentKey, the last message —
which must be a user message — is the query) and its ``history`` (the earlier
system/developer/user/assistant messages as ``{"role", "content": "text"}``; tool and
function messages and assistant messages without text are skipped). With a stored chat
(``X-Chat-Id``) the earlier messages are ignored and the chat's memory is the history.
Content may be a string or a list of content parts: the text parts are joined with ``\\n``,
other parts (images, audio) are ignored.

Response side, streaming (``ChunkStream``): one ``chat.completion.chunk`` per frame, all with
``id = chatcmpl-<runId>``, the same ``created`` and ``model``:

1. ``delta: {role: "assistant", content: ""}`` (``opening``);
2. one chunk per ``ContentDeltaEvent`` (``delta.content``) and per ``ReasoningDeltaEvent``
   (``delta.reasoning_content``), in run order; tool, action, plan and task events are not
   shown (backend tools run inside the gateway);
3. on ``run.complete``: a chunk with an empty delta and ``finish_reason``
   (``finish_reason()``), then — with ``stream_options.include_usage`` — a usage chunk
   (``choices: []``), then ``[DONE]``;
4. on ``run.error`` / ``run.cancel``: one ``{"error": {message, type, code, param}}`` frame
   and the stream ends without ``[DONE]`` — what OpenAI and LiteLLM's proxy do; the
   official SDK raises ``openai.APIError`` on that frame;
5. on a frontend tool's ``tool.start``: such a frame (code ``frontend_tool_unsupported``; a
   non-streamed answer is a 400 with it) and the end: nothing here can answer the call, so the
   route leaves the run, which cancels it, instead of letting it wait out the submit timeout.

Non-streaming (``CompletionFold``): one ``chat.completion`` with the content deltas joined as
``message.content`` (the text the stream sends, every model turn of a REACT or PLAN run
included, as OpenAI's two forms carry the same content), the reasoning deltas joined as
``message.reasoning_content`` (when there were any), ``usage`` and ``finish_reason``; a
failed or cancelled run is an error body.

Errors (``error_body``, ``error_status``): OpenAI's ``{"error": {"message", "type", "code",
"param"}}``. The HTTP status is the ``GatewayError``'s; ``type`` names the class the SDK
raises for that status (``invalid_request_error`` 400, ``authentication_error`` 401,
``permission_error`` 403, ``not_found_error`` 404, ``rate_limit_error`` 429) and OpenAI's
``server_error`` for 5xx; ``code`` is a short machine word (``model_not_found``,
``rate_limit_exceeded``, or the run's ``error.code`` such as ``upstream_http_error``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.contract import events as ev
from app.contract.bodies import QueryRequest
from app.errors import (
    AuthError,
    ForbiddenError,
    GatewayError,
    NotFoundError,
    PathEscapeError,
    PayloadTooLarge,
    RequestError,
    RunLimitExceeded,
)

#: the longest conversation a request may carry (messages)
MAX_MESSAGES = 1000
#: the most content parts one message may have
MAX_PARTS = 100
#: the longest text of one message or part (the query's own limit, SPEC §4)
MAX_TEXT_CHARS = 200_000
#: what ``/v1/models`` names as every agent's owner
OWNER = "agent-gateway"
#: the last frame of a successful stream
DONE: Literal["[DONE]"] = "[DONE]"

Frame = dict[str, Any] | Literal["[DONE]"]
"""One SSE ``data:`` payload: a JSON object, or the ``[DONE]`` sentinel."""


# ------------------------------------------------------------------------- request side


class ContentPart(BaseModel):
    """One part of a message's ``content`` list; only ``text`` parts carry text."""

    model_config = ConfigDict(extra="ignore")

    type: str = Field(max_length=64)
    text: str | None = Field(None, max_length=MAX_TEXT_CHARS)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: (
        Annotated[str, Field(max_length=MAX_TEXT_CHARS)]
        | Annotated[list[ContentPart], Field(max_length=MAX_PARTS)]
        | None
    ) = None

    @property
    def text(self) -> str:
        """The message's text: the string, or its text parts joined with a newline."""
        if isinstance(self.content, str):
            return self.content
        if not self.content:
            return ""
        return "\n".join(part.text for part in self.content if part.type == "text" and part.text)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The body of ``POST /v1/chat/completions`` this gateway reads; other parameters
    (``temperature``, ``tools`` …) are accepted and ignored — the agent definition decides."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=128)
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = None

    @model_validator(mode="after")
    def _answerable(self) -> ChatCompletionRequest:
        if self.n not in (None, 1):
            raise ValueError("n must be 1: an agent run gives one answer")
        last = self.messages[-1]
        if last.role != "user":
            raise ValueError(f"the last message must be a user message (the query), not {last.role!r}")
        text = last.text
        if not text.strip():
            raise ValueError("the last user message has no text")
        if len(text) > MAX_TEXT_CHARS:
            raise ValueError(f"the last user message is longer than {MAX_TEXT_CHARS} characters")
        return self

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


@dataclass(frozen=True, slots=True)
class RunRequest:
    """What the run service needs: the query and, for a new chat, the conversation so far."""

    query: QueryRequest
    history: list[dict[str, Any]] | None


_HISTORY_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def to_run_request(body: ChatCompletionRequest, chat_id: str | None = None) -> RunRequest:
    """The run for ``body``; with ``chat_id`` it continues that stored chat and the request's
    earlier messages are ignored (the chat's memory is the history)."""
    query = QueryRequest(agent_key=body.model, chat_id=chat_id or None, message=body.messages[-1].text,
                         stream=body.stream, on_disconnect="cancel")
    if chat_id:
        return RunRequest(query, None)
    history = [
        {"role": _HISTORY_ROLES[message.role], "content": message.text}
        for message in body.messages[:-1]
        if message.role in _HISTORY_ROLES and message.text
    ]
    return RunRequest(query, history)


# ------------------------------------------------------------------------ response side


def completion_id(run_id: str) -> str:
    return f"chatcmpl-{run_id}"


#: our finish reasons that OpenAI has no word for: ``max_steps`` means the answer was cut short
_FINISH_REASONS = {"stop": "stop", "length": "length", "content_filter": "content_filter", "max_steps": "length"}


def finish_reason(ours: str | None) -> str:
    """OpenAI's ``finish_reason`` for a completed run: ``stop``, ``length`` (also for
    ``max_steps``) or ``content_filter``; anything else (``task_failed``, none) is ``stop``."""
    return _FINISH_REASONS.get(ours or "stop", "stop")


def usage_of(usage: dict[str, Any] | None) -> dict[str, int]:
    """OpenAI's ``usage`` from ``run.complete``'s (every model call of the run)."""
    usage = usage or {}
    prompt = int(usage.get("promptTokens") or 0)
    completion = int(usage.get("completionTokens") or 0)
    total = int(usage.get("totalTokens") or 0) or prompt + completion
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}


def model_entry(agent_key: str, created: int) -> dict[str, Any]:
    """One agent as an entry of ``GET /v1/models``."""
    return {"id": agent_key, "object": "model", "created": created, "owned_by": OWNER}


@dataclass(slots=True)
class ChunkStream:
    """Translates one run's typed events into ``chat.completion.chunk`` frames (module docstring)."""

    run_id: str
    created: int
    model: str
    include_usage: bool = False
    #: the run called a frontend tool: the stream ends with an error and the run is cancelled
    refused: bool = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": completion_id(self.run_id), "object": "chat.completion.chunk", "created": self.created,
            "model": self.model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    def opening(self) -> dict[str, Any]:
        """The first chunk: the assistant's role."""
        return self._chunk({"role": "assistant", "content": ""})

    def translate(self, event: ev.Event) -> list[Frame]:
        """The frames for one run event (none for the events OpenAI has no place for)."""
        match event:
            case ev.ContentDeltaEvent(delta=delta):
                return [self._chunk({"content": delta})]
            case ev.ReasoningDeltaEvent(delta=delta):
                return [self._chunk({"reasoning_content": delta})]
            case ev.RunComplete():
                frames: list[Frame] = [self._chunk({}, finish_reason(event.finish_reason))]
                if self.include_usage:
                    frames.append({
                        "id": completion_id(self.run_id), "object": "chat.completion.chunk",
                        "created": self.created, "model": self.model, "choices": [],
                        "usage": usage_of(event.usage),
                    })
                frames.append(DONE)
                return frames
            case ev.RunError(error=error):
                return [run_error_body(error)]
            case ev.RunCancel():
                return [cancelled_body()]
            case ev.ToolStart(tool_type=str(), tool_name=name):
                self.refused = True
                return [frontend_tool_body(name, self.model)]
            case _:
                return []


@dataclass(slots=True)
class CompletionFold:
    """Collects what a non-streaming ``chat.completion`` needs from the run's events."""

    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    complete: ev.RunComplete | None = None
    error: dict[str, Any] | None = None
    cancelled: bool = False
    #: the error body when the run called a frontend tool (nothing can answer it here)
    refused: dict[str, Any] | None = None

    def add(self, event: ev.Event, model: str) -> None:
        match event:
            case ev.ContentDeltaEvent(delta=delta):
                self.content.append(delta)
            case ev.ReasoningDeltaEvent(delta=delta):
                self.reasoning.append(delta)
            case ev.RunComplete():
                self.complete = event
            case ev.RunError(error=error):
                self.error = error
            case ev.RunCancel():
                self.cancelled = True
            case ev.ToolStart(tool_type=str(), tool_name=name):
                self.refused = frontend_tool_body(name, model)
            case _:
                pass

    def failure(self) -> tuple[int, dict[str, Any]] | None:
        """The error status and body when the run did not complete, else ``None``."""
        if self.refused is not None:
            return 400, self.refused
        if self.complete is not None:
            return None
        if self.error is not None:
            code = str(self.error.get("code") or "")
            return (502 if code.startswith("upstream_") else 500), run_error_body(self.error)
        return 500, cancelled_body()

    def completion(self, *, run_id: str, created: int, model: str) -> dict[str, Any]:
        """The ``chat.completion`` body of a completed run: the same text as its stream's chunks."""
        assert self.complete is not None, "the run did not complete"
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.content)}
        if self.reasoning:
            message["reasoning_content"] = "".join(self.reasoning)
        return {
            "id": completion_id(run_id), "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason(self.complete.finish_reason),
                         "logprobs": None}],
            "usage": usage_of(self.complete.usage),
        }


# ------------------------------------------------------------------------------- errors

_TYPES_BY_STATUS = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 409: "invalid_request_error", 413: "invalid_request_error",
    422: "invalid_request_error", 429: "rate_limit_error",
}
#: most specific first: ``error_code`` walks the class hierarchy
_CODES: tuple[tuple[type[GatewayError], str], ...] = (
    (PayloadTooLarge, "payload_too_large"),
    (PathEscapeError, "invalid_id"),
    (RequestError, "invalid_request"),
    (AuthError, "invalid_token"),
    (ForbiddenError, "forbidden"),
    (NotFoundError, "not_found"),
    (RunLimitExceeded, "rate_limit_exceeded"),
)


def error_type(status: int) -> str:
    return _TYPES_BY_STATUS.get(status, "server_error" if status >= 500 else "invalid_request_error")


def error_body(message: str, *, status: int, code: str | None, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error object: ``{"error": {"message", "type", "code", "param"}}``."""
    return {"error": {"message": message, "type": error_type(status), "code": code, "param": param}}


def error_of(exc: GatewayError, *, param: str | None = None, code: str | None = None) -> tuple[int, dict[str, Any]]:
    """The status and OpenAI error body for a gateway error raised before anything streamed."""
    if code is None:
        code = next((word for cls, word in _CODES if isinstance(exc, cls)), "internal_error")
    return exc.status, error_body(exc.message, status=exc.status, code=code, param=param)


def run_error_body(error: dict[str, Any]) -> dict[str, Any]:
    """A ``run.error`` (``{code, message, …}``) as OpenAI's error object."""
    return error_body(str(error.get("message") or "the run failed"), status=500,
                      code=str(error.get("code") or "internal_error"))


def frontend_tool_body(tool_name: str | None, agent_key: str) -> dict[str, Any]:
    """A frontend tool waits for a client that shows it and answers (``/api/ap/submit``, AG-UI);
    an OpenAI client cannot, so the run would only wait out the submit timeout."""
    return error_body(
        f"the agent called the frontend tool '{tool_name or '?'}', which only a client of POST /api/ap/query "
        f"or POST /ag-ui/{agent_key} can answer; the run was cancelled", status=400, code="frontend_tool_unsupported")


def cancelled_body() -> dict[str, Any]:
    return error_body("the run was cancelled before it completed", status=500, code="run_cancelled")


__all__ = [
    "DONE",
    "OWNER",
    "ChatCompletionRequest",
    "ChatMessage",
    "ChunkStream",
    "CompletionFold",
    "ContentPart",
    "Frame",
    "RunRequest",
    "StreamOptions",
    "completion_id",
    "error_body",
    "error_of",
    "error_type",
    "finish_reason",
    "frontend_tool_body",
    "model_entry",
    "run_error_body",
    "to_run_request",
    "usage_of",
]
