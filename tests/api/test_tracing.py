"""Tracing (SPEC §19) over real HTTP: a W3C ``traceparent`` on ``/api/ap/query`` becomes the run's
trace id (``run.start.traceId``), every log line of the run carries it, and with an OTLP endpoint
the run, its model calls and its tool calls arrive as spans at a real OTLP/HTTP receiver."""

from __future__ import annotations

import gzip
import logging
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from httpx_sse import aconnect_sse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from app.devtools import FakeUpstream
from app.devtools.script import http_error_script, text_script
from app.logs import JsonFormatter
from app.telemetry import parse_traceparent
from tests.engine.helpers import call, first
from tests.support.deployment import REPO, agent, write_agent
from tests.support.server import GatewayServer

Start = Callable[..., GatewayServer]

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
HEX32 = re.compile(r"[0-9a-f]{32}")
TOOLS = {"backends": ["city_datetime"], "frontends": [], "actions": []}


async def _query(client: httpx.AsyncClient, url: str, body: dict[str, Any],
                 headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """POST a query (SSE) with ``headers``; every event until the terminal one."""
    events: list[dict[str, Any]] = []
    async with aconnect_sse(client, "POST", f"{url}/api/ap/query", json=body, headers=headers or {}) as source:
        assert source.response.status_code == 200
        async for sse in source.aiter_sse():
            if sse.data:
                events.append(orjson.loads(sse.data))
    return events


# --------------------------------------------------------------------------- traceparent → run.start


def test_traceparent_parsing_follows_w3c() -> None:
    parsed = parse_traceparent(TRACEPARENT)
    assert parsed is not None and (parsed.trace_id, parsed.parent_id, parsed.sampled) == (TRACE_ID, PARENT_ID, True)
    assert parse_traceparent(f" 00-{TRACE_ID}-{PARENT_ID}-00 ") is not None  # optional whitespace; not sampled
    future = parse_traceparent(f"cc-{TRACE_ID}-{PARENT_ID}-01-what-the-future-adds")
    assert future is not None and future.trace_id == TRACE_ID  # a later version: its first four fields
    for bad in (None, "", "garbage", f"ff-{TRACE_ID}-{PARENT_ID}-01", f"00-{'0' * 32}-{PARENT_ID}-01",
                f"00-{TRACE_ID}-{'0' * 16}-01", f"00-{TRACE_ID.upper()}-{PARENT_ID}-01",
                f"00-{TRACE_ID}-{PARENT_ID}-01-extra", f"00-{TRACE_ID[:-1]}-{PARENT_ID}-01",
                f"00_{TRACE_ID}_{PARENT_ID}_01", f"00-{TRACE_ID}-{PARENT_ID}-01" + "-x" * 400):
        assert parse_traceparent(bad) is None, bad


async def test_traceparent_header_becomes_the_run_trace_id(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start, client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "plain", agent())
    gw = start_gateway()
    upstream.enqueue(text_script(["Hello."]))
    events = await _query(client, gw.url, {"agentKey": "plain", "message": "hi"}, {"traceparent": TRACEPARENT})
    assert events[-1]["type"] == "run.complete"
    assert first(events, "run.start")["traceId"] == TRACE_ID


@pytest.mark.parametrize("header", [
    "not-a-traceparent", f"00-{'0' * 32}-{PARENT_ID}-01", f"ff-{TRACE_ID}-{PARENT_ID}-01",
    f"00-{TRACE_ID}-{'0' * 16}-01", None,
])
async def test_malformed_or_missing_traceparent_gets_a_fresh_trace_id(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start, client: httpx.AsyncClient, header: str | None
) -> None:
    write_agent(deploy, "plain", agent())
    gw = start_gateway()
    upstream.enqueue(text_script(["One."]), text_script(["Two."]))
    headers = {"traceparent": header} if header is not None else None
    ids = [first(await _query(client, gw.url, {"agentKey": "plain", "message": "hi"}, headers), "run.start")["traceId"]
           for _ in range(2)]
    for trace_id in ids:
        assert HEX32.fullmatch(trace_id) and trace_id != "0" * 32 and trace_id != TRACE_ID
    assert ids[0] != ids[1]  # a new one per run


# --------------------------------------------------------------------------- log lines


async def test_every_log_line_of_a_run_carries_its_trace_id(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start, client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="app")
    write_agent(deploy, "timer", agent("ONESHOT", tools=TOOLS))
    gw = start_gateway()  # attaches the trace filter to the root handlers, caplog's among them
    upstream.enqueue(call("call_t", "city_datetime", {"city": "Paris"}), text_script(["It is noon."]))
    events = await _query(client, gw.url, {"agentKey": "timer", "message": "time?"}, {"traceparent": TRACEPARENT})
    run_id = first(events, "run.start")["runId"]
    gw.stop()  # the run has ended and logged its end line; nothing of it logs any more
    of_run = [r for r in caplog.records if r.name.startswith("app.") and run_id in r.getMessage()]
    messages = [r.getMessage() for r in of_run]
    # the start line (logged before the run's task), the model calls' lines (inside it), the end line
    assert any(m.startswith(f"run {run_id} started") for m in messages), messages
    assert any(m.startswith("llm request ") for m in messages), messages
    assert any(m.startswith(f"run {run_id} ended: status=completed") for m in messages), messages
    for record in of_run:
        assert getattr(record, "trace_id", None) == TRACE_ID, record.getMessage()
        assert record.getMessage().endswith(f" trace_id={TRACE_ID}"), record.getMessage()
        assert record.getMessage().count("trace_id=") == 1
    # the JSON format (logging.format: json) carries it as a field of its own
    line = orjson.loads(JsonFormatter().format(of_run[-1]))
    assert line["traceId"] == TRACE_ID
    # a line logged outside any run carries none
    unrelated = [r for r in caplog.records if r.name.startswith("app.catalog")]
    assert unrelated and all(getattr(r, "trace_id", None) is None for r in unrelated)


# --------------------------------------------------------------------------- OTLP spans


class OtlpReceiver:
    """A real OTLP/HTTP trace receiver on loopback: keeps every ``POST /v1/traces`` request's spans."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver.paths.append(self.path)
                assert self.headers.get("Content-Type") == "application/x-protobuf"
                receiver.requests.append(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def spans(self) -> list[tuple[Span, dict[str, Any]]]:
        """Every received span with its attributes as a dict."""
        found = []
        for request in self.requests:
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        found.append((span, {a.key: _value(a.value) for a in span.attributes}))
        return found

    def resources(self) -> list[dict[str, Any]]:
        return [{a.key: _value(a.value) for a in rs.resource.attributes}
                for request in self.requests for rs in request.resource_spans]

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


async def test_spans_of_run_model_calls_and_tool_call_reach_an_otlp_receiver(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start, client: httpx.AsyncClient, receiver: OtlpReceiver
) -> None:
    write_agent(deploy, "timer", agent("ONESHOT", tools=TOOLS))
    gw = start_gateway(env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url})
    upstream.enqueue(call("call_t", "city_datetime", {"city": "Paris"}),  # usage (10, 5)
                     text_script(["It is noon."], usage=(42, 7)))
    events = await _query(client, gw.url, {"agentKey": "timer", "message": "time?"}, {"traceparent": TRACEPARENT})
    assert events[-1]["type"] == "run.complete"
    chat_id = first(events, "run.start")["chatId"]
    gw.stop()  # the gateway's close flushes and shuts the exporter down: every span has been sent

    assert receiver.paths and set(receiver.paths) == {"/v1/traces"}
    assert {"service.name": "agent-gateway"}.items() <= receiver.resources()[0].items()
    spans = receiver.spans()
    by_name: dict[str, list[tuple[Span, dict[str, Any]]]] = {}
    for span, attributes in spans:
        by_name.setdefault(span.name, []).append((span, attributes))
    assert sorted(by_name) == ["chat fake-gpt", "execute_tool city_datetime", "invoke_agent timer"], list(by_name)
    assert all(span.trace_id.hex() == TRACE_ID for span, _ in spans)  # the caller's trace throughout

    [(run, run_attrs)] = by_name["invoke_agent timer"]
    assert run.parent_span_id.hex() == PARENT_ID  # the incoming traceparent's span is the parent
    assert run.kind == Span.SPAN_KIND_INTERNAL
    assert run_attrs["gen_ai.operation.name"] == "invoke_agent" and run_attrs["gen_ai.agent.name"] == "timer"
    assert run_attrs["gen_ai.conversation.id"] == chat_id and run_attrs["agw.run.status"] == "completed"
    assert (run_attrs["gen_ai.usage.input_tokens"], run_attrs["gen_ai.usage.output_tokens"]) == (52, 12)

    calls = by_name["chat fake-gpt"]
    assert len(calls) == 2
    for span, attributes in calls:
        assert span.parent_span_id == run.span_id and span.kind == Span.SPAN_KIND_CLIENT
        assert attributes["gen_ai.operation.name"] == "chat"
        assert attributes["gen_ai.provider.name"] == attributes["gen_ai.system"] == "openai"
        assert attributes["gen_ai.request.model"] == "fake-gpt" and attributes["agw.model.key"] == "fake-openai"
        assert attributes["server.address"] == "127.0.0.1" and span.status.code != Status.STATUS_CODE_ERROR
    usage = sorted((a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) for _, a in calls)
    assert usage == [(10, 5), (42, 7)]  # exactly the scripted usage of each call
    assert sorted(a["gen_ai.response.finish_reasons"][0] for _, a in calls) == ["stop", "tool_calls"]

    [(tool, tool_attrs)] = by_name["execute_tool city_datetime"]
    assert tool.parent_span_id == run.span_id and tool.kind == Span.SPAN_KIND_INTERNAL
    assert tool_attrs["gen_ai.operation.name"] == "execute_tool"
    assert tool_attrs["gen_ai.tool.name"] == "city_datetime" and tool_attrs["gen_ai.tool.call.id"] == "call_t"


async def test_a_failed_model_call_is_an_error_span(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start, client: httpx.AsyncClient, receiver: OtlpReceiver
) -> None:
    write_agent(deploy, "plain", agent())
    gw = start_gateway({"agent": {"telemetry": {"otlp-endpoint": receiver.url + "/"}}})
    upstream.enqueue(http_error_script(400, "bad request"))  # a 4xx of the request: not retried
    events = await _query(client, gw.url, {"agentKey": "plain", "message": "hi"})
    assert events[-1]["type"] == "run.error"
    trace_id = first(events, "run.start")["traceId"]
    gw.stop()

    spans = {span.name: (span, attributes) for span, attributes in receiver.spans()}
    assert sorted(spans) == ["chat fake-gpt", "invoke_agent plain"]
    run, run_attrs = spans["invoke_agent plain"]
    model, model_attrs = spans["chat fake-gpt"]
    assert run.trace_id.hex() == model.trace_id.hex() == trace_id  # no traceparent: the run's own trace id
    assert run.parent_span_id == b"" and model.parent_span_id == run.span_id
    assert model.status.code == Status.STATUS_CODE_ERROR and model_attrs["error.type"] == "upstream_http_error"
    assert run.status.code == Status.STATUS_CODE_ERROR and run_attrs["error.type"] == "upstream_http_error"


async def test_attack_an_otlp_endpoint_with_a_password_never_shows_it_in_the_logs(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start, client: httpx.AsyncClient, receiver: OtlpReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The collector's credentials in the endpoint URL (``https://user:pass@collector``) were logged
    as they were at start-up ("exporting spans … to"); the URL is now masked first."""
    caplog.set_level(logging.DEBUG, logger="app")
    write_agent(deploy, "plain", agent())
    endpoint = receiver.url.replace("http://", "http://collector:otlp-PASSWORD-42@")
    gw = start_gateway(env={"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})
    upstream.enqueue(text_script(["hi"]))
    events = await _query(client, gw.url, {"agentKey": "plain", "message": "hi"})
    assert events[-1]["type"] == "run.complete"
    gw.stop()
    assert receiver.spans()  # the credentials still reach the collector
    started = [r.getMessage() for r in caplog.records if "exporting spans" in r.getMessage()]
    assert started == [f"exporting spans (OTLP/HTTP) to http://***@{receiver.url.removeprefix('http://')}/v1/traces"]
    assert not [r.getMessage() for r in caplog.records if "otlp-PASSWORD-42" in r.getMessage()]


async def test_attack_an_upstream_naming_a_tool_call_with_a_megabyte_gets_spans_of_bounded_size(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start, client: httpx.AsyncClient, receiver: OtlpReceiver
) -> None:
    """The model names its tool calls and their ids: a 1 MB name or id went whole into the span's name,
    its attributes and its error description. Each is cut to MAX_SPAN_TEXT characters now."""
    write_agent(deploy, "timer", agent("ONESHOT", tools=TOOLS))
    gw = start_gateway(env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url})
    huge_id, huge_name = "i" * 1_000_000, "n" * 1_000_000
    upstream.enqueue(call(huge_id, "city_datetime", {"city": "Paris"}), text_script(["ok"]),
                     call("call_2", huge_name, {"city": "Paris"}), text_script(["ok"]))
    for _ in range(2):
        events = await _query(client, gw.url, {"agentKey": "timer", "message": "time?"})
        assert events[-1]["type"] == "run.complete"
    gw.stop()
    tools = [(span, attributes) for span, attributes in receiver.spans() if span.name.startswith("execute_tool ")]
    assert len(tools) == 2
    (known, known_attrs), (unknown, unknown_attrs) = sorted(tools, key=lambda item: len(item[0].name))
    assert known.name == "execute_tool city_datetime" and known_attrs["gen_ai.tool.call.id"].startswith("iii")
    assert unknown.name.startswith("execute_tool nnn") and unknown.status.code == Status.STATUS_CODE_ERROR
    for text in (known_attrs["gen_ai.tool.call.id"], unknown.name, unknown_attrs["gen_ai.tool.name"],
                 unknown.status.message):
        assert 100 < len(text) <= 1024


def test_without_an_endpoint_opentelemetry_sdk_is_never_imported(deploy: Path, upstream: FakeUpstream) -> None:
    """Zero cost when off: a gateway serving a run, in a fresh interpreter, loads no opentelemetry SDK."""
    write_agent(deploy, "plain", agent())
    upstream.enqueue(text_script(["Hello."]))
    program = f"""
import sys, httpx
from pathlib import Path
from tests.support.server import GatewayServer
with GatewayServer(Path({str(deploy)!r})) as gw:
    answer = httpx.post(gw.url + "/api/ap/query", json={{"agentKey": "plain", "message": "hi", "stream": False}},
                        headers={{"traceparent": {TRACEPARENT!r}}}, timeout=30).json()
    assert answer["data"]["status"] == "completed", answer
    assert answer["data"]["events"][2]["traceId"] == {TRACE_ID!r}
loaded = sorted(m for m in sys.modules if m.startswith(("opentelemetry.sdk", "opentelemetry.exporter")))
print("loaded:", loaded)
"""
    done = subprocess.run([sys.executable, "-c", program], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "loaded: []" in done.stdout, done.stdout
