"""The current run's trace, carried by ``contextvars`` through the run's task (SPEC §19).

``Telemetry.run`` sets it in the run's own task: everything that runs inside — the engine, tool
calls, ``asyncio.to_thread`` workers, log records — sees ``current_trace_id()``, and the engine's
hooks ``model_call_span`` / ``tool_call_span`` find the run's span factory. Outside a run, or with
no span export configured, the hooks return ``NO_SPAN``: one ``ContextVar.get`` and nothing else,
and nothing of ``opentelemetry`` is imported.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from app.llm.request import ChatRequest

_TRACE_ID: ContextVar[str | None] = ContextVar("agw_trace_id", default=None)
_SPANS: ContextVar[RunSpans | None] = ContextVar("agw_run_spans", default=None)


class CallSpan:
    """One model or tool call's span, used as ``with hook(...) as span:``; this base does nothing.

    An exception leaving the block marks the span as failed (``error.type`` = the error's code);
    a cancellation does not.
    """

    __slots__ = ()

    def __enter__(self) -> CallSpan:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        return None

    def response(self, *, finish_reason: str | None, input_tokens: int, output_tokens: int) -> None:
        """A model call's answer: why it stopped and its token usage."""


#: the span of a call outside a run or without span export: does nothing
NO_SPAN = CallSpan()


class RunSpans(Protocol):
    """Makes the spans of one run's model and tool calls (children of the run's span)."""

    def model_call(self, request: ChatRequest) -> CallSpan: ...

    def tool_call(self, name: str, call_id: str) -> CallSpan: ...


def current_trace_id() -> str | None:
    """The trace id of the run whose task is running, else ``None``."""
    return _TRACE_ID.get()


def model_call_span(request: ChatRequest) -> CallSpan:
    """The span of one model call of the current run (``chat <model>``)."""
    spans = _SPANS.get()
    return NO_SPAN if spans is None else spans.model_call(request)


def tool_call_span(name: str, call_id: str) -> CallSpan:
    """The span of one tool call of the current run (``execute_tool <name>``)."""
    spans = _SPANS.get()
    return NO_SPAN if spans is None else spans.tool_call(name, call_id)


def error_type(exc: BaseException) -> str:
    """A low-cardinality name for a failure: the gateway's error code (of the error or of the one it
    wraps), else the exception's class name."""
    code: Any = getattr(exc, "error_code", None) or getattr(exc.__cause__, "error_code", None)
    return str(code) if code else type(exc).__name__


@contextmanager
def trace_scope(trace_id: str) -> Iterator[None]:
    """Within the block (and every task or thread started from it), ``current_trace_id()`` is ``trace_id``."""
    token = _TRACE_ID.set(trace_id)
    try:
        yield
    finally:
        _TRACE_ID.reset(token)


@contextmanager
def spans_scope(spans: RunSpans) -> Iterator[None]:
    """Within the block, the call hooks make their spans with ``spans``."""
    token = _SPANS.set(spans)
    try:
        yield
    finally:
        _SPANS.reset(token)
