"""Secrets (Neo4j password, gRPC and webhook tokens) never show in settings reprs, dumps or a server's output."""

from __future__ import annotations

import http.client
import json
import signal
import socket
from pathlib import Path

import grpc

from schema.proto.sleuth.v1 import sleuth_pb2 as pb
from schema.proto.sleuth.v1 import sleuth_pb2_grpc as pb_grpc
from server.host import build_embedded_host
from server.settings import Settings
from tests.support import start_demo, wait_until
from tests.unit.test_webhook import TWO, payload

PASSWORD, GRPC_TOKEN, WEBHOOK_TOKEN = "pw-Zq81-neo4j", "tok-Gr77-grpc", "tok-Wh55-webhook"
SECRETS = (PASSWORD, GRPC_TOKEN, WEBHOOK_TOKEN)
SECRET_ENV = {"SLEUTH_NEO4J_PASSWORD": PASSWORD, "SLEUTH_GRPC__TOKEN": GRPC_TOKEN,
              "SLEUTH_WEBHOOK__TOKEN": WEBHOOK_TOKEN}


def _leaks(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


def test_settings_and_server_parts_never_show_secrets(monkeypatch, tmp_path: Path) -> None:
    for name, value in SECRET_ENV.items():
        monkeypatch.setenv(name, value)
    settings = Settings(state_dir=tmp_path)
    assert settings.grpc.token is not None and settings.grpc.token.get_secret_value() == GRPC_TOKEN  # it is read
    views = [repr(settings), str(settings), settings.model_dump_json(), repr(settings.model_dump()),
             repr(settings.grpc), repr(settings.webhook)]
    parts = build_embedded_host(settings).server_parts(settings)
    assert parts.token == GRPC_TOKEN
    views.append(repr(parts))
    assert [_leaks(view) for view in views] == [[]] * len(views)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _post(port: int, body: dict, token: str | None) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
        connection.request("POST", "/api/v1/alerts/alertmanager", body=json.dumps(body).encode(), headers=headers)
        return connection.getresponse().status
    finally:
        connection.close()


def test_the_demo_logs_no_secret_while_it_serves_gRPC_and_the_webhook(tmp_path: Path) -> None:
    """Debug logging, startup, authenticated and refused calls on both endpoints, shutdown: no secret in any line."""
    webhook_port = _free_port()
    demo, out = start_demo(tmp_path, "-v", "demo", "--port", "0", "--webhook-port", str(webhook_port),
                           "--duration", "120", env=SECRET_ENV)
    try:
        wait_until(lambda: "Alertmanager webhook on" in out.read_text(errors="replace") or demo.poll() is not None,
                   timeout_s=90, what="the demo serving")
        text = out.read_text(errors="replace")
        assert demo.poll() is None, text[-3000:]
        grpc_port = int(text.split("gRPC on 127.0.0.1:")[1].split()[0])
        assert _post(webhook_port, TWO, None) == 401
        assert _post(webhook_port, TWO, GRPC_TOKEN) == 401  # the webhook's own token wins when set
        probe = payload({**TWO["alerts"][0], "labels": {"alertname": "SecretProbe", "severity": "critical",  # type: ignore[index]
                                                        "service": "checkout"}, "fingerprint": "5ec7e75ec7e75ec7"})
        assert _post(webhook_port, probe, WEBHOOK_TOKEN) == 200
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = pb_grpc.FindingsStub(channel)
            for metadata in ((("authorization", f"Bearer {WEBHOOK_TOKEN}"),), ()):
                try:
                    stub.List(pb.ListFindingsRequest(limit=1), metadata=metadata, timeout=10)
                    raise AssertionError("a call without the gRPC token succeeded")
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
            stub.List(pb.ListFindingsRequest(limit=1), metadata=(("authorization", f"Bearer {GRPC_TOKEN}"),),
                      timeout=10)
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(60) == 0
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(10)
    text = out.read_text(errors="replace")
    assert "DEBUG" in text  # debug logging was on: the check covers every level
    assert _leaks(text) == [], text[-3000:]
