"""``Stamped.from_wire``: every event of the closed union comes back from its wire dict unchanged."""

from __future__ import annotations

import dataclasses
import tracemalloc

import orjson
import pytest

from app.contract.events import EVENT_TYPES, ContentDeltaEvent, Event, Stamped


def _value(annotation: str, name: str) -> object:
    kind = annotation.split("|")[0].strip()
    if kind.startswith("list"):
        return [{"item": name}]
    if kind.startswith("dict"):
        return {"key": name, "n": 1}
    if kind == "int":
        return 7
    if kind == "float":
        return 1.5
    if kind == "bool":
        return True
    if kind == "Any":
        return {"any": [name]}
    return f"{name}-value"


def _full(event_type: type[Event]) -> Event:
    """An instance with every field set (optional ones too)."""
    return event_type(**{f.name: _value(str(f.type), f.name) for f in dataclasses.fields(event_type)})


@pytest.mark.parametrize("event_type", list(EVENT_TYPES.values()), ids=list(EVENT_TYPES))
def test_every_event_round_trips_through_its_wire_dict(event_type: type[Event]) -> None:
    stamped = Stamped(_full(event_type), 12, 1_700_000_000_000)
    wire = orjson.loads(orjson.dumps(stamped.wire()))  # as it crosses Redis: JSON, not shared objects
    again = Stamped.from_wire(wire)
    assert type(again.event) is event_type and again.event == stamped.event
    assert (again.seq, again.timestamp, again.wire()) == (12, 1_700_000_000_000, stamped.wire())


def test_unknown_fields_are_ignored_and_missing_optionals_stay_none() -> None:
    again = Stamped.from_wire({"type": "content.delta", "contentId": "c1", "delta": "hi", "seq": 3, "timestamp": 9,
                               "somethingNew": True})
    assert again.event == EVENT_TYPES["content.delta"](content_id="c1", delta="hi")


@pytest.mark.parametrize("wire", [
    {"type": "no.such.event", "seq": 1, "timestamp": 1},
    {"seq": 1, "timestamp": 1},
    {"type": "content.delta", "delta": "missing contentId", "seq": 1, "timestamp": 1},
    {"type": "content.delta", "contentId": "c1", "delta": "no seq", "timestamp": 1},
    {"type": "content.delta", "contentId": "c1", "delta": "bad seq", "seq": "x", "timestamp": 1},
], ids=["unknown-type", "no-type", "missing-field", "no-seq", "bad-seq"])
def test_malformed_wire_dicts_are_value_errors(wire: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Stamped.from_wire(wire)


def test_wire_json_is_the_wire_dict_and_an_event_keeps_nothing_once_sent() -> None:
    """A run's log keeps every event for resume; sending an event (its JSON) must not grow it."""
    events = [Stamped(ContentDeltaEvent(content_id="c1", delta=f"token {n}"), n, 1) for n in range(1, 1001)]
    assert orjson.loads(events[0].wire_json()) == events[0].wire()
    tracemalloc.start()
    try:
        for stamped in events:
            assert stamped.wire_json().startswith(b'{"type":"content.delta"')
        size, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size < len(events) * 8, f"{size / len(events):.0f} bytes kept per event after sending it"
