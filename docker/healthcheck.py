"""Container health probe for ``sleuth serve``: exit 0 when the gRPC server answers SERVING, 1 otherwise.

Asks the standard ``grpc.health.v1.Health/Check`` for the server as a whole (service ``""``). Health is a
public method, so no token is needed. The target is ``127.0.0.1:$SLEUTH_GRPC__PORT`` (50051 by default) or
the first argument. When the port speaks TLS (``SLEUTH_GRPC__TLS_CERT`` set) a plaintext probe cannot talk
to it and the container may hold no client certificate, so the probe only checks that the port accepts
connections.

Standard library and grpcio only: it runs in the image's environment, outside the sleuthgraph packages.
"""

from __future__ import annotations

import os
import socket
import sys

TIMEOUT_S = 3.0


def main(argv: list[str]) -> int:
    port = os.environ.get("SLEUTH_GRPC__PORT") or "50051"
    target = argv[1] if len(argv) > 1 else f"127.0.0.1:{port}"
    if os.environ.get("SLEUTH_GRPC__TLS_CERT"):
        host, _, port_text = target.rpartition(":")
        try:
            socket.create_connection((host, int(port_text)), timeout=TIMEOUT_S).close()
        except OSError as exc:
            print(f"unhealthy: {target} does not accept connections: {exc}", file=sys.stderr)
            return 1
        return 0

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        with grpc.insecure_channel(target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""),
                                                              timeout=TIMEOUT_S)
    except grpc.RpcError as exc:
        print(f"unhealthy: {target}: {exc.code().name}", file=sys.stderr)
        return 1
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        print(f"unhealthy: {target}: {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
