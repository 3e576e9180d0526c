"""The typologies, declared once, found twice: by the streaming matcher and by the generated Cypher in Neo4j.

A small simulated payments stream is written into real Neo4j through the ingest mapping (``EventMapper`` ->
``BatchBuilder`` -> ``Neo4jGraphStore``), and the same transactions are streamed through
:class:`gnn.fraud.matcher.TemporalMatcher`. For every typology, both must report the same occurrences:
the same closing transactions with the same member accounts.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

import pytest

from gnn.fraud.cypher import cypher_for
from gnn.fraud.matcher import Edge, MatcherConfig, TemporalMatcher
from gnn.fraud.typologies import TYPOLOGIES
from ingest.logs.templates import LogTemplateMiner
from ingest.mapping import EventMapper
from ingest.simulate.payments import PaymentsSimConfig, simulate_payments
from schema.events import TransactionEvent

#: Small enough for a test, with at least one occurrence of every typology (checked below).
SIM = PaymentsSimConfig(seed=7, accounts=300, merchants=30, employers=6, landlords=8, utilities=3, days=10,
                        history_days=4, rings_per_kind=1, identity_rings=1, account_takeovers=2)
Occurrence = tuple[str, frozenset[str]]

pytestmark = [pytest.mark.neo4j, pytest.mark.slow]


def _matcher_occurrences(txs: list[TransactionEvent], config: MatcherConfig
                         ) -> tuple[dict[str, set[Occurrence]], float]:
    """What the streaming matcher reports, per typology, as (closing transaction, members)."""
    matcher = TemporalMatcher(config)
    found: dict[str, set[Occurrence]] = defaultdict(set)
    first_at: float | None = None
    for tx in txs:
        if tx.merchant:  # purchases are not transfers (as in FraudDetector)
            continue
        at = tx.at.timestamp()
        first_at = at if first_at is None else first_at
        for match in matcher.add(Edge(tx.id, tx.src, tx.dst, at, tx.amount, tx.channel)):
            found[match.typology].add((match.closing, frozenset(match.members)))
    assert first_at is not None
    # The bounds the Cypher cannot share must not bind on this data (see gnn/fraud/cypher.py).
    recipients: dict[str, set[str]] = defaultdict(set)
    for tx in txs:
        recipients[tx.src].add(tx.dst)
    assert max(len(r) for r in recipients.values()) < config.known_cap
    assert len(matcher) < config.max_accounts
    return found, first_at


def test_generated_cypher_finds_what_the_matcher_finds(neo4j_store, neo4j_driver) -> None:
    scenario = simulate_payments(SIM)
    # Stream order is time, then id, for the matcher and for the queries' "not after the closing transfer".
    txs = sorted(scenario.transactions, key=lambda t: (t.at, t.id))
    events = scenario.events
    for i in range(0, len(events), 5_000):
        neo4j_store.write(EventMapper(LogTemplateMiner()).map(events[i:i + 5_000]).build())
    assert neo4j_store.count("Transaction") == len(txs)

    config = MatcherConfig()
    expected, first_at = _matcher_occurrences(txs, config)
    warm_from = datetime.fromtimestamp(first_at + config.warmup_s, tz=UTC)
    differences = {}
    for typ in TYPOLOGIES:
        query, params = cypher_for(typ, config)
        if typ.novel_only:  # the matcher's warm-up: no new-relationship typology before it
            params["since"] = warm_from
        with neo4j_driver.session() as session:  # type: ignore[attr-defined]
            rows = list(session.run(query, params))
        assert all(r["typology"] == typ.name and r["evidence"] for r in rows)
        got = {(r["closing"], frozenset(r["members"])) for r in rows}
        want = expected.get(typ.name, set())
        assert want, f"the test data has no {typ.name}: the comparison would prove nothing"
        if got != want:
            differences[typ.name] = {"only_matcher": sorted(map(str, want - got))[:5],
                                     "only_cypher": sorted(map(str, got - want))[:5]}
    assert differences == {}
