"""Cypher for investigators, generated from the same typology declarations the matcher runs.

``cypher_for(typology)`` returns ``(query, params)``. The query text contains only labels and relationship
types from the schema allow-list (checked here) and no values: every number, channel list and time bound
is a parameter, so investigators can change ``$since``/``$until`` (``null`` = open) or the widths without
touching the text. Every query returns one row per occurrence with ``members`` (account ids) and
``evidence`` (transaction ids), plus the ``typology`` name.

What the Cypher cannot see: the streaming matcher also asks for *new* relationships (the pair had not
transacted before the window), an activity burst of the hub relative to its own history, and excludes
accounts too busy to be participants. Over a stored graph those are judgement calls for the investigator;
the queries return the structural occurrences (a superset of what the matcher reports).
"""

from __future__ import annotations

from typing import Any

from gnn.fraud.typologies import IDENTITY_TYPOLOGIES, TYPOLOGIES, IdentityTypology, Typology
from schema.graph import node_spec, rel_spec

_IDENTITY_LABELS = {"device": "Device", "ip": "IP", "phone": "Phone", "email": "Email", "card": "Card"}
_TIME = "($since IS NULL OR {v}.at >= $since) AND ($until IS NULL OR {v}.at < $until)"


def _in_time(var: str) -> str:
    return _TIME.format(v=var)


def _check(labels: tuple[str, ...], rels: tuple[str, ...]) -> None:
    for label in labels:
        node_spec(label)
    for rel in rels:
        rel_spec(rel)


def _base_params(typ: Typology) -> dict[str, Any]:
    return {"since": None, "until": None, "window_s": int(typ.window.total_seconds()),
            "channels": list(typ.channels), "typology": typ.name}


def _hub(typ: Typology) -> str:
    return f"""
MATCH (src:Account)-[:SENT]->(tin:Transaction)-[:TO]->(hub:Account)
WHERE {_in_time('tin')} AND tin.channel IN $channels AND src <> hub
WITH hub, collect({{tx: tin, peer: src.id}}) AS ins, min(tin.at) AS first_in
MATCH (hub)-[:SENT]->(tout:Transaction)-[:TO]->(dst:Account)
WHERE tout.at >= first_in AND tout.at <= first_in + duration({{seconds: $window_s}})
  AND ($until IS NULL OR tout.at < $until) AND tout.channel IN $channels AND dst <> hub
WITH hub, first_in, ins, collect({{tx: tout, peer: dst.id}}) AS outs
WITH hub,
     [i IN ins WHERE i.tx.at <= first_in + duration({{seconds: $window_s}})
                AND NOT i.peer IN [o IN outs | o.peer]] AS ins,
     [o IN outs WHERE NOT o.peer IN [i IN ins | i.peer]] AS outs
WITH hub, ins, outs,
     reduce(s = [], i IN ins | CASE WHEN i.peer IN s THEN s ELSE s + [i.peer] END) AS sources,
     reduce(s = [], o IN outs | CASE WHEN o.peer IN s THEN s ELSE s + [o.peer] END) AS sinks
WHERE size(sources) >= $min_in AND size(sinks) >= $min_out
WITH hub, sources, sinks, ins, outs,
     reduce(s = 0.0, i IN ins | s + i.tx.amount) AS inflow,
     reduce(s = 0.0, o IN outs | s + o.tx.amount) AS outflow,
     reduce(m = 0.0, o IN outs | CASE WHEN o.tx.amount > m THEN o.tx.amount ELSE m END) AS largest_out
WHERE outflow <= $max_out_over_in * inflow
  AND (CASE WHEN $lump THEN largest_out ELSE outflow END) >= $min_flow_ratio * inflow
RETURN $typology AS typology, [hub.id] + sources + sinks AS members, hub.id AS hub,
       [i IN ins | i.tx.id] + [o IN outs | o.tx.id] AS evidence
""".strip()


def _cycle(typ: Typology) -> str:
    # SENT only leaves accounts and TO only enters them, so a directed SENT|TO path alternates correctly:
    # a cycle of k accounts is 2k relationships.
    lo, hi = 2 * typ.min_length, 2 * typ.max_length
    return f"""
MATCH p = (a:Account)-[:SENT|TO*{lo}..{hi}]->(a)
WITH p, [n IN nodes(p) WHERE n:Transaction] AS txs, [n IN nodes(p) WHERE n:Account] AS accs
WHERE all(i IN range(0, size(txs) - 2) WHERE txs[i].at <= txs[i + 1].at)
  AND {_in_time('txs[0]')} AND ($until IS NULL OR txs[-1].at < $until)
  AND txs[-1].at <= txs[0].at + duration({{seconds: $window_s}})
  AND all(t IN txs WHERE t.channel IN $channels)
  AND size(accs) - 1 = size(reduce(seen = [], x IN accs[1..] | CASE WHEN x IN seen THEN seen ELSE seen + [x] END))
  AND ($hop_lo IS NULL OR all(i IN range(0, size(txs) - 2)
       WHERE txs[i + 1].amount >= $hop_lo * txs[i].amount AND txs[i + 1].amount <= $hop_hi * txs[i].amount))
RETURN $typology AS typology, [x IN accs[1..] | x.id] AS members, [t IN txs | t.id] AS evidence
""".strip()


def _scatter_gather(typ: Typology) -> str:
    return f"""
MATCH (s:Account)-[:SENT]->(t1:Transaction)-[:TO]->(m:Account)-[:SENT]->(t2:Transaction)-[:TO]->(k:Account)
WHERE s <> k AND m <> s AND m <> k AND t1.at <= t2.at
  AND {_in_time('t1')} AND ($until IS NULL OR t2.at < $until)
  AND t2.at <= t1.at + duration({{seconds: $window_s}})
  AND t1.channel IN $channels AND t2.channel IN $channels
WITH s, k, collect(DISTINCT m.id) AS mids, collect(t1.id) + collect(t2.id) AS evidence
WHERE size(mids) >= $min_in
RETURN $typology AS typology, [s.id] + mids + [k.id] AS members, evidence
""".strip()


def _bipartite(typ: Typology) -> str:
    # Receivers paid by exactly the same (sorted) set of senders form one dense layer.
    return f"""
MATCH (a:Account)-[:SENT]->(t:Transaction)-[:TO]->(b:Account)
WHERE {_in_time('t')} AND t.channel IN $channels AND a <> b
WITH b, a, t ORDER BY a.id
WITH b, collect(DISTINCT a.id) AS senders, collect(t) AS ts
WHERE size(senders) >= $min_in
WITH senders, collect(b.id) AS receivers, collect(ts) AS tss
WHERE size(receivers) >= $min_out AND none(r IN receivers WHERE r IN senders)
WITH senders, receivers, reduce(acc = [], x IN tss | acc + x) AS txs
WHERE reduce(lo = txs[0].at, t IN txs | CASE WHEN t.at < lo THEN t.at ELSE lo END)
      + duration({{seconds: $window_s}}) >= reduce(hi = txs[0].at, t IN txs | CASE WHEN t.at > hi THEN t.at ELSE hi END)
RETURN $typology AS typology, senders + receivers AS members, [t IN txs | t.id] AS evidence
""".strip()


def _stack(typ: Typology) -> str:
    return f"""
MATCH (a:Account)-[:SENT]->(t1:Transaction)-[:TO]->(m:Account)
WHERE {_in_time('t1')} AND t1.channel IN $channels AND a <> m
WITH m, a, t1 ORDER BY a.id
WITH m, collect(DISTINCT a.id) AS tops, collect(t1) AS up
WHERE size(tops) >= $min_in
MATCH (m)-[:SENT]->(t2:Transaction)-[:TO]->(c:Account)
WHERE ($until IS NULL OR t2.at < $until) AND t2.channel IN $channels AND c <> m
  AND t2.at >= reduce(lo = up[0].at, t IN up | CASE WHEN t.at < lo THEN t.at ELSE lo END)
  AND t2.at <= reduce(lo = up[0].at, t IN up | CASE WHEN t.at < lo THEN t.at ELSE lo END)
               + duration({{seconds: $window_s}})
WITH m, tops, up, c, t2 ORDER BY c.id
WITH m, tops, up, collect(DISTINCT c.id) AS bottoms, collect(t2) AS down
WHERE size(bottoms) >= $min_out
WITH tops, bottoms, collect(m.id) AS mids, collect([t IN up | t.id] + [t IN down | t.id]) AS evs
WHERE size(mids) >= $min_in AND none(x IN mids WHERE x IN tops OR x IN bottoms)
  AND none(x IN tops WHERE x IN bottoms)
RETURN $typology AS typology, tops + mids + bottoms AS members, reduce(acc = [], e IN evs | acc + e) AS evidence
""".strip()


def _split(typ: Typology) -> str:
    return f"""
MATCH (a:Account)-[:SENT]->(t0:Transaction)-[:TO]->(b:Account)
WHERE {_in_time('t0')} AND t0.channel IN $channels
MATCH (a)-[:SENT]->(t:Transaction)-[:TO]->(b)
WHERE t.at >= t0.at AND t.at <= t0.at + duration({{seconds: $window_s}}) AND t.channel IN $channels
WITH a, b, t0, collect(t.id) AS evidence
WHERE size(evidence) >= $min_count
RETURN $typology AS typology, [a.id, b.id] AS members, evidence
""".strip()


def _identity(typ: IdentityTypology) -> tuple[str, dict[str, Any]]:
    labels = tuple(_IDENTITY_LABELS[k] for k in typ.kinds)
    _check(("Account", "Transaction", *labels), ("USES", "VIA"))
    label_test = " OR ".join(f"x:{label}" for label in labels)
    query = f"""
MATCH (a:Account)-[u:USES]->(x)
WHERE ({label_test})
  AND ($since IS NULL OR coalesce(u.last_seen, u.first_seen) IS NULL OR coalesce(u.last_seen, u.first_seen) >= $since)
  AND ($until IS NULL OR coalesce(u.first_seen, u.last_seen) IS NULL OR coalesce(u.first_seen, u.last_seen) < $until)
WITH x, collect(DISTINCT a.id) AS members
WHERE size(members) >= $min_accounts AND size(members) <= $max_accounts
OPTIONAL MATCH (t:Transaction)-[:VIA]->(x)
RETURN $typology AS typology, members, collect(DISTINCT t.id) AS evidence, x.id AS identifier
""".strip()
    return query, {"since": None, "until": None, "min_accounts": typ.min_accounts,
                   "max_accounts": typ.max_accounts, "typology": typ.name}


_SHAPES = {"hub": _hub, "cycle": _cycle, "scatter_gather": _scatter_gather, "bipartite": _bipartite,
           "stack": _stack, "split": _split}


def cypher_for(typology: Typology | IdentityTypology) -> tuple[str, dict[str, Any]]:
    """Parameterised Cypher finding ``typology`` in the stored graph; RETURN has ``members``, ``evidence``."""
    if isinstance(typology, IdentityTypology):
        return _identity(typology)
    _check(("Account", "Transaction"), ("SENT", "TO"))
    params = _base_params(typology)
    params.update({"min_in": typology.min_in, "min_out": typology.min_out, "min_count": typology.min_count,
                   "min_flow_ratio": typology.min_flow_ratio, "max_out_over_in": typology.max_out_over_in,
                   "lump": typology.lump,
                   "hop_lo": typology.hop_ratio[0] if typology.hop_ratio else None,
                   "hop_hi": typology.hop_ratio[1] if typology.hop_ratio else None})
    query = _SHAPES[typology.shape](typology)
    # Send only the parameters the query uses (drivers warn about unused ones in some versions).
    used = {k: v for k, v in params.items() if f"${k}" in query}
    return query, used


def query_pack() -> dict[str, tuple[str, dict[str, Any]]]:
    """Every declared typology's query, by name (the investigator's ready-made pack)."""
    return {t.name: cypher_for(t) for t in (*TYPOLOGIES, *IDENTITY_TYPOLOGIES)}
