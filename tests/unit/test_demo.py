"""The README's demo as a new user runs it: `sleuth demo` serves reflection and health, and its Watch stream
delivers an incident with a root cause and a fraud ring from the simulators."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from schema.proto.sleuth.v1 import sleuth_pb2 as pb
from schema.proto.sleuth.v1 import sleuth_pb2_grpc as pb_grpc
from tests.support import start_demo, wait_until


def _services(channel: grpc.Channel) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    [reply] = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                             timeout=10))
    return {s.name for s in reply.list_services_response.service}


def test_the_demo_serves_reflection_and_streams_incidents_and_rings(tmp_path: Path) -> None:
    demo, out = start_demo(tmp_path, "demo", "--port", "0", "--webhook-port", "0", "--duration", "400")
    try:
        wait_until(lambda: "gRPC on" in out.read_text(errors="replace") or demo.poll() is not None,
                   timeout_s=90, what="the demo serving")
        text = out.read_text(errors="replace")
        assert demo.poll() is None, text[-3000:]
        port = int(text.split("gRPC on 127.0.0.1:")[1].split()[0])
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert {"sleuth.v1.RootCause", "sleuth.v1.Fraud", "sleuth.v1.Findings",
                    "grpc.health.v1.Health"} <= _services(channel)
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert health.status == health_pb2.HealthCheckResponse.SERVING

            seen: dict[str, pb.Finding] = {}
            stream = pb_grpc.FindingsStub(channel).Watch(pb.WatchRequest(kinds=["incident", "fraud_ring"]),
                                                         timeout=300)

            def read() -> None:
                try:
                    for finding in stream:
                        seen.setdefault(finding.kind, finding)
                        if {"incident", "fraud_ring"} <= set(seen):
                            return
                except grpc.RpcError:
                    return

            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            wait_until(lambda: {"incident", "fraud_ring"} <= set(seen) or not reader.is_alive(), timeout_s=300,
                       what="an incident and a fraud ring on the Watch stream")
            stream.cancel()
        assert {"incident", "fraud_ring"} <= set(seen), (sorted(seen), out.read_text(errors="replace")[-3000:])
        incident = seen["incident"]
        assert incident.entities[0].kind == "incident" and "root cause" in incident.title
        assert seen["fraud_ring"].entities and seen["fraud_ring"].score > 0
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(60) == 0
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(10)
    assert "Traceback" not in out.read_text(errors="replace")


def test_the_demo_view_shows_an_incident_at_each_stage_and_counts_it_once(capsys) -> None:  # noqa: ANN001
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from schema.findings import Evidence, Finding
    from server.cli import DemoView

    def incident(cause: str, stage: str) -> Finding:
        return Finding(id="incident:inc-1", kind="incident", at=datetime(2026, 1, 5, tzinfo=UTC), score=0.9,
                       title=f"incident on api: root cause service {cause}", detector="rca.incidents",
                       evidence=[Evidence(source="model:gnn", summary="ranked", facts={"stage": stage})])

    view = DemoView(0.0)
    for finding in (incident("db", "early"), incident("db", "early"), incident("cache", "settled"),
                    incident("cache", "settled")):
        view.show(SimpleNamespace(findings=[finding]))
    lines = [line for line in capsys.readouterr().out.splitlines() if "incident on api" in line]
    assert [line.split("root cause ")[1] for line in lines] == ["service db (early)", "service cache (settled)"]
    assert view.counts == {"incident": 1}
