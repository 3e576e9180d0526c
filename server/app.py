"""The gRPC server: sleuth.v1 services, health, reflection, bearer-token auth, request metrics, size limits.

``create_server`` builds and binds (port 0 picks a free port, for tests) and returns ``(server, port)``;
``serve`` runs it until cancelled, with graceful shutdown (health NOT_SERVING first, then drain).
With :class:`TlsFiles` in the parts the port speaks TLS only (and requires a client certificate when a
client CA is given).
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from prometheus_client import Counter, Histogram

from schema.proto.sleuth.v1 import sleuth_pb2 as pb
from schema.proto.sleuth.v1 import sleuth_pb2_grpc as pb_grpc
from schema.store import GraphStore
from server.hub import FindingHub
from server.services import (
    FindingsService,
    FraudService,
    RootCauseAnalyzer,
    RootCauseService,
    TransactionScorer,
)

log = logging.getLogger(__name__)

SERVICE_NAMES = tuple(pb.DESCRIPTOR.services_by_name[name].full_name for name in ("RootCause", "Fraud", "Findings"))
#: Methods anyone may call: load balancers and grpcurl need them without a token.
_PUBLIC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

_REQUESTS = Counter("sleuth_grpc_requests_total", "gRPC requests", ["method", "code"])
_LATENCY = Histogram("sleuth_grpc_request_seconds", "gRPC request latency", ["method"],
                     buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Requires ``authorization: Bearer <token>`` on every sleuth.v1 call when a token is configured."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if details.method.startswith(_PUBLIC_PREFIXES):
            return await continuation(details)
        supplied = dict(details.invocation_metadata or ()).get("authorization", "")
        supplied_bytes = supplied.encode() if isinstance(supplied, str) else supplied
        if hmac.compare_digest(supplied_bytes, self._expected):  # constant time: no token oracle
            return await continuation(details)
        return _deny(await continuation(details))


def _deny(handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler:
    async def abort(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")

    async def abort_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")
        yield  # pragma: no cover - makes this an async generator

    if handler is not None and handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort_stream, handler.request_deserializer,
                                                    handler.response_serializer)
    return grpc.unary_unary_rpc_method_handler(
        abort,
        handler.request_deserializer if handler else None,
        handler.response_serializer if handler else None,
    )


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts requests by method and status code and times unary calls."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        method = details.method

        async def timed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            code = "OK"
            try:
                return await inner(request, context)
            except BaseException:
                code = str(context.code() or grpc.StatusCode.UNKNOWN).removeprefix("StatusCode.")
                raise
            finally:
                _REQUESTS.labels(method, code).inc()
                _LATENCY.labels(method).observe(time.perf_counter() - started)

        return grpc.unary_unary_rpc_method_handler(timed, handler.request_deserializer, handler.response_serializer)


@dataclass(frozen=True)
class TlsFiles:
    """PEM contents (not paths) for a TLS port; ``client_ca`` set means mutual TLS."""

    cert_chain: bytes
    private_key: bytes = field(repr=False)
    client_ca: bytes | None = None

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials([(self.private_key, self.cert_chain)],
                                           root_certificates=self.client_ca,
                                           require_client_auth=self.client_ca is not None)


@dataclass
class ServerParts:
    """What the servicers need, injected."""

    store: GraphStore
    hub: FindingHub
    scorer: TransactionScorer
    analyzer: RootCauseAnalyzer | None = None
    token: str | None = field(default=None, repr=False)
    max_message_bytes: int = 4 * 1024 * 1024
    tls: TlsFiles | None = None


async def create_server(parts: ServerParts, host: str = "127.0.0.1", port: int = 0) -> tuple[grpc.aio.Server, int,
                                                                                             health_aio.HealthServicer]:
    """Build, register and bind the server; returns it with its bound port and health servicer."""
    interceptors: list[grpc.aio.ServerInterceptor] = [MetricsInterceptor()]
    if parts.token:
        interceptors.insert(0, AuthInterceptor(parts.token))
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", parts.max_message_bytes),
            ("grpc.max_send_message_length", parts.max_message_bytes),
        ],
    )
    pb_grpc.add_FindingsServicer_to_server(FindingsService(parts.store, parts.hub), server)
    pb_grpc.add_FraudServicer_to_server(FraudService(parts.store, parts.scorer), server)
    pb_grpc.add_RootCauseServicer_to_server(RootCauseService(parts.store, parts.analyzer), server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection((*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                                         reflection.SERVICE_NAME), server)
    address = f"{host}:{port}"
    try:
        bound = (server.add_secure_port(address, parts.tls.credentials()) if parts.tls is not None
                 else server.add_insecure_port(address))
    except RuntimeError as exc:  # grpc raises RuntimeError when the address is taken
        raise OSError(f"cannot bind gRPC to {address}: {exc}") from exc
    if bound == 0:
        raise OSError(f"cannot bind gRPC to {address}")
    for name in ("", *SERVICE_NAMES):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, bound, health


async def shutdown(server: grpc.aio.Server, health: health_aio.HealthServicer, grace_s: float = 5.0) -> None:
    """Graceful stop: report NOT_SERVING so balancers move away, then let in-flight calls finish."""
    await health.enter_graceful_shutdown()
    await server.stop(grace_s)
