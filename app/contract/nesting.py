"""How deep JSON from outside may nest (request bodies, submitted answers, tool arguments and results).

orjson reads up to 1024 levels of objects/arrays but writes at most 254: a value nested deeper
than that is accepted, then breaks every encoder it reaches — the SSE stream is cut mid-run with
no terminal event, and the chat file's writer refuses the line. Values from outside are checked
against ``MAX_JSON_DEPTH`` where they enter, counted without recursion.
"""

from __future__ import annotations

from typing import Any

#: deepest object/array nesting accepted from outside (a scalar is 0); far below orjson's 254,
#: which leaves room for the envelopes a value travels in (events, chat lines, adapters)
MAX_JSON_DEPTH = 64


def nesting_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """How deep ``value`` nests objects/arrays (a scalar is 0), counted iteratively; stops past ``limit``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        stack.extend((child, depth) for child in children)
    return deepest


def too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    return nesting_depth(value, limit) > limit


def depth_problem(limit: int = MAX_JSON_DEPTH) -> str:
    return f"nested deeper than the limit of {limit} levels of objects/arrays"
