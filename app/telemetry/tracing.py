"""``Telemetry``: the tracing of one gateway (SPEC §19) — trace ids in logs, spans when configured.

Built with the ``Gateway``: ``open()`` at its start attaches the log filters (and builds the span
exporter when ``agent.telemetry.otlp-endpoint`` / ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set and the
``otel`` extra is installed), ``aclose()`` at its close detaches them and flushes the spans.
``run(...)`` wraps one run's task: its trace id is current there, and with export on the run's
span is open around it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from app import __version__
from app.contract.runs import RunOutcome
from app.security.masking import mask_text
from app.telemetry.logs import RunLogTracing
from app.telemetry.scope import spans_scope, trace_scope
from app.telemetry.traceparent import TraceParent

if TYPE_CHECKING:
    from app.config import TelemetrySettings
    from app.telemetry._otel import SpanExport, _RunSpans

logger = logging.getLogger(__name__)


class RunTrace:
    """What a run's owner reports to its trace when the run ended."""

    __slots__ = ("_spans",)

    def __init__(self, spans: _RunSpans | None = None) -> None:
        self._spans = spans

    def ended(self, outcome: RunOutcome | None) -> None:
        if self._spans is not None:
            self._spans.ended(outcome)


class Telemetry:
    """One gateway's tracing. Without settings (or an endpoint) it only scopes trace ids."""

    def __init__(self, settings: TelemetrySettings | None = None) -> None:
        self._settings = settings
        self._logs = RunLogTracing()
        self._export: SpanExport | None = None

    @property
    def exporting(self) -> bool:
        return self._export is not None

    def open(self) -> None:
        """Attach the log filters; build the span exporter when an endpoint is configured."""
        self._logs.attach()
        endpoint = self._settings.otlp_endpoint.strip() if self._settings is not None else ""
        if not endpoint or self._export is not None:
            return
        assert self._settings is not None
        try:
            from app.telemetry._otel import SpanExport  # the optional extra: imported only when asked for
        except ImportError as exc:
            logger.warning(
                "agent.telemetry.otlp-endpoint is %s but opentelemetry is not installed (%s): spans are not "
                "exported; install the extra: pip install 'agent-gateway[otel]'", mask_text(endpoint), exc)
            return
        self._export = SpanExport(endpoint, self._settings.service_name, __version__)
        logger.info("exporting spans (OTLP/HTTP) to %s", mask_text(self._export.url))  # the URL may hold a password

    async def aclose(self) -> None:
        """Flush and stop the exporter (off the event loop), then detach the log filters."""
        export, self._export = self._export, None
        if export is not None:
            await asyncio.to_thread(export.shutdown)
        self._logs.detach()

    @contextmanager
    def run(self, trace_id: str, parent: TraceParent | None, *, agent_key: str, chat_id: str,
            run_id: str) -> Iterator[RunTrace]:
        """Wrap one run's task: ``trace_id`` is current inside; with export on, so is the run's span."""
        # plain nested ``with``s: an ExitStack held a 624-byte deque for every live run (issue 13)
        with trace_scope(trace_id):
            if self._export is None:
                yield RunTrace()
                return
            with self._export.run(parent, agent_key=agent_key, chat_id=chat_id, run_id=run_id) as spans, \
                    spans_scope(spans):
                yield RunTrace(spans)
