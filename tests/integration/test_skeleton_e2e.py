"""The walking skeleton against real Kafka and Neo4j: records in, graph written, rule fired, annotation
written back, answered over gRPC; a bad record lands in the dead-letter topic with its reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import grpc
from kafka import KafkaConsumer

from ingest.kafka import make_producer
from schema.events import LogEvent, MetricEvent, TransactionEvent, partition_key
from schema.proto.sleuth.v1 import sleuth_pb2 as pb
from schema.proto.sleuth.v1 import sleuth_pb2_grpc as pb_grpc
from schema.store import NodeRef
from server.host import build_kafka_host
from tests.grpc_harness import running_server
from tests.support import make_settings, wait_until


def test_records_to_annotations_to_grpc(neo4j_store, neo4j_uri, kafka_bootstrap, topic_prefix, tmp_path) -> None:
    settings = make_settings(neo4j_uri, kafka_bootstrap, topic_prefix, tmp_path)
    topics = settings.kafka.topics
    host = build_kafka_host(settings)
    now = datetime.now(UTC).replace(microsecond=0)
    events = [
        TransactionEvent(id="tx-big", at=now, src="alice", dst="mallory", amount=25_000, device="dev-1"),
        TransactionEvent(id="tx-small", at=now, src="bob", dst="carol", amount=12.5),
        MetricEvent(id="m-1", at=now - timedelta(minutes=1), entity="payments", metric="latency_p99_ms", value=41.0),
        LogEvent(id="l-1", at=now, service="payments", level="ERROR", message="Timeout calling ledger after 3000 ms"),
    ]
    producer = make_producer(kafka_bootstrap)
    for event in events:
        producer.send(topics.for_event_type(event.type), value=event.model_dump_json().encode(),
                      key=partition_key(event).encode())
    producer.send(topics.transactions, value=b'{"type": "transaction", "id": "oops", "amount": "many"}', key=b"x")
    producer.flush()

    host.start()
    try:
        wait_until(lambda: neo4j_store.get_node(NodeRef("Finding", "risky_transaction:tx-big")) is not None)
        wait_until(lambda: neo4j_store.count("LogTemplate") == 1 and neo4j_store.count("Transaction") == 2)
        finding_node = neo4j_store.get_node(NodeRef("Finding", "risky_transaction:tx-big"))
        assert finding_node.props["detector"] == "rules.basic"
        assert "amount at or above 10000" in finding_node.props["evidence"]
        assert [r.end.key for r in neo4j_store.rels_of(finding_node.ref, "ABOUT", "out")] == ["alice", "tx-big"]
        assert neo4j_store.get_node(NodeRef("Service", "payments")) is not None
        assert [r.end.key for r in neo4j_store.rels_of(NodeRef("Account", "alice"), "USES", "out")] == ["dev-1"]

        with running_server(host.server_parts(settings)) as (port, _):
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                finding = pb_grpc.FindingsStub(channel).Get(pb.GetFindingRequest(id="risky_transaction:tx-big"))
                listed = pb_grpc.FindingsStub(channel).List(pb.ListFindingsRequest(kind="risky_transaction"))
                scored = pb_grpc.FraudStub(channel).ScoreTransaction(pb.ScoreTransactionRequest(
                    transaction=pb.Transaction(id="tx-inline", src="bob", dst="carol", amount=40.0)))
        assert finding.score == 0.6 and {e.name for e in finding.entities} == {"tx-big", "alice"}
        assert "risky_transaction:tx-big" in [f.id for f in listed.findings]
        assert scored.transaction_id == "tx-inline" and 0.0 <= scored.score <= 1.0

        dlq = KafkaConsumer(topics.dlq, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
                            consumer_timeout_ms=20_000, group_id=f"{topic_prefix}-dlq-reader")
        letter = next(iter(dlq))
        dlq.close()
        headers = {k: v.decode() for k, v in letter.headers}
        assert json.loads(letter.value)["id"] == "oops"
        assert headers["sleuth.code"] == "invalid" and "amount" in headers["sleuth.reason"]
        assert headers["sleuth.source.topic"] == topics.transactions

        findings = KafkaConsumer(topics.findings, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
                                 consumer_timeout_ms=20_000, group_id=f"{topic_prefix}-findings-reader")
        published = next(iter(findings))
        findings.close()
        assert json.loads(published.value)["id"] == "risky_transaction:tx-big"
        assert published.key == b"transaction:tx-big"
    finally:
        host.stop()
