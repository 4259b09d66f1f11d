"""Forking a chat: time travel (SPEC §20, ``POST /api/ap/chat/fork``).

A fork is a new chat holding a copy of the source chat's lines up to a point — ``before`` a
run (the runs before it) or ``after`` it (that run included) — so continuing the new chat
sends the model exactly the copied history (SPEC §8 replay), and the source stays as it was.

``cut`` decides what is copied, from the source's lines alone (pure, no I/O):

* the runs in file order up to the point, every line of each, unchanged but for the chat id
  (``chatId`` of the line and of a query's ``query``) and the owner (the caller);
* the ``upload`` lines written before the cut (files attached for the question at the cut
  belong to the prefix, so a re-run can send the same references);
* never an earlier ``fork`` line: a fork of a fork names only its immediate source.

The new chat starts with one ``fork`` line (our extension of the line kinds of SPEC §8)::

    {"_type": "fork", "chatId", "updatedAt", "owner",
     "source": {"chatId", "runId", "position", "node"?}, "resume"?: {…}}

It carries no ``runId``, so replay and the history's runs skip it; ``GET /api/ap/chat`` shows
``source`` as ``forkedFrom``. ``resume`` is the GRAPH checkpoint a fork from a node restarts
from (SPEC §21): the next GRAPH run of the chat starts there (``pending_resume``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from app.memory.lines import LINE_QUERY, LINE_RUN, LINE_STEP, LINE_UPLOAD, group_runs, messages_of, text_of

LINE_FORK = "fork"
Position = Literal["before", "after"]
POSITIONS: tuple[Position, ...] = ("before", "after")
#: the built-in tool whose results name published artifacts (SPEC §23)
_ARTIFACT_TOOL = "_artifact_publish_"


class ForkPointError(LookupError):
    """The fork point is not in the chat (an unknown run); the message says why."""


@dataclass(frozen=True, slots=True)
class Cut:
    """What a fork copies: the source lines (in order) and the runs among them."""

    lines: tuple[Mapping[str, Any], ...]
    run_ids: tuple[str, ...]

    def file_ids(self) -> set[str]:
        """Ids of the chat's stored files the copied lines name (uploads, references, artifacts)."""
        return set(_file_ids(self.lines))


def cut(lines: Sequence[Mapping[str, Any]], run_id: str, position: Position) -> Cut:
    """The lines a fork at ``position`` of run ``run_id`` copies (see the module docstring).

    Raises ``ForkPointError`` when ``run_id`` is not a run of these lines."""
    runs = list(group_runs(lines))
    if run_id not in runs:
        raise ForkPointError(f"run {run_id} is not a run of this chat")
    at = runs.index(run_id) + (1 if position == "after" else 0)
    kept = runs[:at]
    keep = set(kept)  # looked up once per line: a list made a chat of 20,000 runs take 15 s
    first_dropped = runs[at] if at < len(runs) else None
    copied: list[Mapping[str, Any]] = []
    for line in lines:
        line_run = line.get("runId")
        if isinstance(line_run, str) and line_run:
            if line_run == first_dropped:
                break  # runs never interleave (SPEC §8): nothing after this belongs to the prefix
            if line_run in keep:
                copied.append(line)
        elif line.get("_type") == LINE_UPLOAD:
            copied.append(line)
    return Cut(tuple(copied), tuple(kept))


def forked_lines(source: Cut, *, new_chat_id: str, owner: str, header: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The new chat's lines: ``header`` (the fork line) first, then the copied lines re-homed."""
    out: list[dict[str, Any]] = [dict(header)]
    for line in source.lines:
        copy = dict(line)
        if "chatId" in copy:
            copy["chatId"] = new_chat_id
        if "owner" in copy or copy.get("_type") in (LINE_QUERY, LINE_UPLOAD):
            copy["owner"] = owner
        query = copy.get("query")
        if copy.get("_type") == LINE_QUERY and isinstance(query, Mapping):
            copy["query"] = {**query, "chatId": new_chat_id}
        out.append(copy)
    return out


def fork_header(*, new_chat_id: str, owner: str, now: int, source: Mapping[str, Any],
                resume: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``fork`` line that opens a forked chat."""
    header: dict[str, Any] = {"_type": LINE_FORK, "chatId": new_chat_id, "updatedAt": now, "owner": owner,
                              "source": dict(source)}
    if resume is not None:
        header["resume"] = dict(resume)
    return header


def fork_source(lines: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """``source`` of the chat's ``fork`` line (what ``GET /api/ap/chat`` shows as ``forkedFrom``)."""
    for line in lines:
        if line.get("_type") == LINE_FORK and isinstance(line.get("source"), Mapping):
            return dict(line["source"])
    return None


def pending_resume(lines: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The GRAPH checkpoint a fork from a node left for the chat's next run of the forked agent, or
    ``None``.

    Only the first such run after the fork line uses it: once a run of that agent (its query line
    names it; a fork line from before forks named their agent: any run) has its ``run`` line (it
    ended) after the fork line, nothing is pending any more. A run of another agent in between
    leaves it pending: the restart is not that agent's to use, nor to throw away."""
    resume: dict[str, Any] | None = None
    agents: dict[Any, Any] = {}  # runId → agentKey of the runs queried after the fork line
    for line in lines:
        kind = line.get("_type")
        if kind == LINE_FORK:
            found = line.get("resume")
            resume = dict(found) if isinstance(found, Mapping) else None
        elif resume is None:
            continue
        elif kind == LINE_QUERY:
            query = line.get("query")
            agents[line.get("runId")] = query.get("agentKey") if isinstance(query, Mapping) else None
        elif kind == LINE_RUN:
            wanted = resume.get("agentKey")
            if wanted is None or agents.get(line.get("runId"), wanted) == wanted:
                resume = None
    return resume


def _file_ids(lines: Sequence[Mapping[str, Any]]) -> Iterator[str]:
    for line in lines:
        kind = line.get("_type")
        if kind == LINE_UPLOAD:
            yield from _ids([line.get("reference")], "id")
        elif kind == LINE_QUERY and isinstance(line.get("query"), Mapping):
            yield from _ids(line["query"].get("references"), "id")
        elif kind == LINE_STEP:
            for message in messages_of(line):
                yield from _ids(message.get("_references"), "id")
                if message.get("role") == "tool" and message.get("name") == _ARTIFACT_TOOL:
                    yield from _artifact_ids(text_of(message.get("content")))


def _ids(items: Any, key: str) -> Iterator[str]:
    for item in items if isinstance(items, list) else []:
        value = item.get(key) if isinstance(item, Mapping) else None
        if isinstance(value, str) and value:
            yield value


def _artifact_ids(text: str | None) -> Iterator[str]:
    try:
        result = orjson.loads(text) if text else None
    except orjson.JSONDecodeError:
        return
    if isinstance(result, Mapping):
        yield from _ids(result.get("artifacts"), "artifactId")


__all__ = [
    "LINE_FORK",
    "POSITIONS",
    "Cut",
    "ForkPointError",
    "Position",
    "cut",
    "fork_header",
    "fork_source",
    "forked_lines",
    "pending_resume",
]
