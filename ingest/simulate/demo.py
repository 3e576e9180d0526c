"""The event streams ``sleuth demo`` plays: both simulators, small enough to show findings within a minute.

Two streams, each in its own time order: an ops scenario (a dozen services with a few faults, so incidents
and their root causes appear) and a payments scenario (a few hundred accounts with laundering and identity
rings). The demo feeds them side by side; each detector keeps its own event clock, so the two scenarios
need not share dates.
"""

from __future__ import annotations

from ingest.simulate.ops import OpsSimConfig, simulate_ops
from ingest.simulate.payments import PaymentsSimConfig, simulate_payments
from schema.events import EventBase


def demo_streams(seed: int = 7, services: int = 12, incidents: int = 3, accounts: int = 300,
                 days: int = 10) -> dict[str, list[EventBase]]:
    """The demo's streams by name (``ops``, ``payments``), each sorted by event time."""
    ops = simulate_ops(OpsSimConfig(seed=seed, min_services=services, max_services=services,
                                    n_incidents=incidents))
    payments = simulate_payments(PaymentsSimConfig(seed=seed, accounts=accounts, days=days, history_days=2,
                                                   rings_per_kind=1, identity_rings=2, account_takeovers=2))
    return {"ops": list(ops.events), "payments": list(payments.events)}
