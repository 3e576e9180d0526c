"""The contracts: packaging, event models, JSON Schemas and generated gRPC code are current."""

from __future__ import annotations

import filecmp
import importlib.metadata
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from schema.events import (
    EVENT_ADAPTER,
    AlertmanagerWebhook,
    MetricEvent,
    TransactionEvent,
    partition_key,
)
from schema.jsonschemas import JSON_DIR, documents

REPO = Path(__file__).resolve().parents[2]
TOP_LEVEL = ("schema", "rules", "gnn", "ingest", "server")
AT = datetime(2026, 1, 1, tzinfo=UTC)


def test_no_other_distribution_provides_our_top_level_names() -> None:
    providers = importlib.metadata.packages_distributions()
    for name in TOP_LEVEL:
        others = sorted(set(providers.get(name, [])) - {"sleuthgraph"})
        assert others == [], f"{name!r} is also provided by {others}: it would shadow or be shadowed"


def test_our_packages_are_imported_from_this_checkout() -> None:
    import gnn
    import ingest
    import rules
    import schema
    import server

    for module in (schema, rules, gnn, ingest, server):
        assert Path(module.__file__).resolve().is_relative_to(REPO), module.__file__


def test_events_round_trip_through_json() -> None:
    tx = TransactionEvent(id="t1", at=AT, src="a", dst="b", amount=12.5, currency="USD", device="d")
    again = EVENT_ADAPTER.validate_json(tx.model_dump_json())
    assert again == tx
    assert partition_key(tx) == "a"
    assert partition_key(MetricEvent(id="m", at=AT, entity_kind="instance", entity="pay-0", service="pay",
                                     metric="cpu", value=None)) == "pay"


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"amount": -5}, "amount"),
        ({"amount": float("inf")}, "amount"),
        ({"currency": "XYZ"}, "currency"),
        ({"dst": "a"}, "self-transfer"),
        ({"colour": "red"}, "colour"),
        ({"at": "2026-01-01T00:00:00"}, "at"),
    ],
)
def test_invalid_transactions_are_rejected_naming_the_field(fields: dict, where: str) -> None:
    base = {"type": "transaction", "id": "t", "at": "2026-01-01T00:00:00Z", "src": "a", "dst": "b", "amount": 1}
    with pytest.raises(ValidationError) as info:
        EVENT_ADAPTER.validate_python({**base, **fields})
    assert where in str(info.value)


def test_alertmanager_webhook_v4_becomes_alert_events() -> None:
    payload = {
        "version": "4", "status": "firing", "receiver": "sleuth", "groupKey": "{}:{}",
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
        "alerts": [
            {"status": "firing", "labels": {"alertname": "HighLatency", "service": "pay", "severity": "critical"},
             "annotations": {"summary": "p99 high"}, "startsAt": "2026-01-01T10:00:00Z",
             "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": "abc123"},
            {"status": "resolved", "labels": {"alertname": "Disk", "instance": "db-0"},
             "startsAt": "2026-01-01T09:00:00Z", "endsAt": "2026-01-01T09:30:00Z"},
        ],
    }
    events = AlertmanagerWebhook.model_validate(payload).to_events()
    assert [(e.id, e.name, e.severity, e.service, e.status) for e in events[:1]] == [
        ("abc123", "HighLatency", "critical", "pay", "firing")]
    assert events[1].instance == "db-0" and events[1].ends_at is not None and len(events[1].id) == 16


def test_committed_json_schemas_are_current() -> None:
    for name, text in documents().items():
        path = JSON_DIR / name
        assert path.is_file(), f"{path} missing: run `sleuth schema export`"
        assert path.read_text(encoding="utf-8") == text, f"{path} is stale: run `sleuth schema export`"


def test_generated_grpc_code_is_current(tmp_path: Path) -> None:
    proto = Path("schema/proto/sleuth/v1/sleuth.proto")
    shutil.copytree(REPO / "schema" / "proto", tmp_path / "schema" / "proto")
    for generated in (tmp_path / proto.parent).glob("sleuth_pb2*"):
        generated.unlink()
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I.", "--python_out=.", "--grpc_python_out=.", "--pyi_out=.",
         str(proto)],
        cwd=tmp_path, check=True,
    )
    for name in ("sleuth_pb2.py", "sleuth_pb2.pyi", "sleuth_pb2_grpc.py"):
        assert filecmp.cmp(tmp_path / proto.parent / name, REPO / proto.parent / name, shallow=False), (
            f"{name} is stale: regenerate with scripts/gen-proto")
