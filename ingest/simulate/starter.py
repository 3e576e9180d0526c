"""A small, fast, seeded event stream for the walking skeleton and the first seconds of ``sleuth demo``.

Three services calling each other with spans, metrics and logs, a deploy, a latency fault with a critical
alert, and a payment stream in which a few transfers are large. It exists so a pipeline can be exercised end
to end in a second; the full simulators (``ingest.simulate.ops`` and ``ingest.simulate.payments``) carry the
ground truth used for training and evaluation.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from schema.events import (
    AlertEvent,
    ChangeEvent,
    EventBase,
    IdentityEvent,
    LogEvent,
    MetricEvent,
    SpanEvent,
    TopologyEvent,
    TransactionEvent,
)

SERVICES = {"frontend": ["checkout"], "checkout": ["payments"], "payments": []}


def starter_events(seed: int = 7, start: datetime | None = None, minutes: int = 20,
                   large_amount: float = 10_000.0) -> list[EventBase]:
    """A time-ordered stream; the fault hits ``payments`` at ``start + minutes/2``."""
    rng = random.Random(seed)
    start = start or datetime(2026, 1, 1, tzinfo=UTC)
    fault_at = start + timedelta(minutes=minutes // 2)
    events: list[EventBase] = []
    for service, calls in SERVICES.items():
        events.append(TopologyEvent(id=f"topo-{service}", at=start, service=service, instance=f"{service}-0",
                                    host=f"node-{len(service) % 2}", calls=calls))
    events.append(ChangeEvent(id="deploy-payments-42", at=fault_at - timedelta(minutes=2), kind="deploy",
                              service="payments", version="v42", description="bump client library"))
    for minute in range(minutes):
        at = start + timedelta(minutes=minute)
        faulty = at >= fault_at
        for service, calls in SERVICES.items():
            latency = rng.gauss(40, 3) + (400 if faulty and service == "payments" else 0)
            events.append(MetricEvent(id=f"m-{service}-{minute}", at=at, entity_kind="service", entity=service,
                                      metric="latency_p99_ms", value=max(latency, 1.0)))
            level = "ERROR" if faulty and service == "payments" else "INFO"
            text = ("Timeout calling ledger after 3000 ms" if level == "ERROR"
                    else f"Handled request {rng.randint(1000, 9999)} in {rng.randint(5, 60)} ms")
            events.append(LogEvent(id=f"l-{service}-{minute}", at=at, service=service, instance=f"{service}-0",
                                   level=level, message=text))
            for callee in calls:
                events.append(SpanEvent(id=f"s-{service}-{callee}-{minute}", at=at, trace_id=f"t-{minute}",
                                        service=callee, caller=service, operation="POST /pay",
                                        duration_ms=latency, error=faulty and callee == "payments"))
    events.append(AlertEvent(id="alert-payments-latency", at=fault_at + timedelta(minutes=1),
                             name="PaymentsLatencyHigh", severity="critical", service="payments",
                             annotations={"summary": "p99 latency above SLO"}))
    accounts = [f"acct-{i:03d}" for i in range(20)]
    # Two accounts per device (a couple sharing a phone): too few to look like a shared-identity ring.
    device_of = {account: f"dev-{i // 2}" for i, account in enumerate(accounts)}
    for account, device in device_of.items():
        events.append(IdentityEvent(id=f"id-{account}", at=start, account=account, kind="device", value=device))
    for n in range(60):
        src, dst = rng.sample(accounts, 2)
        amount = round(large_amount * 1.5, 2) if n % 20 == 7 else round(rng.uniform(5, 300), 2)
        events.append(TransactionEvent(id=f"tx-{n:04d}", at=start + timedelta(seconds=20 * n), src=src, dst=dst,
                                       amount=amount, currency="EUR", channel="p2p", device=device_of[src]))
    events.sort(key=lambda e: e.at)
    return events
