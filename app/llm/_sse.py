"""Server-sent-events reading shared by the adapters: body bytes → text lines → ``(event, data)`` → deltas.

Each ``data:`` line is handed over the moment it is read (both vendors send one
``data:`` line per message), so nothing waits for the blank line that ends the message.
``LineSplitter`` splits the body where the event-stream grammar does, and only there;
``EventReader`` picks the ``data:`` lines; a vendor's ``Translator`` turns each into deltas.
All three are plain objects fed one chunk at a time: the client's one loop over the body
drives them (see ``LineSplitter`` for why not a chain of async generators).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import orjson

from app.errors import UpstreamHTTPError, UpstreamProtocolError
from app.llm.deltas import Delta
from app.paths import ascii_int

MAX_ERROR_BODY_BYTES = 4096


#: the longest line an upstream event stream may send (a delta is a few hundred bytes; a whole
#: image as base64 in one chunk still fits): beyond it the stream is a protocol error, not memory
MAX_LINE_BYTES = 16 * 1024 * 1024


class LineSplitter:
    """The lines of an event-stream body as text, each the moment its end is fed.

    Lines end at CRLF, LF or CR and nowhere else (the HTML event-stream grammar). httpx's
    ``aiter_lines`` splits like ``str.splitlines``, also at U+0085, U+2028 and U+2029, which
    JSON strings may carry unescaped: a delta holding one arrived cut in two and the run failed
    on a chunk that is "not JSON". Each line is decoded alone, as UTF-8 (SSE's only encoding;
    line ends are ASCII, so no character is cut), malformed bytes replaced as httpx does. A CR
    at the end of a chunk ends its line at once; a LF opening the next chunk is then its pair.
    ``end()`` gives a last line without its end. A line longer than ``max_line_bytes`` raises
    ``UpstreamProtocolError`` (its parts are kept in a list meanwhile: no quadratic copying).

    Synchronous on purpose: ``stream_chat``'s one loop over the body drives it, so no async
    generator of its own sits between the socket and the run (docs/DECISIONS.md, "One async
    generator from the upstream body to the run").
    """

    __slots__ = ("_after_cr", "_max", "_parts", "_size")

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._parts: list[bytes] = []  # the start of a line whose end has not come yet
        self._size = 0
        self._after_cr = False
        self._max = max_line_bytes

    def feed(self, chunk: bytes) -> list[str]:
        """The lines that ``chunk`` ends, in order (none when it ends none)."""
        if self._after_cr and chunk:
            self._after_cr = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if b"\r" in chunk:
            self._after_cr = chunk[-1:] == b"\r"
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        parts = self._parts
        if b"\n" not in chunk:
            if chunk:
                parts.append(chunk)
                self._size += len(chunk)
                if self._size > self._max:
                    raise UpstreamProtocolError(f"upstream sent a line longer than {self._max} bytes")
            return []
        if parts:
            parts.append(chunk)
            chunk = b"".join(parts)
            self._parts = parts = []
            self._size = 0
        lines = chunk.split(b"\n")
        rest = lines.pop()
        if rest:
            parts.append(rest)
            self._size = len(rest)
        return [line.decode("utf-8", "replace") for line in lines]

    def end(self) -> list[str]:
        """The last line, when the body ended without ending it."""
        if not self._parts:
            return []
        line = b"".join(self._parts).decode("utf-8", "replace")
        self._parts, self._size = [], 0
        return [line]


class EventReader:
    """Body bytes → ``(event name or None, data)`` for every ``data:`` line; comments and ids are skipped."""

    __slots__ = ("_event", "_lines")

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._lines = LineSplitter(max_line_bytes)
        self._event: str | None = None

    def feed(self, chunk: bytes) -> list[tuple[str | None, str]]:
        return self._data(self._lines.feed(chunk))

    def end(self) -> list[tuple[str | None, str]]:
        return self._data(self._lines.end())

    def _data(self, lines: list[str]) -> list[tuple[str | None, str]]:
        out: list[tuple[str | None, str]] = []
        for line in lines:
            if not line:
                self._event = None
                continue
            if line[0] == ":":
                continue
            name, _, value = line.partition(":")
            if value[:1] == " ":
                value = value[1:]
            if name == "data":
                out.append((self._event, value))
            elif name == "event":
                self._event = value.strip() or None
        return out


class Translator(Protocol):
    """One vendor's stream grammar: ``data:`` payloads → deltas, until its end marker."""

    #: the end marker was read: whatever follows is not part of the answer
    done: bool

    def event(self, name: str | None, data: str) -> list[Delta]:
        """The deltas of one ``data:`` line (raises on an error object or a payload that is not JSON)."""

    def end(self) -> None:
        """The body ended: raises ``UpstreamDisconnected`` unless the answer was complete."""


def deltas_of(events: Iterable[tuple[str | None, str]], translator: Translator) -> Iterator[Delta]:
    """The deltas of ``events``, in order, up to the end marker (``translator.done``)."""
    for name, data in events:
        yield from translator.event(name, data)
        if translator.done:
            return


def parse_json(data: str) -> Any:
    """Decode one ``data:`` payload; anything that is not JSON is a protocol error.

    orjson refuses a string escape that is half of a surrogate pair (``"\\ud83d"``), which is
    valid JSON: a server that cuts its text between the two halves of an emoji sends it. Such a
    payload is decoded by the standard library instead, and the lone half becomes U+FFFD (it
    could not be written to a chat file or an event, which must be UTF-8)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        try:
            return _scrub(json.loads(data))
        except ValueError:
            pass
        preview = data if len(data) <= 200 else data[:200] + "…"
        raise UpstreamProtocolError(f"upstream sent a chunk that is not JSON: {preview!r}") from exc


def _scrub(value: Any) -> Any:
    """``value`` with every lone surrogate in its strings replaced by U+FFFD (pairs are joined)."""
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, list):
        return [_scrub(item) for item in value]
    if isinstance(value, dict):
        return {_scrub(key): _scrub(item) for key, item in value.items()}
    return value


def count(value: Any) -> int:
    """A token count or index from the upstream: a non-negative int, else 0 (never raises)."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, float) and value == value and abs(value) != float("inf"):
        return max(int(value), 0)
    if isinstance(value, str):
        return ascii_int(value.strip()) or 0
    return 0


def wire_index(value: Any) -> int | None:
    """An index as the upstream sent it: an int (not a bool), else ``None``."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def arguments_fragment(value: Any) -> str:
    """A tool call's ``arguments`` as text: a string as sent; an object or array (some servers
    send the arguments parsed) as its JSON; anything else nothing."""
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode()
    return ""


def json_object(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one (for optional nested objects)."""
    return value if isinstance(value, dict) else {}


def vendor_message(body: str) -> str:
    """The human message of a vendor error body (OpenAI or Anthropic shape), else the text."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.strip()[:500]
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            message = error.get("message") or error.get("msg") or error.get("detail")
            if isinstance(message, str) and message:
                return message
        elif isinstance(error, str) and error:
            return error
        message = data.get("message") or data.get("msg")
        if isinstance(message, str) and message:
            return message
    return body.strip()[:500]


def in_stream_error(error: Any, default_status: int = 502) -> UpstreamHTTPError:
    """An error object the vendor sent inside an otherwise successful stream."""
    if isinstance(error, dict):
        message = str(error.get("message") or error.get("type") or "unknown error")
        code = error.get("code")
        status = code if isinstance(code, int) and 400 <= code <= 599 else default_status
    else:
        message, status = str(error), default_status
    return UpstreamHTTPError(f"upstream error in stream: {message}", http_status=status, body=message)


__all__ = ["MAX_ERROR_BODY_BYTES", "MAX_LINE_BYTES", "EventReader", "LineSplitter", "Translator", "deltas_of",
           "in_stream_error", "json_object", "parse_json", "vendor_message"]
