"""The Alertmanager webhook over real HTTP, on the embedded bus: answers, keys, auth, limits, end to end."""

from __future__ import annotations

import http.client
import json
import socket
import zlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from ingest.bus import InProcessBus
from schema.events import AlertEvent, partition_key
from schema.store import NodeRef
from server.host import build_embedded_host, build_webhook
from server.settings import GrpcSettings, Settings, WebhookSettings
from server.webhook import DEFAULT_PATH, BusAlertSink, WebhookServer
from tests.support import wait_until

TOPIC = "sleuth.alerts"
STARTED = (datetime.now(UTC) - timedelta(minutes=2)).replace(microsecond=0)


def _alert(alertname: str, service: str | None, fingerprint: str | None, status: str = "firing",
           **labels: str) -> dict[str, object]:
    all_labels = {"alertname": alertname, "severity": "critical", **labels}
    if service:
        all_labels["service"] = service
    alert: dict[str, object] = {
        "status": status, "labels": all_labels, "annotations": {"summary": f"{alertname} on {service}"},
        "startsAt": STARTED.isoformat().replace("+00:00", "Z"), "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=up",
    }
    if fingerprint:
        alert["fingerprint"] = fingerprint
    return alert


def payload(*alerts: dict[str, object]) -> dict[str, object]:
    """An Alertmanager webhook_config notification, as Alertmanager 0.27 sends it."""
    return {
        "version": "4", "groupKey": '{}:{alertname="PaymentsLatencyHigh"}', "truncatedAlerts": 0,
        "status": "firing", "receiver": "sleuthgraph", "groupLabels": {"alertname": "PaymentsLatencyHigh"},
        "commonLabels": {"severity": "critical"}, "commonAnnotations": {}, "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts),
    }


TWO = payload(_alert("PaymentsLatencyHigh", "payments", "aa11bb22cc33dd44", instance="payments-1"),
              _alert("CartErrors", "cart", None))


def post(port: int, body: bytes | object, path: str = DEFAULT_PATH, method: str = "POST",
         headers: dict[str, str] | None = None, length: int | None = None) -> tuple[int, dict[str, str], dict]:
    """One request with http.client; returns status, headers and the JSON body ({} for none)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.putrequest(method, path)
        connection.putheader("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        if length is not None or method in {"POST", "PUT"}:
            connection.putheader("Content-Length", str(len(data) if length is None else length))
        connection.endheaders()
        if method in {"POST", "PUT"} and length is None:
            connection.send(data)
        response = connection.getresponse()
        raw = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(raw) if raw else {}
    finally:
        connection.close()


@pytest.fixture
def bus() -> InProcessBus:
    return InProcessBus(partitions=4)


@pytest.fixture
def webhook(bus: InProcessBus) -> Iterator[WebhookServer]:
    server = WebhookServer(BusAlertSink(bus, TOPIC), "127.0.0.1", 0, max_body_bytes=64 * 1024)
    server.start()
    yield server
    server.stop()


def test_alerts_are_produced_one_record_each_keyed_by_service(webhook: WebhookServer, bus: InProcessBus) -> None:
    status, _, body = post(webhook.port, TWO)
    assert (status, body) == (200, {"status": "ok", "accepted": 2})
    records = sorted(bus.records(TOPIC), key=lambda r: r.key or b"")
    assert [r.key for r in records] == [b"cart", b"payments"]
    events = [AlertEvent.model_validate_json(r.value or b"") for r in records]
    cart, payments = events
    assert payments.id == "aa11bb22cc33dd44" and payments.name == "PaymentsLatencyHigh"
    assert (payments.service, payments.instance, payments.severity, payments.at) == (
        "payments", "payments-1", "critical", STARTED)
    assert len(cart.id) == 16  # no fingerprint sent: derived from the labels, stable across notifications
    for record, event in zip(records, events, strict=True):
        assert record.key == partition_key(event).encode()  # the key `sleuth produce` gives the same alert
        assert record.partition == zlib.crc32(record.key) % bus.partitions


def test_a_renotification_has_the_same_ids(webhook: WebhookServer, bus: InProcessBus) -> None:
    assert post(webhook.port, TWO)[0] == 200
    assert post(webhook.port, TWO)[0] == 200
    ids = [AlertEvent.model_validate_json(r.value or b"").id for r in bus.records(TOPIC)]
    assert len(ids) == 4 and len(set(ids)) == 2  # graph writes merge on these: a retry changes nothing


@pytest.mark.parametrize(("body", "reason"), [
    (b"{this is not json", "not JSON"),
    (b"[1, 2]", "expected an Alertmanager webhook payload"),
    ({"type": "alert", "id": "a1", "at": STARTED.isoformat(), "name": "x", "service": "s"},
     "expected an Alertmanager webhook payload"),
    ({**TWO, "version": "3"}, "needs version \"4\""),
    ({k: v for k, v in TWO.items() if k != "alerts"}, "needs version \"4\" and alerts"),
    (payload({**_alert("NoTarget", None, "f1")}), "alert must name a service, instance or host"),
    (payload({**_alert("Bad", "s", "f2"), "startsAt": "yesterday"}), "alerts.0.startsAt"),
    (payload({**_alert("Future", "s", "f3"), "startsAt": (datetime.now(UTC) + timedelta(days=2)).isoformat()}),
     "future_timestamp"),
])
def test_bad_payloads_are_refused_with_the_reason_and_nothing_is_produced(
        webhook: WebhookServer, bus: InProcessBus, body: object, reason: str) -> None:
    status, headers, answer = post(webhook.port, body)
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert answer["status"] == "error" and reason in answer["error"], answer
    assert bus.records(TOPIC) == []


def test_one_bad_alert_refuses_the_whole_notification(webhook: WebhookServer, bus: InProcessBus) -> None:
    status, _, answer = post(webhook.port, payload(_alert("Good", "web", "g1"), _alert("NoTarget", None, "g2")))
    assert status == 400 and "must name a service" in answer["error"]
    assert bus.records(TOPIC) == []  # Alertmanager gets the reason; no half-accepted notification


def test_oversized_bodies_get_413_without_being_produced(bus: InProcessBus) -> None:
    server = WebhookServer(BusAlertSink(bus, TOPIC), "127.0.0.1", 0, max_body_bytes=1024)
    server.start()
    try:
        big = payload(*[_alert(f"A{i}", f"svc-{i}", f"fp{i}") for i in range(20)])
        assert len(json.dumps(big)) > 1024
        status, _, answer = post(server.port, big)
        assert status == 413 and "limit is 1024" in answer["error"]
        # Refused from the header alone, before any body was sent.
        assert post(server.port, b"", length=10 * 1024 * 1024)[0] == 413
        assert bus.records(TOPIC) == []
        assert post(server.port, TWO)[0] == 200  # still serving
    finally:
        server.stop()


def test_wrong_method_is_405_and_wrong_path_404(webhook: WebhookServer, bus: InProcessBus) -> None:
    for method in ("GET", "PUT", "DELETE"):
        status, headers, answer = post(webhook.port, TWO, method=method)
        assert status == 405 and headers["allow"] == "POST", (method, answer)
    assert post(webhook.port, TWO, method="HEAD")[0] == 405
    status, _, answer = post(webhook.port, TWO, path="/api/v2/alerts")
    assert status == 404 and DEFAULT_PATH in answer["error"]
    assert post(webhook.port, TWO, path=DEFAULT_PATH + "?from=am")[0] == 200  # a query string is fine
    assert len(bus.records(TOPIC)) == 2


def test_a_body_needs_a_content_length(webhook: WebhookServer) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", webhook.port, timeout=30)
    try:
        # A chunked body: the server answers 411 from the headers alone and closes, so the body is not sent
        # (sending it could race with that close and fail with a broken pipe).
        connection.putrequest("POST", DEFAULT_PATH)
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Transfer-Encoding", "chunked")
        connection.endheaders()
        assert connection.getresponse().status == 411
    finally:
        connection.close()
    connection = http.client.HTTPConnection("127.0.0.1", webhook.port, timeout=30)
    try:
        connection.putrequest("POST", DEFAULT_PATH)
        connection.endheaders()
        assert connection.getresponse().status == 411
    finally:
        connection.close()


def test_the_token_is_required_when_configured(bus: InProcessBus) -> None:
    token = "am-s3cret-0123"
    server = WebhookServer(BusAlertSink(bus, TOPIC), "127.0.0.1", 0, token=token)
    server.start()
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token},
                        {"Authorization": f"Basic {token}"}):
            status, reply_headers, answer = post(server.port, TWO, headers=headers)
            assert status == 401 and reply_headers["www-authenticate"].startswith("Bearer"), headers
            assert token not in json.dumps(answer)
        assert bus.records(TOPIC) == []
        assert post(server.port, TWO, headers={"Authorization": f"Bearer {token}"})[0] == 200
        assert len(bus.records(TOPIC)) == 2
    finally:
        server.stop()


class _RefusingSink:
    """A sink whose broker never acknowledges (stands in for a Kafka outage; see the integration test)."""

    def send(self, alerts: Sequence[AlertEvent]) -> None:
        raise TimeoutError(f"{len(alerts)} records not acknowledged within 30 s")


def test_unacknowledged_alerts_get_503_so_alertmanager_retries() -> None:
    server = WebhookServer(_RefusingSink(), "127.0.0.1", 0)
    server.start()
    try:
        status, _, answer = post(server.port, TWO)
        assert status == 503 and "not acknowledged" in answer["error"]
    finally:
        server.stop()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_build_webhook_port_zero_is_off_and_grpc_token_is_the_fallback(tmp_path) -> None:
    settings = Settings(state_dir=tmp_path, webhook=WebhookSettings(port=0))
    host = build_embedded_host(settings)
    assert build_webhook(host, settings) is None
    settings = Settings(state_dir=tmp_path, grpc=GrpcSettings(token="grpc-tok"),
                        webhook=WebhookSettings(port=_free_port()))
    server = build_webhook(host, settings)
    assert server is not None
    server.start()
    try:
        assert post(server.port, TWO)[0] == 401
        assert post(server.port, TWO, headers={"Authorization": "Bearer grpc-tok"})[0] == 200
    finally:
        server.stop()
    assert host.bus is not None and len(host.bus.records(settings.kafka.topics.alerts)) == 2


def test_webhook_alerts_reach_the_graph_through_the_embedded_pipeline(tmp_path) -> None:
    settings = Settings(state_dir=tmp_path)
    host = build_embedded_host(settings)
    server = WebhookServer(host.alert_sink(settings), "127.0.0.1", 0)
    server.start()
    host.start()
    try:
        assert post(server.port, TWO)[0] == 200
        wait_until(lambda: host.store.get_node(NodeRef("Alert", "aa11bb22cc33dd44")) is not None, timeout_s=30,
                   what="the webhook alert in the graph")
        alert = host.store.get_node(NodeRef("Alert", "aa11bb22cc33dd44"))
        assert alert is not None and alert.props["name"] == "PaymentsLatencyHigh"
        assert alert.props["severity"] == "critical" and alert.props["status"] == "firing"
        wait_until(lambda: host.store.count("Alert") == 2, timeout_s=30, what="both alerts")
        assert {"payments", "cart"} <= {n.key for n in host.store.find_nodes("Service")}
    finally:
        server.stop()
        host.stop()
