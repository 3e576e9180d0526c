"""The gRPC API on the embedded store: statuses, auth, health, reflection, the Watch stream."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from ingest.batch import BatchBuilder
from ingest.detectors import BasicRuleDetector
from ingest.findings import add_finding
from ingest.store.memory import MemoryGraphStore
from rules.basic import BasicRulesConfig
from rules.engine import RulesEngine
from schema.findings import EntityRef, Evidence, Finding
from schema.proto.sleuth.v1 import sleuth_pb2 as pb
from schema.proto.sleuth.v1 import sleuth_pb2_grpc as pb_grpc
from server.app import ServerParts
from server.convert import to_timestamp
from server.hub import FindingHub
from tests.grpc_harness import running_server

AT = datetime(2026, 1, 1, 12, tzinfo=UTC)
TOKEN = "s3cret-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
FINDING = Finding(id="f1", kind="risky_transaction", at=AT, score=0.6, title="big one", detector="test",
                  entities=[EntityRef(kind="transaction", name="tx1")],
                  evidence=[Evidence(source="rule:basic/large_transaction", summary="large", facts={"amount": "1e5"})])


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[grpc.Channel, FindingHub, MemoryGraphStore]]:
    store, hub = MemoryGraphStore(), FindingHub()
    builder = BatchBuilder()
    add_finding(FINDING, builder)
    builder.node("Alert", "alert-1", {"at": AT, "name": "Latency"})
    store.write(builder.build())
    scorer = BasicRuleDetector(RulesEngine(), BasicRulesConfig(large_amount=1000))
    with running_server(ServerParts(store, hub, scorer, token=TOKEN)) as (port, _):
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel, hub, store


def test_health_and_reflection_need_no_token(server) -> None:
    channel, _, _ = server
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest(service="sleuth.v1.Fraud")).status == \
        health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    [reply] = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    names = {s.name for s in reply.list_services_response.service}
    assert {"sleuth.v1.RootCause", "sleuth.v1.Fraud", "sleuth.v1.Findings", "grpc.health.v1.Health"} <= names


def test_calls_without_the_token_are_refused_and_with_it_succeed(server) -> None:
    channel, _, _ = server
    stub = pb_grpc.FindingsStub(channel)
    for metadata in ((), (("authorization", "Bearer wrong"),)):
        with pytest.raises(grpc.RpcError) as info:
            stub.Get(pb.GetFindingRequest(id="f1"), metadata=metadata)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    found = stub.Get(pb.GetFindingRequest(id="f1"), metadata=AUTH)
    assert (found.kind, found.title, found.entities[0].name) == ("risky_transaction", "big one", "tx1")
    assert found.evidence[0].facts["amount"] == "1e5"


def test_findings_list_filters_and_limits(server) -> None:
    stub = pb_grpc.FindingsStub(server[0])
    assert [f.id for f in stub.List(pb.ListFindingsRequest(kind="risky_transaction"), metadata=AUTH).findings] == ["f1"]
    assert stub.List(pb.ListFindingsRequest(kind="incident"), metadata=AUTH).findings == []
    assert stub.List(pb.ListFindingsRequest(min_score=0.9), metadata=AUTH).findings == []
    with pytest.raises(grpc.RpcError) as info:
        stub.List(pb.ListFindingsRequest(limit=5000), metadata=AUTH)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "limit is 1000" in info.value.details()


def test_unknown_ids_are_not_found(server) -> None:
    channel = server[0]
    with pytest.raises(grpc.RpcError) as info:
        pb_grpc.FindingsStub(channel).Get(pb.GetFindingRequest(id="nope"), metadata=AUTH)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as info:
        pb_grpc.RootCauseStub(channel).Analyze(pb.AnalyzeRequest(alert_id="ghost"), metadata=AUTH)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_root_cause_windows_are_validated(server) -> None:
    stub = pb_grpc.RootCauseStub(server[0])
    with pytest.raises(grpc.RpcError) as info:
        stub.Analyze(pb.AnalyzeRequest(alert_id="alert-1", since=to_timestamp(AT), until=to_timestamp(AT)),
                     metadata=AUTH)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "empty" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        stub.Analyze(pb.AnalyzeRequest(alert_id="alert-1", top_k=500), metadata=AUTH)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "limit is 50" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        stub.Analyze(pb.AnalyzeRequest(), metadata=AUTH)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_score_transaction_inline_and_bad_input(server) -> None:
    stub = pb_grpc.FraudStub(server[0])
    tx = pb.Transaction(id="t9", at=to_timestamp(AT), src="a", dst="b", amount=5000, currency="EUR")
    reply = stub.ScoreTransaction(pb.ScoreTransactionRequest(transaction=tx), metadata=AUTH)
    assert reply.score == pytest.approx(0.6) and reply.reasons[0].source == "rule:basic_1000/large_transaction"
    small = stub.ScoreTransaction(pb.ScoreTransactionRequest(
        transaction=pb.Transaction(id="t10", src="a", dst="b", amount=5)), metadata=AUTH)
    assert small.score == 0.0 and list(small.reasons) == []
    for bad, where in (
        (pb.Transaction(id="x", src="a", dst="b", amount=-3), "amount"),
        (pb.Transaction(id="x", src="a", dst="b", amount=float("nan")), "amount"),
        (pb.Transaction(id="x", src="a", dst="a", amount=3), "self-transfer"),
        (pb.Transaction(id="x", src="a", dst="b", amount=3, currency="ZZZ"), "currency"),
        (pb.Transaction(id="x", src="a", dst="b", amount=3, at=to_timestamp(datetime(2099, 1, 1, tzinfo=UTC))),
         "future"),
    ):
        with pytest.raises(grpc.RpcError) as info:
            stub.ScoreTransaction(pb.ScoreTransactionRequest(transaction=bad), metadata=AUTH)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and where in info.value.details()


def test_watch_streams_published_findings_matching_the_filter(server) -> None:
    channel, hub, _ = server
    stub = pb_grpc.FindingsStub(channel)
    stream = stub.Watch(pb.WatchRequest(kinds=["risky_transaction"], min_score=0.5), metadata=AUTH, timeout=10)
    received: list[str] = []

    def read() -> None:
        try:
            for finding in stream:
                received.append(finding.id)
                if finding.id == "w2":
                    stream.cancel()
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.CANCELLED

    reader = threading.Thread(target=read)
    reader.start()
    low = FINDING.model_copy(update={"id": "low", "score": 0.1})
    other = FINDING.model_copy(update={"id": "other", "kind": "incident"})
    for _ in range(50):  # the subscription registers asynchronously: publish until it is seen
        hub.publish([low, other, FINDING.model_copy(update={"id": "w1"})])
        reader.join(0.1)
        if received:
            break
    hub.publish([FINDING.model_copy(update={"id": "w2"})])
    reader.join(5)
    assert received[:1] == ["w1"] and "w2" in received and "low" not in received and "other" not in received
