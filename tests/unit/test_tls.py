"""gRPC over TLS and mutual TLS, with certificates made by the openssl CLI at test time."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import ValidationError

from ingest.detectors import BasicRuleDetector
from ingest.store.memory import MemoryGraphStore
from rules.basic import BasicRulesConfig
from rules.engine import RulesEngine
from schema.proto.sleuth.v1 import sleuth_pb2 as pb
from schema.proto.sleuth.v1 import sleuth_pb2_grpc as pb_grpc
from server.app import ServerParts, TlsFiles
from server.host import build_embedded_host, tls_files
from server.hub import FindingHub
from server.settings import GrpcSettings, Settings
from tests.grpc_harness import running_server

SERVING = health_pb2.HealthCheckResponse.SERVING
SAN = "subjectAltName=DNS:localhost,IP:127.0.0.1"


@dataclass(frozen=True)
class Pki:
    folder: Path
    self_signed: Path  # a server certificate signed by itself (with its key next to it)
    ca: Path
    server: Path  # a server certificate signed by ``ca``
    client: Path  # a client certificate signed by ``ca``
    stranger: Path  # a client certificate signed by another CA

    def read(self, name: str) -> bytes:
        return (self.folder / name).read_bytes()


def _openssl(folder: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=60)


def _key_and_csr(folder: Path, name: str, cn: str) -> None:
    _openssl(folder, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}")


def _sign(folder: Path, name: str, ca: str, extensions: str | None = None) -> None:
    args = ["x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "1"]
    if extensions:
        (folder / f"{name}.ext").write_text(extensions + "\n")
        args += ["-extfile", f"{name}.ext"]
    _openssl(folder, *args)


def _self_signed(folder: Path, name: str, cn: str, extension: str | None = None) -> None:
    args = ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "1", "-subj", f"/CN={cn}"]
    _openssl(folder, *args, *(["-addext", extension] if extension else []))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if shutil.which("openssl") is None:
        message = "the openssl CLI is needed to make test certificates"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(message + " (CI=true: never skipped)")
        pytest.skip(message)
    folder = tmp_path_factory.mktemp("pki")
    _self_signed(folder, "self", "localhost", SAN)
    _self_signed(folder, "ca", "sleuth-test-ca")
    _self_signed(folder, "other-ca", "someone-else-ca")
    _key_and_csr(folder, "server", "localhost")
    _sign(folder, "server", "ca", SAN)
    _key_and_csr(folder, "client", "sleuth-client")
    _sign(folder, "client", "ca")
    _key_and_csr(folder, "stranger", "stranger")
    _sign(folder, "stranger", "other-ca")
    return Pki(folder, folder / "self.pem", folder / "ca.pem", folder / "server.pem", folder / "client.pem",
               folder / "stranger.pem")


def _parts(tls: TlsFiles, token: str | None = None) -> ServerParts:
    scorer = BasicRuleDetector(RulesEngine(), BasicRulesConfig(large_amount=1000))
    return ServerParts(MemoryGraphStore(), FindingHub(), scorer, token=token, tls=tls)


def _check(channel: grpc.Channel) -> int:
    """Health over ``channel``; raises grpc.RpcError when the connection cannot be made."""
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status


def _refused(channel: grpc.Channel) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        _check(channel)
    return info.value.code()


def _tls(root: bytes, key: bytes | None = None, cert: bytes | None = None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=cert)


@pytest.fixture
def tls_server(pki: Pki) -> Iterator[int]:
    with running_server(_parts(TlsFiles(pki.read("self.pem"), pki.read("self.key")), token="tls-tok")) as (port, _):
        yield port


def test_tls_calls_succeed_and_plaintext_calls_fail(pki: Pki, tls_server: int) -> None:
    address = f"127.0.0.1:{tls_server}"
    with grpc.secure_channel(address, _tls(pki.read("self.pem"))) as channel:
        assert _check(channel) == SERVING
        findings = pb_grpc.FindingsStub(channel)
        with pytest.raises(grpc.RpcError) as info:  # TLS does not replace the token
            findings.List(pb.ListFindingsRequest(limit=5), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        reply = findings.List(pb.ListFindingsRequest(limit=5), metadata=(("authorization", "Bearer tls-tok"),),
                              timeout=10)
        assert list(reply.findings) == []
    with grpc.insecure_channel(address) as channel:
        assert _refused(channel) == grpc.StatusCode.UNAVAILABLE
    with grpc.secure_channel(address, _tls(pki.read("ca.pem"))) as channel:  # a CA that did not sign it
        assert _refused(channel) == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_needs_a_client_certificate_from_the_configured_ca(pki: Pki) -> None:
    tls = TlsFiles(pki.read("server.pem"), pki.read("server.key"), client_ca=pki.read("ca.pem"))
    with running_server(_parts(tls)) as (port, _):
        address = f"127.0.0.1:{port}"
        ca = pki.read("ca.pem")
        with grpc.secure_channel(address, _tls(ca, pki.read("client.key"), pki.read("client.pem"))) as channel:
            assert _check(channel) == SERVING
            assert list(pb_grpc.FindingsStub(channel).List(pb.ListFindingsRequest(limit=1), timeout=10).findings) == []
        with grpc.secure_channel(address, _tls(ca)) as channel:  # no client certificate
            assert _refused(channel) == grpc.StatusCode.UNAVAILABLE
        stranger = _tls(ca, pki.read("stranger.key"), pki.read("stranger.pem"))
        with grpc.secure_channel(address, stranger) as channel:  # signed by another CA
            assert _refused(channel) == grpc.StatusCode.UNAVAILABLE
        with grpc.insecure_channel(address) as channel:
            assert _refused(channel) == grpc.StatusCode.UNAVAILABLE


def test_tls_settings_come_from_the_environment_and_reach_the_server(pki: Pki, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLEUTH_GRPC__TLS_CERT", str(pki.server))
    monkeypatch.setenv("SLEUTH_GRPC__TLS_KEY", str(pki.folder / "server.key"))
    monkeypatch.setenv("SLEUTH_GRPC__TLS_CLIENT_CA", str(pki.ca))
    settings = Settings(state_dir=tmp_path)
    files = tls_files(settings)
    assert files is not None and files.cert_chain == pki.read("server.pem") and files.client_ca == pki.read("ca.pem")
    assert pki.read("server.key") not in repr(files).encode()
    host = build_embedded_host(settings)
    with running_server(host.server_parts(settings)) as (port, _):
        client = _tls(pki.read("ca.pem"), pki.read("client.key"), pki.read("client.pem"))
        with grpc.secure_channel(f"127.0.0.1:{port}", client) as channel:
            assert _check(channel) == SERVING
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert _refused(channel) == grpc.StatusCode.UNAVAILABLE
    assert tls_files(Settings(state_dir=tmp_path, grpc=GrpcSettings())) is None


@pytest.mark.parametrize("fields", [{"tls_cert": "a.pem"}, {"tls_key": "a.key"}, {"tls_client_ca": "ca.pem"}])
def test_incomplete_tls_settings_are_refused(fields: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match="tls"):
        GrpcSettings(**fields)  # type: ignore[arg-type]
