"""Span export with opentelemetry-sdk (the optional extra ``otel``), SPEC §19.

Imported only by ``app.telemetry.build_telemetry`` when an OTLP endpoint is configured: without
one, nothing of ``opentelemetry`` is loaded. One ``TracerProvider`` per gateway (never the global
one), an OTLP/HTTP protobuf exporter behind a ``BatchSpanProcessor`` (its own thread: exporting
never blocks the event loop), flushed and shut down when the gateway closes.

Spans follow the GenAI semantic conventions (https://opentelemetry.io/docs/specs/semconv/gen-ai/):

* ``invoke_agent <agentKey>`` (INTERNAL) per run, the child of the incoming ``traceparent``'s span;
* ``chat <model>`` (CLIENT) per model call attempt: ``gen_ai.operation.name=chat``,
  ``gen_ai.provider.name`` (and the older ``gen_ai.system``), ``gen_ai.request.model``,
  ``gen_ai.usage.input_tokens`` / ``output_tokens``, ``gen_ai.response.finish_reasons``;
* ``execute_tool <name>`` (INTERNAL) per tool call: ``gen_ai.tool.name``, ``gen_ai.tool.call.id``.

Model and tool calls are both children of the run's span (the model asks for a tool; the agent
runs it). A failure sets status ERROR and ``error.type`` (the gateway's error code).

Span names, attribute values and status descriptions are cut to ``MAX_SPAN_TEXT`` characters:
the model names its tool calls and their ids, and an upstream's 1 MB name went whole into the
span's name, an attribute and the error description, held in the export queue until sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from app.contract.runs import RunOutcome
from app.telemetry.scope import CallSpan, current_trace_id, error_type
from app.telemetry.traceparent import TraceParent

if TYPE_CHECKING:
    from app.llm.request import ChatRequest

#: ``gen_ai.provider.name`` per model protocol (an OpenAI-compatible API is reported as ``openai``,
#: as the conventions say for systems reached through the OpenAI API)
PROVIDER_NAMES = {"OPENAI": "openai", "NEWAPI_OPENAI_COMPATIBLE": "openai", "ANTHROPIC": "anthropic"}
#: longest span name, attribute value or status description exported (the rest is cut, ``…``)
MAX_SPAN_TEXT = 1024


def _clip(text: str) -> str:
    """``text`` cut to ``MAX_SPAN_TEXT`` characters."""
    return text if len(text) <= MAX_SPAN_TEXT else text[: MAX_SPAN_TEXT - 1] + "…"


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL of a base endpoint (``OTEL_EXPORTER_OTLP_ENDPOINT`` semantics)."""
    return endpoint.rstrip("/") + "/v1/traces"


class _RunTraceIds(RandomIdGenerator):
    """A root span started inside a run takes the run's trace id (``run.start.traceId``)."""

    def generate_trace_id(self) -> int:
        trace_id = current_trace_id()
        return int(trace_id, 16) if trace_id else super().generate_trace_id()


class SpanExport:
    """The gateway's tracer provider and exporter."""

    def __init__(self, endpoint: str, service_name: str, service_version: str) -> None:
        self.url = traces_url(endpoint)
        resource = Resource.create({"service.name": service_name, "service.version": service_version})
        self._provider = TracerProvider(resource=resource, id_generator=_RunTraceIds(), shutdown_on_exit=False,
                                        span_limits=SpanLimits(max_attribute_length=MAX_SPAN_TEXT))
        self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=self.url)))
        self._tracer = self._provider.get_tracer("agent-gateway", service_version)

    @contextmanager
    def run(self, parent: TraceParent | None, *, agent_key: str, chat_id: str,
            run_id: str) -> Iterator[_RunSpans]:
        """The run's span, current for the block; call it inside ``trace_scope(run's trace id)``."""
        if parent is not None:
            remote = SpanContext(int(parent.trace_id, 16), int(parent.parent_id, 16), is_remote=True,
                                 trace_flags=TraceFlags(parent.flags))
            start_in = trace.set_span_in_context(NonRecordingSpan(remote), otel_context.Context())
        else:
            start_in = otel_context.Context()  # a root: never the child of whatever span is current
        span = self._tracer.start_span(
            f"invoke_agent {agent_key}", context=start_in, kind=SpanKind.INTERNAL,
            attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent_key,
                        "gen_ai.conversation.id": chat_id, "agw.run.id": run_id},
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            yield _RunSpans(self._tracer, span)
        finally:
            otel_context.detach(token)
            span.end()

    def shutdown(self) -> None:
        """Export what is queued, then stop (blocking: call it off the event loop)."""
        self._provider.shutdown()


class _RunSpans:
    """The span factory of one run (``app.telemetry.scope.RunSpans``)."""

    def __init__(self, tracer: trace.Tracer, span: Span) -> None:
        self._tracer = tracer
        self._span = span

    def model_call(self, request: ChatRequest) -> CallSpan:
        model = request.model_name
        provider = PROVIDER_NAMES.get(request.model.protocol, request.model.protocol.lower())
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": provider, "gen_ai.system": provider,
            "gen_ai.request.model": model, "agw.model.key": request.model.key,
            "agw.provider.key": request.model.provider,
        }
        for key, value in (("gen_ai.request.max_tokens", request.max_tokens),
                           ("gen_ai.request.temperature", request.temperature),
                           ("gen_ai.request.top_p", request.top_p)):
            if value is not None:
                attributes[key] = value
        server = urlsplit(request.provider.base_url or "")
        if server.hostname:
            attributes["server.address"] = server.hostname
            attributes["server.port"] = server.port or (443 if server.scheme == "https" else 80)
        return _OtelCallSpan(self._tracer.start_span(f"chat {model}", kind=SpanKind.CLIENT, attributes=attributes))

    def tool_call(self, name: str, call_id: str) -> CallSpan:
        return _OtelCallSpan(self._tracer.start_span(_clip(f"execute_tool {name}"), kind=SpanKind.INTERNAL, attributes={
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name, "gen_ai.tool.call.id": call_id,
            "gen_ai.tool.type": "function",
        }))

    def ended(self, outcome: RunOutcome | None) -> None:
        """The run's outcome on its span: status, error and the run's token totals."""
        if outcome is None:
            return
        span = self._span
        span.set_attribute("agw.run.status", outcome.status)
        usage = outcome.usage or {}
        if "promptTokens" in usage:
            span.set_attribute("gen_ai.usage.input_tokens", int(usage["promptTokens"]))
        if "completionTokens" in usage:
            span.set_attribute("gen_ai.usage.output_tokens", int(usage["completionTokens"]))
        if outcome.status == "error":
            error = outcome.error or {}
            span.set_attribute("error.type", str(error.get("code") or "_OTHER"))
            span.set_status(Status(StatusCode.ERROR, _clip(str(error.get("message") or ""))))


class _OtelCallSpan(CallSpan):
    """A started model/tool call span: current inside the ``with`` block, ended when it leaves."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: Span) -> None:
        self._span = span
        self._token: Any = None

    def __enter__(self) -> CallSpan:
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._token is not None:
            otel_context.detach(self._token)
        if isinstance(exc, Exception):  # a cancellation (BaseException) is no failure of the call
            self._span.set_attribute("error.type", error_type(exc))
            self._span.set_status(Status(StatusCode.ERROR, _clip(str(getattr(exc, "message", "") or exc))))
        self._span.end()

    def response(self, *, finish_reason: str | None, input_tokens: int, output_tokens: int) -> None:
        self._span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
        self._span.set_attribute("gen_ai.usage.output_tokens", output_tokens)
        if finish_reason:
            self._span.set_attribute("gen_ai.response.finish_reasons", [finish_reason])
