"""Relaxed JSON for definition files (SPEC §3 and §3.2 "Triple-quoted prompts").

Definition JSON may contain ``//`` and ``/* */`` comments, trailing commas before
``}``/``]`` and, for any key whose name contains ``systemPrompt`` (case-insensitive),
a ``\"\"\"…\"\"\"`` multi-line string. ``preprocess`` rewrites such text into strict JSON
(keeping line numbers intact, so parse errors still point at the right line);
``loads`` preprocesses and parses with orjson. Both are pure functions; every failure
is a ``DefinitionError`` whose message starts with ``line N, column M:``.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

import orjson

from app.errors import DefinitionError

_TRIPLE = '"""'
_PROMPT_KEY = "systemprompt"
#: where the plain copying stops: a string, a comment or a closing bracket (a trailing comma) may start
_SPECIAL = re.compile(r'["/}\]]')
#: inside a string: its end, an escape, or a newline (an unterminated string)
_IN_STRING = re.compile(r'["\\\n]')
_NOT_NEWLINE = re.compile(r"[^\n]")


def _position(text: str, index: int) -> tuple[int, int]:
    """1-based (line, column) of ``index`` in ``text``."""
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return line, column


def _error(text: str, index: int, message: str) -> DefinitionError:
    line, column = _position(text, index)
    return DefinitionError(f"line {line}, column {column}: {message}")


def dedent_block(raw: str) -> str:
    """The value of a triple-quoted block: first/last blank line dropped, common indent removed."""
    lines = raw.split("\n")
    if lines and not lines[0].strip():
        lines.pop(0)
    if lines and not lines[-1].strip():
        lines.pop()
    return textwrap.dedent("\n".join(lines))


def _key_before(out: list[str], last_string_end: int, last_string: str) -> str | None:
    """The key a value at the end of ``out`` belongs to (``"key" :`` just before it), if any."""
    i = len(out) - 1
    while i >= 0 and out[i].isspace():
        i -= 1
    if i < 0 or out[i] != ":":
        return None
    i -= 1
    while i >= 0 and out[i].isspace():
        i -= 1
    return last_string if i + 1 == last_string_end else None


def preprocess(text: str) -> str:
    """Rewrite relaxed definition JSON into strict JSON with the same line structure.

    Comments become spaces (newlines kept), trailing commas become spaces, and a
    triple-quoted ``systemPrompt`` value becomes a JSON string followed by the newlines
    it spanned. Raises ``DefinitionError`` naming the line of an unterminated comment,
    string or triple-quoted block, or of a triple-quoted value under another key.
    """
    if text.startswith("\ufeff"):
        text = text[1:]
    out: list[str] = []
    last_string = ""
    last_string_end = -1
    i = 0
    n = len(text)
    while i < n:
        # everything up to the next quote, slash or closing bracket is copied as it is (in C, not per character)
        found = _SPECIAL.search(text, i)
        stop = found.start() if found is not None else n
        if stop > i:
            out.extend(text[i:stop])
            i = stop
            continue
        ch = text[i]
        if text.startswith(_TRIPLE, i):
            key = _key_before(out, last_string_end, last_string)
            if key is None or _PROMPT_KEY not in key.lower():
                where = f"key {key!r}" if key is not None else "this position"
                raise _error(
                    text, i, f'triple-quoted strings are only allowed for systemPrompt keys, not at {where}'
                )
            end = text.find(_TRIPLE, i + 3)
            if end < 0:
                raise _error(text, i, 'unterminated """ block')
            raw = text[i + 3 : end]
            out.extend(orjson.dumps(dedent_block(raw)).decode())
            out.extend("\n" * raw.count("\n"))
            i = end + 3
            continue
        if ch == '"':
            start = i
            i += 1
            while True:
                inner = _IN_STRING.search(text, i)
                if inner is None:
                    raise _error(text, start, "unterminated string")
                i = inner.start()
                if text[i] == "\\":
                    i += 2
                    continue
                if text[i] == "\n":
                    raise _error(text, start, "unterminated string")
                break
            i += 1
            out.extend(text[start:i])
            last_string = text[start + 1 : i - 1]
            last_string_end = len(out)
            continue
        if ch == "/" and text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            out.extend(" " * (end - i))
            i = end
            continue
        if ch == "/" and text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise _error(text, i, "unterminated /* comment")
            block = text[i : end + 2]
            out.extend(_NOT_NEWLINE.sub(" ", block))
            i = end + 2
            continue
        if ch in "}]":
            j = len(out) - 1
            while j >= 0 and out[j].isspace():
                j -= 1
            if j >= 0 and out[j] == ",":
                out[j] = " "
        out.append(ch)
        i += 1
    return "".join(out)


def loads(text: str) -> Any:
    """Parse relaxed definition JSON. Errors name the line and column."""
    strict = preprocess(text)
    try:
        return orjson.loads(strict)
    except orjson.JSONDecodeError as exc:
        raise DefinitionError(f"line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc


def loads_object(text: str) -> dict[str, Any]:
    """Parse relaxed definition JSON whose top level must be an object."""
    value = loads(text)
    if not isinstance(value, dict):
        raise DefinitionError(f"line 1, column 1: the top level must be a JSON object, found {type(value).__name__}")
    return value
