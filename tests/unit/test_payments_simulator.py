"""The payments simulator: ordering, ids, labels, typologies and the files it writes."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import timedelta

import pytest

from ingest.simulate.payments import LAUNDERING_KINDS, PaymentsSimConfig, simulate_payments, write_scenario
from schema.events import EVENT_ADAPTER, IdentityEvent, TransactionEvent

SMALL = PaymentsSimConfig(seed=3, accounts=300, merchants=20, employers=5, landlords=5, utilities=2, days=14,
                          rings_per_kind=1, identity_rings=2, account_takeovers=2)


@pytest.fixture(scope="module")
def scenario():
    return simulate_payments(SMALL)


def test_events_are_sorted_unique_and_tz_aware(scenario) -> None:
    times = [e.at for e in scenario.events]
    assert times == sorted(times)
    assert len({e.id for e in scenario.events}) == len(scenario.events)
    assert all(e.at.tzinfo is not None and e.at.utcoffset() == timedelta(0) for e in scenario.events)
    kinds = Counter(type(e) for e in scenario.events)
    assert kinds[IdentityEvent] > 0 and kinds[TransactionEvent] > 1000


def test_same_seed_same_scenario_other_seed_other_scenario() -> None:
    a, b = simulate_payments(SMALL), simulate_payments(SMALL)
    assert [e.model_dump() for e in a.events[:500]] == [e.model_dump() for e in b.events[:500]]
    c = simulate_payments(PaymentsSimConfig(**{**SMALL.__dict__, "seed": 4}))
    assert [e.id for e in c.events[:50]] != [e.id for e in a.events[:50]]


def test_every_transaction_and_account_is_labelled(scenario) -> None:
    tx_labels = {lb["transaction"]: lb["fraud"] for lb in scenario.labels if "transaction" in lb}
    acc_labels = {lb["account"]: lb for lb in scenario.labels if "account" in lb}
    txs = scenario.transactions
    assert set(tx_labels) == {t.id for t in txs}
    assert {t.src for t in txs} | {t.dst for t in txs} <= set(acc_labels)
    rings = defaultdict(set)
    for lb in acc_labels.values():
        if lb.get("ring"):
            assert lb["fraud"] is True
            rings[lb["ring"]].add(lb["account"])
    # One ring per laundering kind, the identity rings and one structuring ring.
    kinds = Counter(r.split("-", 2)[2] for r in rings)
    assert {k: kinds[k] for k in LAUNDERING_KINDS} == {k: 1 for k in LAUNDERING_KINDS}
    assert kinds["identity"] == 2 and kinds["structuring"] == 1
    # Nobody plays a part in two rings.
    members = [a for ring in rings.values() for a in ring]
    assert len(members) == len(set(members))


def test_laundering_amounts_come_from_the_normal_range(scenario) -> None:
    tx_labels = {lb["transaction"]: lb["fraud"] for lb in scenario.labels if "transaction" in lb}
    p2p_normal = sorted(t.amount for t in scenario.transactions if t.channel == "p2p" and not tx_labels[t.id])
    fraud_p2p = [t.amount for t in scenario.transactions if t.channel == "p2p" and tx_labels[t.id]]
    assert fraud_p2p
    lo, hi = p2p_normal[0], p2p_normal[-1]
    assert all(lo <= a <= hi for a in fraud_p2p)


def test_legitimate_look_alikes_exist(scenario) -> None:
    # Families share devices (2-3 accounts) without being labelled fraud.
    users = defaultdict(set)
    for e in scenario.events:
        if isinstance(e, IdentityEvent) and e.kind == "device":
            users[e.value].add(e.account)
    fraud = {lb["account"] for lb in scenario.labels if "account" in lb and lb["fraud"]}
    shared_legit = [u for u in users.values() if len(u) >= 2 and not (u & fraud)]
    assert shared_legit and max(len(u) for u in shared_legit) <= 3
    # Employers fan salaries out to many accounts on one day.
    per_day = Counter((t.src, t.at.date()) for t in scenario.transactions if t.src.startswith("E"))
    assert max(per_day.values()) >= 10


def test_write_scenario_round_trips(tmp_path, scenario) -> None:
    events_path, labels_path = write_scenario(scenario, tmp_path / "out")
    lines = events_path.read_text().splitlines()
    assert len(lines) == len(scenario.events)
    assert EVENT_ADAPTER.validate_json(lines[0]) == scenario.events[0]
    labels = [json.loads(x) for x in labels_path.read_text().splitlines()]
    assert labels == scenario.labels


def test_laundering_uses_the_channels_people_use(scenario) -> None:
    # Person-to-person payments go through a p2p app or a bank transfer in the same proportions, fraud or
    # not: a channel that only launderers used would be a give-away no real data has.
    tx_labels = {lb["transaction"]: lb["fraud"] for lb in scenario.labels if "transaction" in lb}
    accounts = {lb["account"] for lb in scenario.labels if "account" in lb and lb["account"].startswith("A")}
    people = [t for t in scenario.transactions if t.src in accounts and t.dst in accounts
              and t.channel in ("p2p", "transfer")]
    share = {}
    for fraud in (False, True):
        chosen = [t for t in people if tx_labels[t.id] == fraud]
        share[fraud] = sum(t.channel == "transfer" for t in chosen) / len(chosen)
    assert abs(share[True] - share[False]) < 0.1, share
    assert 0.2 < share[False] < 0.4


def test_short_simulations_run_and_impossible_ones_say_why() -> None:
    short = simulate_payments(PaymentsSimConfig(seed=4, accounts=120, merchants=10, employers=3, landlords=4,
                                                utilities=2, days=4, history_days=1, rings_per_kind=1,
                                                identity_rings=1, account_takeovers=1))
    assert short.events and short.labels
    end = PaymentsSimConfig().start + timedelta(days=4)
    rent = [e for e in short.events if getattr(e, "dst", "").startswith("BANK")]
    assert rent and all(e.at < end for e in rent)  # the landlords' bank transfers stay inside the 4 days
    for bad in ({"days": 2}, {"days": 5, "history_days": 5}, {"history_days": -1}):
        with pytest.raises(ValueError, match="days"):
            PaymentsSimConfig(**bad)  # type: ignore[arg-type]
