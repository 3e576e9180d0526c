"""Record bytes -> validated events, or a :class:`Rejection` value naming the reason.

Bad data is a value here, never an exception: the pipeline sends rejections to the dead-letter topic with
the reason in headers and moves on. The decoder never raises on any input (property-tested).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from schema.events import EVENT_ADAPTER, AlertmanagerWebhook, EventBase


@dataclass(frozen=True)
class Rejection:
    """Why a record was not accepted. ``code`` is stable (for metrics); ``reason`` is for people."""

    code: str
    reason: str


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds applied before and after parsing."""

    max_bytes: int = 1_048_576
    max_future: timedelta = timedelta(minutes=5)


def _describe(error: ValidationError) -> str:
    """A short reason naming each failing field, e.g. ``amount: Input should be greater than 0``."""
    parts = []
    for item in error.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in item["loc"]) or "record"
        parts.append(f"{where}: {item['msg']}")
    more = error.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def _future(events: list[EventBase], now: datetime, limits: DecodeLimits) -> Rejection | None:
    horizon = now + limits.max_future
    for event in events:
        if event.at > horizon:
            return Rejection(
                "future_timestamp",
                f"at: {event.at.isoformat()} is more than {limits.max_future} ahead of the clock ({now.isoformat()})",
            )
    return None


def decode_record(
    value: bytes | None, limits: DecodeLimits | None = None, now: datetime | None = None
) -> list[EventBase] | Rejection:
    """Decode one record value into events (an Alertmanager webhook yields several)."""
    limits = limits or DecodeLimits()
    if value is None:
        return Rejection("empty", "record has no value")
    if len(value) > limits.max_bytes:
        return Rejection("too_large", f"record is {len(value)} bytes; the limit is {limits.max_bytes}")
    try:
        obj: Any = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        return Rejection("invalid_json", f"not JSON: {exc}")
    return decode_object(obj, limits, now)


def decode_object(
    obj: Any, limits: DecodeLimits | None = None, now: datetime | None = None
) -> list[EventBase] | Rejection:
    """Validate an already parsed JSON value."""
    limits = limits or DecodeLimits()
    if not isinstance(obj, dict):
        return Rejection("not_object", f"expected a JSON object, got {type(obj).__name__}")
    try:
        if "type" not in obj and obj.get("version") == "4" and "alerts" in obj:
            events: list[EventBase] = list(AlertmanagerWebhook.model_validate(obj).to_events())
        elif "type" not in obj:
            return Rejection("unknown_type", "type: missing (expected one of log, metric, span, change, alert, "
                             "topology, transaction, identity, or an Alertmanager webhook)")
        else:
            events = [EVENT_ADAPTER.validate_python(obj)]
    except ValidationError as exc:
        code = "unknown_type" if any(e["type"] == "union_tag_invalid" for e in exc.errors()) else "invalid"
        return Rejection(code, _describe(exc))
    except (ValueError, TypeError, RecursionError) as exc:  # validators of nested third-party types
        return Rejection("invalid", str(exc))
    return _future(events, now or datetime.now(UTC), limits) or events
