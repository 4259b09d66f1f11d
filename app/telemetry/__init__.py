"""Tracing (SPEC §19): W3C ``traceparent`` in, the trace id on ``run.start`` and on every log line
of the run, OpenTelemetry spans (GenAI semantic conventions) out when an OTLP endpoint is set.

* ``traceparent`` — parse the header (``parse_traceparent``), make a trace id (``new_trace_id``);
* ``scope`` — the current run's trace in ``contextvars``; the engine's hooks ``model_call_span``
  and ``tool_call_span`` (no-ops unless spans are exported);
* ``logs`` — the filter that puts the trace id on the run's log records;
* ``tracing`` — ``Telemetry``, one per gateway;
* ``_otel`` — the opentelemetry-sdk exporter, imported only when an endpoint is configured.
"""

from app.telemetry.scope import CallSpan, current_trace_id, model_call_span, tool_call_span
from app.telemetry.traceparent import TraceParent, new_trace_id, parse_traceparent
from app.telemetry.tracing import RunTrace, Telemetry

__all__ = [
    "CallSpan",
    "RunTrace",
    "Telemetry",
    "TraceParent",
    "current_trace_id",
    "model_call_span",
    "new_trace_id",
    "parse_traceparent",
    "tool_call_span",
]
