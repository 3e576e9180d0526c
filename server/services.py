"""gRPC servicers of ``sleuth.v1``: Findings, Fraud, RootCause.

Handlers validate their request first (INVALID_ARGUMENT naming the field and the limit), run blocking store
and model calls in worker threads so the event loop keeps serving, and map failures to precise codes:
unknown ids -> NOT_FOUND, store down -> UNAVAILABLE. No stack trace ever reaches a caller.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

import grpc
from pydantic import ValidationError

from ingest.detectors import TransactionScore
from ingest.errors import StoreError, StoreUnavailable
from ingest.findings import finding_from_node
from schema.findings import ENTITY_LABELS, Evidence
from schema.proto.sleuth.v1 import sleuth_pb2 as pb
from schema.proto.sleuth.v1 import sleuth_pb2_grpc as pb_grpc
from schema.store import GraphStore, Node, NodeRef, TimeWindow
from server.convert import evidence_to_pb, finding_to_pb, from_timestamp, to_timestamp, transaction_from_pb
from server.hub import FindingHub, WatchFilter

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_LIMIT = 1000
MAX_TOP_K = 50
MAX_WINDOW = timedelta(hours=24)
DEFAULT_WINDOW = timedelta(minutes=30)


class TransactionScorer(Protocol):
    """Scores one transaction inline (fraud detector, or the basic rules)."""

    def score_transaction(self, event: Any) -> TransactionScore: ...


@dataclass(frozen=True)
class RootCauseQuery:
    """A validated Analyze request."""

    anchor: NodeRef
    window: TimeWindow
    top_k: int
    method: str
    #: The anchor's node as the server read it to validate the request (the analyzer need not read it again).
    node: Node | None = None


class RootCauseAnalyzer(Protocol):
    """Answers root-cause queries (the RCA engine)."""

    def analyze(self, query: RootCauseQuery) -> pb.AnalyzeResponse: ...


async def _call(context: grpc.aio.ServicerContext, fn: Callable[[], T]) -> T:
    """Run a blocking call off the event loop, mapping store failures to status codes."""
    try:
        return await asyncio.to_thread(fn)
    except StoreUnavailable as exc:
        log.warning("store unavailable: %s", exc)
        await context.abort(grpc.StatusCode.UNAVAILABLE, "graph store unavailable, retry later")
    except StoreError as exc:
        log.error("store error: %s", exc)
        await context.abort(grpc.StatusCode.INTERNAL, "graph store error")
    raise AssertionError("unreachable")  # abort raises


def _limit(value: int, default: int, maximum: int, name: str) -> int | str:
    if value < 0:
        return f"{name} must not be negative"
    if value > maximum:
        return f"{name} is {value}; the limit is {maximum}"
    return value or default


class FindingsService(pb_grpc.FindingsServicer):
    """List, get and watch findings."""

    def __init__(self, store: GraphStore, hub: FindingHub) -> None:
        self._store = store
        self._hub = hub

    async def List(self, request: pb.ListFindingsRequest, context: grpc.aio.ServicerContext) -> pb.ListFindingsResponse:
        limit = _limit(request.limit, 100, MAX_LIMIT, "limit")
        if isinstance(limit, str):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, limit)
        window = TimeWindow(from_timestamp(request.since, request.HasField("since")),
                            from_timestamp(request.until, request.HasField("until")))
        equals = {"kind": request.kind} if request.kind else None
        entity = (request.entity.kind, request.entity.name) if request.HasField("entity") else None
        if entity and entity[0] not in ENTITY_LABELS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"entity.kind {entity[0]!r} is unknown")

        def read() -> list[pb.Finding]:
            # Over-fetch when filtering in Python so the limit still holds after the filter.
            nodes = self._store.find_nodes("Finding", window, equals, limit=limit * 4 if entity else limit)
            found = [finding_from_node(n) for n in nodes]
            found = [f for f in found if f.score >= request.min_score and
                     (entity is None or any((e.kind, e.name) == entity for e in f.entities))]
            return [finding_to_pb(f) for f in found[:limit]]

        return pb.ListFindingsResponse(findings=await _call(context, read))

    async def Get(self, request: pb.GetFindingRequest, context: grpc.aio.ServicerContext) -> pb.Finding:
        if not request.id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "id is required")
        node = await _call(context, lambda: self._store.get_node(NodeRef("Finding", request.id)))
        if node is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no finding {request.id!r}")
        return finding_to_pb(finding_from_node(node))

    async def Watch(self, request: pb.WatchRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.Finding]:
        entity = (request.entity.kind, request.entity.name) if request.HasField("entity") else None
        subscription = self._hub.subscribe(WatchFilter(frozenset(request.kinds), entity, request.min_score))
        try:
            while True:
                finding = await subscription.queue.get()
                yield finding_to_pb(finding)
        finally:
            self._hub.unsubscribe(subscription)


class FraudService(pb_grpc.FraudServicer):
    """Inline transaction scoring and ring queries."""

    def __init__(self, store: GraphStore, scorer: TransactionScorer) -> None:
        self._store = store
        self._scorer = scorer

    async def ScoreTransaction(self, request: pb.ScoreTransactionRequest,
                               context: grpc.aio.ServicerContext) -> pb.ScoreTransactionResponse:
        try:
            event = transaction_from_pb(request.transaction)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "transaction"
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"transaction.{where}: {first['msg']}")
        if event.at > datetime.now(UTC) + timedelta(minutes=5):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "transaction.at is in the future")
        result = await asyncio.to_thread(self._scorer.score_transaction, event)
        return pb.ScoreTransactionResponse(
            transaction_id=event.id, score=result.score, reasons=[evidence_to_pb(r) for r in result.reasons],
            rings=result.rings,
        )

    async def FindRings(self, request: pb.FindRingsRequest, context: grpc.aio.ServicerContext) -> pb.FindRingsResponse:
        limit = _limit(request.limit, 100, MAX_LIMIT, "limit")
        if isinstance(limit, str):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, limit)
        window = TimeWindow(from_timestamp(request.since, request.HasField("since")),
                            from_timestamp(request.until, request.HasField("until")))

        def read() -> list[pb.FraudRing]:
            rings = []
            for node in self._store.find_nodes("FraudRing", window, limit=limit * 4):
                if float(node.props.get("score", 0.0)) < request.min_score or node.props.get("status") == "merged":
                    continue  # a merged ring lives on in the ring it was merged into
                members = [
                    pb.RingMember(account=rel.start.key, role=str(rel.props.get("role", "")))
                    for rel in self._store.rels_of(node.ref, "MEMBER_OF", "in")
                ]
                evidence = [rel.end.key for rel in self._store.rels_of(node.ref, "EVIDENCE", "out")]
                detected = node.props.get("detected_at")
                rings.append(pb.FraudRing(
                    id=node.key, kind=str(node.props.get("kind", "")), score=float(node.props.get("score", 0.0)),
                    detected_at=to_timestamp(detected) if detected else None, members=members,
                    evidence_transactions=evidence, status=str(node.props.get("status", "")),
                ))
                if len(rings) >= limit:
                    break
            return rings

        return pb.FindRingsResponse(rings=await _call(context, read))


class RootCauseService(pb_grpc.RootCauseServicer):
    """Root-cause queries by alert, incident, or service and window."""

    def __init__(self, store: GraphStore, analyzer: RootCauseAnalyzer | None) -> None:
        self._store = store
        self._analyzer = analyzer

    async def Analyze(self, request: pb.AnalyzeRequest, context: grpc.aio.ServicerContext) -> pb.AnalyzeResponse:
        started = time.perf_counter()
        top_k = _limit(request.top_k, 5, MAX_TOP_K, "top_k")
        if isinstance(top_k, str):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, top_k)
        anchor_field = request.WhichOneof("anchor")
        if anchor_field is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "one of alert_id, incident_id or service is required")
        label = {"alert_id": "Alert", "incident_id": "Incident", "service": "Service"}[anchor_field]
        key = getattr(request, anchor_field)
        node = await _call(context, lambda: self._store.get_node(NodeRef(label, key)))
        if node is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no {label.lower()} {key!r} in the graph")
        anchor_at = node.props.get("at") or node.props.get("last_seen") or datetime.now(UTC)
        until = from_timestamp(request.until, request.HasField("until")) or anchor_at + timedelta(minutes=5)
        since = from_timestamp(request.since, request.HasField("since")) or until - DEFAULT_WINDOW
        if until <= since:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the window is empty: until must be after since")
        if until - since > MAX_WINDOW:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"the window is {until - since}; the limit is {MAX_WINDOW}")
        if self._analyzer is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "no root-cause analyzer is loaded in this server")
        methods = getattr(self._analyzer, "methods", None)
        if methods is not None and request.method not in methods:
            known = ", ".join(m for m in methods if m)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown method {request.method!r}; one of {known}")
        query = RootCauseQuery(NodeRef(label, key), TimeWindow(since, until), top_k, request.method, node)
        response = await _call(context, lambda: self._analyzer.analyze(query))
        response.elapsed_ms = (time.perf_counter() - started) * 1000
        return response


def evidence_json(evidence: list[Evidence]) -> str:
    """Evidence as JSON text (for graph properties)."""
    return json.dumps([e.model_dump() for e in evidence])
