"""Reading an upstream event stream's lines (``app.llm._sse.LineSplitter``, ``EventReader``, issue 13).

Lines end at CRLF, LF or CR only (the HTML event-stream grammar). httpx's ``aiter_lines``, used
before, split like ``str.splitlines``: at U+0085, U+2028 and U+2029 too, which JSON strings
carry unescaped (orjson, the fake upstream's encoder, writes them raw). The end-to-end tests
below failed on it: the delta was cut in two and the run ended on "not JSON".
"""

from __future__ import annotations

from collections.abc import Iterable

import httpx
import pytest

from app.devtools import FakeUpstream, Finish, Text, ToolArgs, ToolCall
from app.errors import UpstreamProtocolError
from app.llm._sse import MAX_LINE_BYTES, EventReader, LineSplitter
from app.llm.client import stream_chat
from app.llm.deltas import ContentDelta, ToolCallArgs
from tests.llm.support import make_request

#: every character ``str.splitlines`` ends a line at, besides CR and LF
UNIVERSAL_BREAKS = "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def _lines(pieces: Iterable[bytes], **kwargs: int) -> list[str]:
    splitter = LineSplitter(**kwargs)
    return [line for piece in pieces for line in splitter.feed(piece)] + splitter.end()


@pytest.mark.parametrize("end", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_each_line_end_of_the_grammar_ends_a_line(end: bytes) -> None:
    body = b"event: a" + end + b"data: 1" + end + end + b"data: 2" + end + end
    assert _lines([body]) == ["event: a", "data: 1", "", "data: 2", ""]


def test_a_crlf_cut_between_two_chunks_is_one_line_end() -> None:
    assert _lines([b"data: 1\r", b"\ndata: 2\r", b"\n\r", b"\n"]) == ["data: 1", "data: 2", ""]


def test_a_cr_ending_a_chunk_ends_its_line_at_once() -> None:
    """Zero buffering: the line is handed over before the next chunk (which may be long in coming)."""
    splitter = LineSplitter()
    assert splitter.feed(b"data: 1\r") == ["data: 1"]
    assert splitter.feed(b"\ndata: 2\r") == ["data: 2"]  # the LF pairs with the CR before it
    assert splitter.feed(b"\n") == []
    assert splitter.end() == []


def test_a_data_line_is_an_event_the_moment_its_line_ends() -> None:
    """The reader hands over each ``data:`` line at once, not when the blank line ends the message."""
    reader = EventReader()
    assert reader.feed(b"event: delta\ndata: {\"a\"") == []
    assert reader.feed(b":1}\n") == [("delta", '{"a":1}')]
    assert reader.feed(b"\n: a comment\nid: 7\ndata:no space\n\n") == [(None, "no space")]
    assert reader.feed(b"data: last") == []
    assert reader.end() == [(None, "last")]


@pytest.mark.parametrize("char", list(UNIVERSAL_BREAKS), ids=[f"U+{ord(c):04X}" for c in UNIVERSAL_BREAKS])
def test_characters_that_splitlines_breaks_at_stay_inside_the_line(char: str) -> None:
    line = f'data: {{"content":"a{char}b"}}'
    assert _lines([(line + "\n\n").encode()]) == [line, ""]


def test_every_cut_of_the_body_gives_the_same_lines() -> None:
    body = 'event: x\r\ndata: {"t":"é\u2028✓"}\r\rdata: 2\n\ndata: last'.encode()
    whole = _lines([body])
    assert whole == ["event: x", 'data: {"t":"é\u2028✓"}', "", "data: 2", "", "data: last"]
    for cut in range(1, len(body)):  # a multi-byte character or a CRLF cut in two included
        assert _lines([body[:cut], body[cut:]]) == whole, cut
    assert _lines([body[i:i + 1] for i in range(len(body))]) == whole


def test_malformed_utf8_is_replaced_not_raised() -> None:
    assert _lines([b"data: \xff\xfeok\n"]) == ["data: \ufffd\ufffdok"]


def test_attack_an_endless_line_is_cut_off_at_the_limit() -> None:
    """An upstream that never ends its line must not take the gateway's memory with it."""

    splitter = LineSplitter(max_line_bytes=10_000)
    with pytest.raises(UpstreamProtocolError, match="longer than 10000 bytes"):
        for _ in range(20):
            splitter.feed(b"x" * 1000)
    # the default leaves room for a whole base64 image in one line
    assert MAX_LINE_BYTES >= 16 * 1024 * 1024
    assert _lines([b"data: " + b"y" * 20_000, b"\n"], max_line_bytes=30_000) == ["data: " + "y" * 20_000]


@pytest.mark.parametrize("protocol", ["OPENAI", "ANTHROPIC"])
@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\x85"], ids=["U+2028", "U+2029", "U+0085"])
async def test_a_delta_holding_a_unicode_line_separator_arrives_whole(fake: FakeUpstream, protocol: str,
                                                                     char: str) -> None:
    text = f"line one{char}line two"
    arguments = f'{{"q":"a{char}b"}}'
    fake.enqueue([Text(text), ToolCall(0, "call_1", "search"), ToolArgs(0, arguments), Finish("tool_calls")])
    async with httpx.AsyncClient() as client:
        deltas = [d async for d in stream_chat(client, make_request(fake.url, protocol))]  # type: ignore[arg-type]
    assert [d.text for d in deltas if isinstance(d, ContentDelta)] == [text]
    assert "".join(d.fragment for d in deltas if isinstance(d, ToolCallArgs)) == arguments
