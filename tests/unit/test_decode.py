"""The decoder: every bad record becomes a Rejection with a reason, never an exception."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.decode import DecodeLimits, Rejection, decode_object, decode_record
from schema.events import EVENT_TYPES, TransactionEvent

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
GOOD = {"type": "transaction", "id": "t1", "at": "2026-01-01T11:59:00Z", "src": "a", "dst": "b", "amount": 10.0}


def _rejected(value: bytes | None, **limits: object) -> Rejection:
    result = decode_record(value, DecodeLimits(**limits), NOW)  # type: ignore[arg-type]
    assert isinstance(result, Rejection), result
    return result


def test_a_valid_record_decodes() -> None:
    [event] = decode_record(json.dumps(GOOD).encode(), now=NOW)  # type: ignore[misc]
    assert isinstance(event, TransactionEvent) and event.amount == 10.0


def test_reasons_name_the_problem() -> None:
    assert _rejected(None).code == "empty"
    assert _rejected(b"{not json").code == "invalid_json"
    assert _rejected(b"[1, 2]").code == "not_object"
    assert _rejected(b"x" * 2000, max_bytes=1000).reason == "record is 2000 bytes; the limit is 1000"
    unknown = _rejected(json.dumps({**GOOD, "type": "telepathy"}).encode())
    assert unknown.code == "unknown_type" and "telepathy" in unknown.reason
    wrong = _rejected(json.dumps({**GOOD, "amount": "lots"}).encode())
    assert wrong.code == "invalid" and wrong.reason.startswith("transaction.amount:")
    future = _rejected(json.dumps({**GOOD, "at": "2027-01-01T00:00:00Z"}).encode())
    assert future.code == "future_timestamp"
    missing = _rejected(json.dumps({"id": "x"}).encode())
    assert missing.code == "unknown_type" and "type: missing" in missing.reason


def test_clock_skew_within_the_limit_is_accepted() -> None:
    soon = (NOW + timedelta(minutes=4)).isoformat()
    assert not isinstance(decode_record(json.dumps({**GOOD, "at": soon}).encode(), now=NOW), Rejection)


def test_alertmanager_webhooks_decode_into_several_alerts() -> None:
    hook = {"version": "4", "status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": "A", "service": "s"}, "startsAt": "2026-01-01T11:00:00Z"},
        {"status": "firing", "labels": {"alertname": "B", "host": "h"}, "startsAt": "2026-01-01T11:00:00Z"},
    ]}
    events = decode_object(hook, now=NOW)
    assert not isinstance(events, Rejection)
    assert [e.name for e in events] == ["A", "B"]  # type: ignore[attr-defined]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(value: bytes) -> None:
    result = decode_record(value, now=NOW)
    assert isinstance(result, (Rejection, list))


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
_event_types = st.sampled_from([t.model_fields["type"].default for t in EVENT_TYPES])


@settings(max_examples=300, deadline=None)
@given(_event_types, st.dictionaries(st.sampled_from(
    ["id", "at", "src", "dst", "amount", "service", "message", "metric", "value", "entity", "kind", "name",
     "account", "trace_id", "duration_ms", "severity", "calls", "labels", "currency", "v"]), _json, max_size=10))
def test_every_decoder_gives_a_clear_error_on_malformed_events(event_type: str, fields: dict) -> None:
    result = decode_object({"type": event_type, **fields}, now=NOW)
    if isinstance(result, Rejection):
        assert result.code in {"invalid", "unknown_type", "future_timestamp"}
        assert result.reason  # a reason a person can act on
    else:
        assert len(result) == 1 and result[0].type == event_type  # type: ignore[attr-defined]
