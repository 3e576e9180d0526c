"""The Alertmanager webhook against real Kafka and Neo4j: acknowledged before 200, keyed, into the graph once."""

from __future__ import annotations

from datetime import timedelta

from ingest.kafka import ensure_topics, make_producer
from schema.events import AlertEvent
from schema.store import NodeRef
from server.host import build_kafka_host
from server.webhook import ProducerAlertSink, WebhookServer
from tests.support import make_settings, topic_records, wait_until
from tests.unit.test_webhook import STARTED, TWO, _alert, payload, post

TOKEN = "am-integration-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _alert_rels(driver, fingerprint: str) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    with driver.session() as session:
        rows = session.run("MATCH (a:Alert {fingerprint: $fp})-[:FIRED_ON]->(n) RETURN labels(n)[0] AS label, "
                           "n.name AS name ORDER BY label", fp=fingerprint)
        return [(r["label"], r["name"]) for r in rows]


def _incident_of(driver, fingerprint: str) -> tuple[str | None, object]:  # type: ignore[no-untyped-def]
    """Status and resolved_at of the incident grouping an alert."""
    with driver.session() as session:
        row = session.run("MATCH (i:Incident)-[:GROUPS]->(:Alert {fingerprint: $fp}) "
                          "RETURN i.status AS status, i.resolved_at AS resolved_at", fp=fingerprint).single()
    if row is None:
        return None, None
    at = row["resolved_at"]
    return row["status"], at.to_native() if at is not None else None


def test_webhook_alerts_are_acknowledged_by_kafka_then_land_in_neo4j(neo4j_store, neo4j_driver, neo4j_uri,
                                                                     kafka_bootstrap, topic_prefix, tmp_path) -> None:
    settings = make_settings(neo4j_uri, kafka_bootstrap, topic_prefix, tmp_path, partitions=4)
    topic = settings.kafka.topics.alerts
    host = build_kafka_host(settings)  # creates the topics
    webhook = WebhookServer(host.alert_sink(settings), "127.0.0.1", 0, token=TOKEN)
    webhook.start()
    try:
        assert post(webhook.port, TWO)[0] == 401
        status, _, body = post(webhook.port, TWO, headers=AUTH)
        assert (status, body["accepted"]) == (200, 2)
        # Answered only after the broker acknowledged: both records are in the log already, no waiting.
        total, records = topic_records(kafka_bootstrap, topic, 4)
        assert total == 2
        by_key = {r.key: AlertEvent.model_validate_json(r.value) for r in records}
        assert sorted(by_key) == [b"cart", b"payments"]
        assert by_key[b"payments"].id == "aa11bb22cc33dd44" and by_key[b"payments"].instance == "payments-1"

        host.start()
        wait_until(lambda: neo4j_store.count("Alert") == 2, timeout_s=90, what="both alerts in Neo4j")
        assert _alert_rels(neo4j_driver, "aa11bb22cc33dd44") == [("Instance", "payments-1"), ("Service", "payments")]

        # Alertmanager retries and re-notifies: same fingerprints, nothing new in the graph.
        assert post(webhook.port, TWO, headers=AUTH)[0] == 200
        resolved = payload(_alert("PaymentsLatencyHigh", "payments", "aa11bb22cc33dd44", status="resolved",
                                  instance="payments-1"))
        resolved["alerts"][0]["endsAt"] = (STARTED + timedelta(minutes=1)).isoformat()  # type: ignore[index]
        assert post(webhook.port, resolved, headers=AUTH)[0] == 200

        def resolved_in_graph() -> bool:
            node = neo4j_store.get_node(NodeRef("Alert", "aa11bb22cc33dd44"))
            return node is not None and node.props.get("status") == "resolved"

        wait_until(resolved_in_graph, timeout_s=90, what="the resolved notification in Neo4j")
        # Its incident had no other alert: it resolves, with the alert's end; cart's incident still fires.
        wait_until(lambda: _incident_of(neo4j_driver, "aa11bb22cc33dd44")[0] == "resolved", timeout_s=90,
                   what="the payments incident resolved")
        assert _incident_of(neo4j_driver, "aa11bb22cc33dd44")[1] == STARTED + timedelta(minutes=1)
        assert _incident_of(neo4j_driver, by_key[b"cart"].id)[0] in ("open", "analysed")
        assert neo4j_store.count("Alert") == 2
        assert topic_records(kafka_bootstrap, topic, 4)[0] == 5
        assert by_key[b"cart"].labels["alertname"] == "CartErrors"
    finally:
        webhook.stop()
        host.stop()
        host.close()


def test_alerts_the_broker_does_not_take_get_503(kafka_bootstrap, topic_prefix) -> None:
    """200 means acknowledged: a broker refusal after the send (not only a send that fails) answers 503."""
    small = f"{topic_prefix}.small"
    ensure_topics(kafka_bootstrap, [small], 1, configs={"max.message.bytes": "2000"})
    producer = make_producer(kafka_bootstrap, max_block_ms=3_000)
    big = payload(_alert("Big", "payments", "b1"), _alert("Huge", "cart", "b2"))
    big["alerts"][1]["annotations"] = {"description": "x" * 4000}  # type: ignore[index]
    try:
        for topic, body, accepted in ((small, TWO, True), (small, big, False),
                                      ("sleuth.no-such-topic", TWO, False)):  # no auto-creation on the broker
            webhook = WebhookServer(ProducerAlertSink(producer, topic, timeout_s=10), "127.0.0.1", 0)
            webhook.start()
            try:
                status, _, answer = post(webhook.port, body)
            finally:
                webhook.stop()
            if accepted:
                assert status == 200, answer
            else:
                assert status == 503 and "not acknowledged" in answer["error"], (topic, answer)
    finally:
        producer.close()
