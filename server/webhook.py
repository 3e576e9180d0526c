"""The Alertmanager-compatible webhook: POST a webhook_config (version 4) payload, its alerts go to Kafka.

Alertmanager posts JSON notifications to a ``webhook_config`` URL. Each payload is validated with the
event contract (:class:`schema.events.AlertmanagerWebhook`, through the ingest decoder), every alert
becomes an :class:`AlertEvent` keyed like ``sleuth produce`` keys it (:func:`schema.events.partition_key`),
and the request is answered only when the alerts are durable: acknowledged by Kafka (``acks=all``) or
appended to the in-process bus of the embedded demo.

Answers (JSON bodies: ``{"status": "ok", "accepted": n}`` or ``{"status": "error", "error": reason}``):

* 200: every alert acknowledged. Alert ids are Alertmanager fingerprints and graph writes are idempotent,
  so a retried notification changes nothing.
* 400: not JSON, not an Alertmanager v4 payload, or an alert the contract rejects (the reason names the
  field). Alertmanager does not retry 4xx: the payload would never pass.
* 401: a token is configured and ``Authorization: Bearer <token>`` is missing or wrong.
* 404 / 405: another path / another method than ``POST``.
* 411 / 413: no ``Content-Length`` / a body over the limit (answered from the headers, before the body).
* 503: the broker did not acknowledge in time. Alertmanager retries 5xx, so nothing is lost.

It is a small ``http.server`` in its own threads (one per request, joined on stop): no extra dependency.
"""

from __future__ import annotations

import hmac
import json
import logging
import socket
import threading
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import urlsplit

from prometheus_client import Counter

from ingest.bus import InProcessBus
from ingest.decode import DecodeLimits, Rejection, decode_object
from schema.events import AlertEvent, EventBase, partition_key

log = logging.getLogger(__name__)

DEFAULT_PATH = "/api/v1/alerts/alertmanager"

_REQUESTS = Counter("sleuth_webhook_requests_total", "Alertmanager webhook requests", ["code"])
_ALERTS = Counter("sleuth_webhook_alerts_total", "Alerts accepted through the Alertmanager webhook")


class AlertSink(Protocol):
    """Where accepted alerts go. ``send`` returns only once they are durable and raises otherwise."""

    def send(self, alerts: Sequence[AlertEvent]) -> None: ...


def _record(alert: AlertEvent) -> tuple[bytes, bytes]:
    """Value and key of an alert's record: the event JSON, keyed like ``sleuth produce`` keys it."""
    return alert.model_dump_json().encode(), partition_key(alert).encode()


class BusAlertSink:
    """Alerts to a topic of the in-process bus (the embedded demo): appended synchronously."""

    def __init__(self, bus: InProcessBus, topic: str) -> None:
        self._bus = bus
        self._topic = topic

    def send(self, alerts: Sequence[AlertEvent]) -> None:
        for alert in alerts:
            value, key = _record(alert)
            self._bus.produce(self._topic, value, key)


class ProducerAlertSink:
    """Alerts to a Kafka topic through a kafka-python producer; waits for every acknowledgement."""

    def __init__(self, producer: Any, topic: str, timeout_s: float = 30.0) -> None:
        self._producer = producer
        self._topic = topic
        self._timeout_s = timeout_s

    def send(self, alerts: Sequence[AlertEvent]) -> None:
        futures = []
        for alert in alerts:
            value, key = _record(alert)
            futures.append(self._producer.send(self._topic, value=value, key=key))
        self._producer.flush(timeout=self._timeout_s)
        for future in futures:
            future.get(timeout=self._timeout_s)  # raises if the broker refused or never answered


class _HttpServer(ThreadingHTTPServer):
    # Request threads are joined on close, so a request in flight finishes (and is acknowledged or
    # answered 503) before the producer behind the sink is closed.
    daemon_threads = False
    block_on_close = True

    def __init__(self, address: tuple[str, int], app: WebhookServer) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.app = app
        super().__init__(address, _Handler)


class WebhookServer:
    """The HTTP endpoint. Binds in the constructor (port 0 picks a free one); :meth:`start` serves in a thread."""

    def __init__(self, sink: AlertSink, host: str = "127.0.0.1", port: int = 0, path: str = DEFAULT_PATH,
                 token: str | None = None, max_body_bytes: int = 4 * 1024 * 1024,
                 limits: DecodeLimits | None = None) -> None:
        self.sink = sink
        self.path = path
        self.max_body_bytes = max_body_bytes
        self.limits = limits or DecodeLimits(max_bytes=max_body_bytes)
        self._expected = f"Bearer {token}".encode() if token else None
        self._httpd = _HttpServer((host, port), self)
        self.host = host
        self.port: int = self._httpd.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.path}"

    def authorized(self, header: str | None) -> bool:
        if self._expected is None:
            return True
        return hmac.compare_digest((header or "").encode(), self._expected)  # constant time

    def start(self) -> None:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="webhook", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, let requests in flight finish, release the port."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: _HttpServer
    server_version = "sleuthgraph-webhook"
    #: Seconds a client may stall while sending; keeps a slow client from holding a thread (and shutdown).
    timeout = 15

    # -- routing --------------------------------------------------------------------------------

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        app = self.server.app
        if not self._on_path():
            return
        if not app.authorized(self.headers.get("Authorization")):
            self._reply(HTTPStatus.UNAUTHORIZED, error="missing or invalid bearer token",
                        headers={"WWW-Authenticate": 'Bearer realm="sleuthgraph"'})
            return
        body = self._body(app.max_body_bytes)
        if body is None:
            return
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            self._reply(HTTPStatus.BAD_REQUEST, error=f"not JSON: {exc}")
            return
        alerts = self._alerts(payload)
        if alerts is None:
            return
        try:
            app.sink.send(alerts)
        except Exception as exc:  # the broker did not acknowledge: Alertmanager retries 5xx
            log.warning("webhook: %d alerts not acknowledged: %s", len(alerts), exc)
            self._reply(HTTPStatus.SERVICE_UNAVAILABLE, error=f"alerts not acknowledged by the broker: {exc}")
            return
        _ALERTS.inc(len(alerts))
        self._reply(HTTPStatus.OK, accepted=len(alerts))

    def _not_allowed(self) -> None:
        if self._on_path():
            self._reply(HTTPStatus.METHOD_NOT_ALLOWED, error=f"{self.command} not allowed: POST a webhook payload",
                        headers={"Allow": "POST"})

    do_GET = do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed  # noqa: N815

    # -- steps ----------------------------------------------------------------------------------

    def _on_path(self) -> bool:
        if urlsplit(self.path).path == self.server.app.path:
            return True
        self._reply(HTTPStatus.NOT_FOUND, error=f"no such path; Alertmanager payloads go to {self.server.app.path}")
        return False

    def _body(self, limit: int) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._reply(HTTPStatus.LENGTH_REQUIRED, error="send the body with a Content-Length, not chunked")
            return None
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            self._reply(HTTPStatus.LENGTH_REQUIRED, error="Content-Length is required")
            return None
        try:
            length = int(length_header)
            if length < 0:
                raise ValueError(length_header)
        except ValueError:
            self._reply(HTTPStatus.BAD_REQUEST, error=f"bad Content-Length: {length_header[:40]!r}")
            return None
        if length > limit:
            # Answered from the headers alone; then what the client already sent is read and dropped
            # (bounded), so closing the socket does not reset the connection before it reads the answer.
            self._reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, error=f"body is {length} bytes; the limit is {limit}")
            self._discard(min(length, 4 * limit))
            return None
        body = self.rfile.read(length)
        if len(body) < length:
            self._reply(HTTPStatus.BAD_REQUEST, error=f"body ended after {len(body)} of {length} bytes")
            return None
        return body

    def _discard(self, at_most: int) -> None:
        self.wfile.flush()
        self.connection.settimeout(2.0)
        try:
            while at_most > 0:
                chunk = self.rfile.read1(min(at_most, 65_536))
                if not chunk:
                    break
                at_most -= len(chunk)
        except OSError:
            pass  # the client gave up or stalled: nothing more to do

    def _alerts(self, payload: Any) -> list[AlertEvent] | None:
        if not isinstance(payload, dict) or "type" in payload:
            self._reply(HTTPStatus.BAD_REQUEST, error="expected an Alertmanager webhook payload (a JSON object with "
                        "version \"4\" and alerts); sleuthgraph events go to Kafka")
            return None
        if payload.get("version") != "4" or "alerts" not in payload:
            self._reply(HTTPStatus.BAD_REQUEST, error="not an Alertmanager webhook payload: needs version \"4\" and "
                        f"alerts (got version {str(payload.get('version'))[:20]!r})")
            return None
        decoded: list[EventBase] | Rejection = decode_object(payload, self.server.app.limits)
        if isinstance(decoded, Rejection):
            self._reply(HTTPStatus.BAD_REQUEST, error=f"{decoded.code}: {decoded.reason}")
            return None
        return [event for event in decoded if isinstance(event, AlertEvent)]

    def _reply(self, status: HTTPStatus, headers: dict[str, str] | None = None, **body: object) -> None:
        _REQUESTS.labels(str(int(status))).inc()
        data = json.dumps({"status": "ok" if status == HTTPStatus.OK else "error", **body}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's signature)
        # The request line and status only: never headers (the token travels in one).
        log.debug("webhook %s %s", self.address_string(), format % args)
