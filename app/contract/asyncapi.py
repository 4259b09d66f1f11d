"""The run events of SPEC §6 as an AsyncAPI 3.0 document, generated from ``events.EVENT_TYPES``.

Nothing here is written by hand per event: each class of the closed union becomes one message
whose payload schema lists the class's dataclass fields under their wire (camelCase) names, plus
the ``type``/``seq``/``timestamp`` every event carries (``Stamped.wire``). The same walk gives the
event table of ``docs/API.md`` (``event_table_markdown``), so the document, the served
``/asyncapi.json`` and the code cannot drift apart.

Which fields are required follows what the wire does: ``Event.to_wire`` omits every ``None``
value, so a field is required when it has no default and its type cannot be ``None`` (a field
typed ``Any`` may hold ``None`` and is then absent). A field type the mapping does not know fails
fast with a ``TypeError`` naming the class and field: teach ``_schema_of`` the new type.

``python -m app.contract.asyncapi`` prints the document; ``--markdown`` prints the event table.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from app.contract.events import EVENT_TYPES, TERMINAL_TYPES, Event

ASYNCAPI_VERSION = "3.0.0"

#: where the SSE streams are served (SPEC §4, §15); addresses are relative to the gateway's base URL
STREAM_CHANNELS: tuple[tuple[str, str, str], ...] = (
    ("queryStream", "/api/ap/query",
     "`POST /api/ap/query` with `stream` true (the default): the events of the run the query starts."),
    ("runStream", "/api/ap/run/stream",
     "`GET /api/ap/run/stream?runId=&after=`: the run's events with `seq > after` (or the `Last-Event-ID` "
     "header), then the live ones until the run ends; same events, same `seq` as the original stream."),
    ("chatStream", "/api/ap/chat/stream",
     "`GET /api/ap/chat/stream?chatId=&after=`: the same for the chat's active run."),
)

#: the fields ``Stamped.wire`` adds to every event, with their schemas
ENVELOPE_FIELDS: Mapping[str, Mapping[str, Any]] = {
    "seq": {"type": "integer", "minimum": 1, "description": "1, 2, 3 … per run; also the SSE `id:`"},
    "timestamp": {"type": "integer", "minimum": 0, "description": "epoch milliseconds"},
}

FRAMING = (
    "Each event is one Server-Sent-Events message: `event: message`, `id: <seq>`, and one `data:` line "
    "holding the event's JSON object. A `: heartbeat` comment flows while nothing else does "
    "(`server.sse-heartbeat-seconds`, 15 s). The stream ends after the first terminal event ({terminal}). "
    "Order: `request.query` → `chat.start` (a chat's first run) → `run.start` → the run's reasoning, "
    "content, tool, action, plan and task events as they happen → the terminal event. "
    "The desktop sidecar (JSON-RPC over stdio) sends the same event objects as `agent.event` "
    "notifications `{{requestId, id?, attachId?, event}}` (`id`: the JSON-RPC id of the call they belong to)."
)


def wire_name(name: str) -> str:
    """``tool_id`` → ``toolId``: the wire name of a dataclass field (as ``Event.to_wire`` does)."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def class_name(event_type: str) -> str:
    return EVENT_TYPES[event_type].__name__


@dataclasses.dataclass(frozen=True, slots=True)
class WireField:
    """One field of an event as it appears on the wire."""

    name: str
    schema: Mapping[str, Any]
    #: the field has no default: the producer always sets it
    always_set: bool
    #: in the schema's ``required``: always set and never ``None`` (``to_wire`` drops ``None``)
    required: bool


def _optional_parts(hint: Any) -> tuple[Any, bool]:
    """``(X, True)`` for ``X | None``; ``(hint, False)`` otherwise."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        rest = [arg for arg in args if arg is not type(None)]
        if len(rest) == 1 and len(rest) < len(args):
            return rest[0], True
    return hint, False


def _schema_of(hint: Any, where: str) -> dict[str, Any]:
    """The JSON schema of one (non-optional) field type."""
    if hint is Any:
        return {}
    if hint is str:
        return {"type": "string"}
    if hint is bool:
        return {"type": "boolean"}
    if hint is int:
        return {"type": "integer"}
    if hint is float:
        return {"type": "number"}
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list and len(args) == 1:
        items = _schema_of(args[0], where)
        return {"type": "array", "items": items} if items else {"type": "array"}
    if origin is dict and len(args) == 2 and args[0] is str:
        values = _schema_of(args[1], where)
        return {"type": "object", "additionalProperties": values} if values else {"type": "object"}
    raise TypeError(f"{where}: no JSON schema for the field type {hint!r}; teach app.contract.asyncapi._schema_of")


def wire_fields(cls: type[Event]) -> list[WireField]:
    """The class's own fields in declaration order, with wire names, schemas and required flags."""
    hints = typing.get_type_hints(cls)
    fields: list[WireField] = []
    for field in dataclasses.fields(cls):
        inner, optional = _optional_parts(hints[field.name])
        has_default = field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING
        schema = _schema_of(inner, f"{cls.__name__}.{field.name}")
        always_set = not has_default
        # to_wire drops None values: a field that may hold None is absent then
        required = always_set and not optional and inner is not Any
        if always_set and not required:
            schema = {**schema, "description": "always set by the producer; absent when its value is null"}
        fields.append(WireField(wire_name(field.name), schema, always_set, required))
    return fields


def payload_schema(event_type: str) -> dict[str, Any]:
    """The JSON schema (draft 07 subset, as AsyncAPI schemas are) of one event's wire object."""
    cls = EVENT_TYPES[event_type]
    fields = wire_fields(cls)
    properties: dict[str, Any] = {"type": {"const": event_type, "description": "the event type"}}
    properties.update({name: dict(schema) for name, schema in ENVELOPE_FIELDS.items()})
    properties.update({field.name: dict(field.schema) for field in fields})
    return {
        "type": "object",
        "title": event_type,
        "properties": properties,
        "required": ["type", *ENVELOPE_FIELDS, *(field.name for field in fields if field.required)],
        # the union is closed (SPEC §6: e.g. never a ``rawEvent``): anything else is a contract break
        "additionalProperties": False,
    }


def _message(event_type: str) -> dict[str, Any]:
    cls = EVENT_TYPES[event_type]
    fields = wire_fields(cls)
    summary = ", ".join(field.name + ("" if field.always_set else "?") for field in fields)
    message: dict[str, Any] = {
        "name": event_type,
        "title": event_type,
        "summary": summary or "(no fields beyond type, seq, timestamp)",
        "contentType": "application/json",
        "tags": [{"name": event_type.split(".", 1)[0]}],
        "payload": {"$ref": f"#/components/schemas/{cls.__name__}"},
        "x-python-class": f"{cls.__module__}.{cls.__qualname__}",
    }
    if event_type in TERMINAL_TYPES:
        message["x-terminal"] = True
    return message


def _terminal_list() -> str:
    return ", ".join(f"`{event_type}`" for event_type in EVENT_TYPES if event_type in TERMINAL_TYPES)


def asyncapi_document(version: str) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the gateway's event streams (served at ``GET /asyncapi.json``)."""
    event_types = list(EVENT_TYPES)
    schemas: dict[str, Any] = {class_name(t): payload_schema(t) for t in event_types}
    schemas["RunEvent"] = {
        "title": "RunEvent",
        "description": "Any run event: the closed union, told apart by `type`.",
        "discriminator": "type",
        "oneOf": [{"$ref": f"#/components/schemas/{class_name(t)}"} for t in event_types],
    }
    channel_messages = {t: {"$ref": f"#/components/messages/{t}"} for t in event_types}
    channels = {
        key: {"address": address, "title": address, "description": description, "messages": channel_messages}
        for key, address, description in STREAM_CHANNELS
    }
    operations = {
        f"send{key[:1].upper()}{key[1:]}": {
            "action": "send",
            "title": f"the gateway streams run events on {address}",
            "channel": {"$ref": f"#/channels/{key}"},
            "messages": [{"$ref": f"#/channels/{key}/messages/{t}"} for t in event_types],
        }
        for key, address, _ in STREAM_CHANNELS
    }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "Agent Gateway run events",
            "version": version,
            "description": (
                "The Server-Sent-Events streams of the gateway (SPEC §6, §15), generated from "
                "`app/contract/events.py`. Every event carries `type`, `seq` and `timestamp`; other "
                "field names are camelCase; a field without a value is omitted, never `null`.\n\n"
                + FRAMING.format(terminal=_terminal_list())
            ),
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": {t: _message(t) for t in event_types},
            "schemas": schemas,
        },
    }


def _type_label(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type")
    if kind is None:
        return "any"
    if kind == "array":
        items = schema.get("items")
        return f"{_type_label(items)}[]" if isinstance(items, Mapping) else "array"
    return str(kind)


def event_table_markdown(event_types: Sequence[str] | None = None) -> str:
    """The event table of ``docs/API.md``: one row per event type, required and optional fields."""
    rows = [
        "| event | fields | optional fields |",
        "|---|---|---|",
    ]
    for event_type in event_types or list(EVENT_TYPES):
        fields = wire_fields(EVENT_TYPES[event_type])

        def cell(wanted: bool, fields: list[WireField] = fields) -> str:
            names = [f"`{f.name}` ({_type_label(f.schema)})" for f in fields if f.always_set is wanted]
            return ", ".join(names) or "—"

        marker = " (terminal)" if event_type in TERMINAL_TYPES else ""
        rows.append(f"| `{event_type}`{marker} | {cell(True)} | {cell(False)} |")
    return "\n".join(rows) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--markdown"]:
        sys.stdout.write(event_table_markdown())
        return 0
    if args:
        sys.stderr.write("usage: python -m app.contract.asyncapi [--markdown]\n")
        return 2
    sys.stdout.write(json.dumps(asyncapi_document("dev"), indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
