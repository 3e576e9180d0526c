"""Cypher for investigators, generated from the same typology declarations the matcher runs.

``cypher_for(typology)`` returns ``(query, params)``. The query text contains only labels and relationship
types from the schema allow-list (checked here) and no values: every number, channel list and time bound
is a parameter (only the cycle lengths are literals, because Cypher path quantifiers cannot be parameters),
so investigators can change ``$since``/``$until`` (``null`` = open) or the widths without touching the text.

The queries ask exactly what :mod:`gnn.fraud.matcher` asks, over the stored graph instead of its memory:

* One row per *closing* transaction (``closing``) whose time is in ``[$since, $until)``: the transaction
  that completes the pattern, with the pattern as it stood at that moment (transactions up to and including
  it in stream order, which is time, then id; none older than the typology's window).
* Card purchases at a merchant (a ``(:Transaction)-[:AT]->(:Merchant)``) are not transfers: never counted.
* A transfer counts when its channel is in ``$channels`` and, for typologies that ask for new relationships,
  when the pair had not transacted more than a window before it; the closing transfer must count too.
* Participants must not be busy (at most ``$max_degree`` counterparties in the window), hubs must show an
  activity burst against their own history, and money must pass through, as in the matcher.
* The matcher's memory is bounded; the queries apply the same per-account bound: only an account's
  ``$cap`` most recent transfers per direction inside the window are looked at (``MatcherConfig.neighbour_cap``).

Where the two can still differ, by design: the matcher forgets accounts beyond ``MatcherConfig.max_accounts``
and relationships beyond ``known_cap`` per account, gives up a cycle search after ``search_budget`` expanded
transfers, and reports nothing for new-relationship typologies during its warm-up (pass
``$since`` = stream start + warm-up to reproduce that). On a graph where no account reaches those bounds,
the queries and the matcher report the same occurrences (``tests/integration/test_fraud_cypher.py``).

Every query returns ``typology``, ``closing`` (transaction id), ``at``, ``members`` (account ids)
and ``evidence`` (transaction ids).
"""

from __future__ import annotations

from typing import Any

from gnn.fraud.matcher import MatcherConfig
from gnn.fraud.typologies import IDENTITY_TYPOLOGIES, TYPOLOGIES, IdentityTypology, Typology
from schema.graph import node_spec, rel_spec

_IDENTITY_LABELS = {"device": "Device", "ip": "IP", "phone": "Phone", "email": "Email", "card": "Card"}


def _check(labels: tuple[str, ...], rels: tuple[str, ...]) -> None:
    for label in labels:
        node_spec(label)
    for rel in rels:
        rel_spec(rel)


class _Gen:
    """Builds one typology's query; every generated variable name is unique (Cypher forbids shadowing).

    Transfers reached from an account are matched without their ``:Transaction`` label (``SENT`` and ``TO``
    only ever touch transactions): that keeps the planner on the account's own relationships instead of
    scanning the ``Transaction(at)`` index for every window."""

    def __init__(self, typ: Typology) -> None:
        self.typ = typ
        self.n = 0

    def var(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}_{self.n}"

    # -- fragments ------------------------------------------------------------------------------

    @staticmethod
    def transfer(t: str) -> str:
        """``t`` is an account-to-account transfer (not a card purchase at a merchant)."""
        return f"NOT EXISTS {{ ({t})-[:AT]->(:Merchant) }}"

    def visible(self, t: str) -> str:
        """``t`` is inside the window of the closing transaction ``e`` and not after it in stream order."""
        return (f"{t}.at >= lo AND ({t}.at < e.at OR ({t}.at = e.at AND {t}.id <= e.id)) "
                f"AND {self.transfer(t)}")

    def novel(self, s: str, t: str, r: str) -> str:
        """The pair ``s -> r`` of transfer ``t`` had not transacted more than a window before ``t``."""
        old = self.var("old")
        return (f"NOT EXISTS {{ MATCH ({s})-[:SENT]->({old})-[:TO]->({r}) "
                f"WHERE {old}.at < {t}.at - duration({{seconds: $window_s}}) AND {self.transfer(old)} }}")

    def edges(self, acc: str, direction: str, novelty: bool = False) -> str:
        """The ``$cap`` most recent transfers of account id ``acc`` in the window (oldest first), as maps."""
        s, t, r = self.var("s"), self.var("t"), self.var("r")
        if direction == "out":
            pattern = f"({s}:Account {{id: {acc}}})-[:SENT]->({t})-[:TO]->({r}:Account)"
        else:
            pattern = f"({s}:Account)-[:SENT]->({t})-[:TO]->({r}:Account {{id: {acc}}})"
        novel = self.novel(s, t, r) if novelty and self.typ.novel_only else "true"
        return (f"reverse(COLLECT {{ MATCH {pattern} WHERE {self.visible(t)} "
                f"WITH {s}, {t}, {r} ORDER BY {t}.at DESC, {t}.id DESC LIMIT $cap "
                f"RETURN {{tx: {t}.id, src: {s}.id, dst: {r}.id, at: {t}.at, amount: {t}.amount, "
                f"channel: {t}.channel, novel: {novel}}} }})")

    def counted(self, edges: str) -> str:
        """The transfers of a list that count for the typology (channel, new relationship)."""
        z = self.var("z")
        novel = f" AND {z}.novel" if self.typ.novel_only else ""
        return f"[{z} IN {edges} WHERE {z}.channel IN $channels{novel}]"

    def outs(self, acc: str) -> str:
        return self.counted(self.edges(acc, "out", novelty=True))

    def ins(self, acc: str) -> str:
        return self.counted(self.edges(acc, "in", novelty=True))

    def dedupe(self, items: str) -> str:
        """Distinct items of a list, first occurrence order."""
        u, v = self.var("u"), self.var("v")
        return f"reduce({u} = [], {v} IN {items} | CASE WHEN {v} IN {u} THEN {u} ELSE {u} + [{v}] END)"

    def quiet(self, acc: str) -> str:
        """Account id ``acc`` has at most ``$max_degree`` counterparties among its windowed transfers."""
        o, i = self.var("o"), self.var("i")
        peers = f"[{o} IN {self.edges(acc, 'out')} | {o}.dst] + [{i} IN {self.edges(acc, 'in')} | {i}.src]"
        return f"size({self.dedupe(peers)}) <= $max_degree"

    def quiet_list(self, accounts: str) -> str:
        a = self.var("a")
        return f"[{a} IN {accounts} WHERE {self.quiet(a)}]"

    def anchor(self) -> str:
        """Every transfer that can close the pattern, with ``lo``, the start of its window."""
        novel = f"\n  AND {self.novel('x', 'e', 'y')}" if self.typ.novel_only else ""
        return f"""MATCH (x:Account)-[:SENT]->(e:Transaction)-[:TO]->(y:Account)
WHERE ($since IS NULL OR e.at >= $since) AND ($until IS NULL OR e.at < $until)
  AND e.channel IN $channels AND {self.transfer('e')}{novel}
WITH x, y, e, e.at - duration({{seconds: $window_s}}) AS lo"""

    def dense_layer(self, carry: str, senders: str, need_a: str, need_b: str, left: str, right: str,
                    used: str) -> str:
        """WITH clauses computing the matcher's dense-layer pruning (three rounds) of ``senders``' transfers."""
        edges = self.var("edges")
        acc, s = self.var("acc"), self.var("snd")
        z1, z2 = self.var("z"), self.var("z")
        lines = [f"WITH {carry}, {senders} AS {left}, "
                 f"reduce({acc} = [], {s} IN {senders} | {acc} + {self.outs(s)}) AS {edges}",
                 f"WITH {carry}, {left}, {edges}, {self.dedupe(f'[{z1} IN {edges} | {z1}.dst]')} AS {right}"]
        for _ in range(3):
            b, a = self.var("b"), self.var("a")
            za, zb = self.var("z"), self.var("z")
            into = self.dedupe(f"[{za} IN {edges} WHERE {za}.dst = {b} AND {za}.src IN {left} | {za}.src]")
            lines.append(f"WITH {carry}, {left}, {edges}, [{b} IN {right} WHERE size({into}) >= {need_a}] AS {right}")
            out_of = self.dedupe(f"[{zb} IN {edges} WHERE {zb}.src = {a} AND {zb}.dst IN {right} | {zb}.dst]")
            lines.append(f"WITH {carry}, {right}, {edges}, [{a} IN {left} WHERE size({out_of}) >= {need_b}] AS {left}")
        lines.append(f"WITH {carry}, {left}, {right}, "
                     f"[{z2} IN {edges} WHERE {z2}.src IN {left} AND {z2}.dst IN {right}] "
                     f"AS {used}")
        return "\n".join(lines)


def _hub(g: _Gen) -> str:
    c = "x, y, e, lo"
    i1, i2, o1, o2, z = g.var("i"), g.var("i"), g.var("o"), g.var("o"), g.var("z")
    src, dst = g.var("s"), g.var("d")
    a1, a2 = g.var("a"), g.var("a")
    return f"""{g.anchor()}
WITH {c}, {g.edges('x.id', 'out', novelty=True)} AS x_out, {g.edges('x.id', 'in', novelty=True)} AS x_in
WITH {c}, x_out, x_in, {g.counted('x_in')} AS ins0
WHERE size(ins0) > 0
WITH {c}, x_out, x_in, ins0,
     reduce(m = ins0[0].at, {i1} IN ins0 | CASE WHEN {i1}.at < m THEN {i1}.at ELSE m END) AS first_in
WITH {c}, x_out, x_in, ins0, [{o1} IN {g.counted('x_out')} WHERE {o1}.at >= first_in] AS outs0
WITH {c}, x_out, x_in, ins0, outs0, {g.dedupe(f'[{i2} IN ins0 | {i2}.src]')} AS all_senders,
     {g.dedupe(f'[{o2} IN outs0 | {o2}.dst]')} AS all_receivers
WHERE size(all_senders) <= $max_degree AND size(all_receivers) <= $max_degree
WITH {c}, x_out, x_in, ins0, outs0, {g.quiet_list('all_senders')} AS s1, {g.quiet_list('all_receivers')} AS r1
WHERE size(s1) >= $min_in AND size(r1) >= $min_out
WITH {c}, x_out, x_in, ins0, outs0, [{a1} IN s1 WHERE NOT {a1} IN r1] AS senders,
     [{a2} IN r1 WHERE NOT {a2} IN s1] AS receivers
WHERE size(senders) >= $min_in AND size(receivers) >= $min_out
// Activity burst: transfers in the window against what the earlier rate of the hub predicts.
WITH {c}, ins0, outs0, senders, receivers, toFloat(size(x_out) + size(x_in)) AS recent,
     COUNT {{ MATCH (x)-[:SENT]->({z}) WHERE ({z}.at < e.at OR ({z}.at = e.at AND {z}.id <= e.id))
              AND {g.transfer(z)} }}
     + COUNT {{ MATCH ({z}b)-[:TO]->(x) WHERE ({z}b.at < e.at OR ({z}b.at = e.at AND {z}b.id <= e.id))
              AND {g.transfer(z + 'b')} }} AS total,
     COLLECT {{ MATCH (x)-[:SENT|TO]-({z}c) WHERE {g.transfer(z + 'c')}
                RETURN {z}c.at AS t ORDER BY t LIMIT 1 }}[0] AS first_at
WITH {c}, ins0, outs0, senders, receivers, recent, total - recent AS before,
     toFloat(lo.epochSeconds - first_at.epochSeconds) + (lo.nanosecond - first_at.nanosecond) / 1e9 AS age
WHERE $burst_factor <= 0 OR before <= 0 OR age <= 0
   OR recent / CASE WHEN before / age * $window_s > 1e-9 THEN before / age * $window_s ELSE 1e-9 END >= $burst_factor
WITH {c}, senders, receivers, [{src} IN ins0 WHERE {src}.src IN senders] AS ins,
     [{dst} IN outs0 WHERE {dst}.dst IN receivers] AS outs
WITH {c}, senders, receivers, ins, outs,
     reduce(s = 0.0, {i1}x IN ins | s + {i1}x.amount) AS inflow,
     reduce(s = 0.0, {o1}x IN outs | s + {o1}x.amount) AS outflow,
     reduce(m = 0.0, {o2}x IN outs | CASE WHEN {o2}x.amount > m THEN {o2}x.amount ELSE m END) AS largest_out
WHERE (NOT $lump OR largest_out >= $min_flow_ratio * inflow)
  AND outflow >= $min_flow_ratio * inflow AND outflow <= $max_out_over_in * inflow
RETURN $typology AS typology, e.id AS closing, e.at AS at, senders + receivers + [x.id] AS members,
       [{src}x IN ins | {src}x.tx] + [{dst}x IN outs | {dst}x.tx] AS evidence"""


def _cycle(g: _Gen) -> str:
    # The closing transfer x -> y ends a path y -> ... -> x of min_length - 1 to max_length - 1 hops. One
    # fixed-length pattern per length, so that time order and amounts prune at every hop; then new
    # relationships, the per-account bound and busy accounts.
    typ = g.typ
    branches = []
    for hops in range(typ.min_length - 1, typ.max_length):
        nodes = ["y", *(f"a{j}" for j in range(1, hops)), "x"]
        pattern = "".join(f"({nodes[j]})-[:SENT]->(t{j})-[:TO]->" for j in range(hops)) + "(x)"
        tests = ["t0.at >= lo", f"t{hops - 1}.at <= e.at", *(f"t{j}.at <= t{j + 1}.at" for j in range(hops - 1))]
        tests += [f"t{j}.channel IN $channels" for j in range(hops)]
        if typ.hop_ratio is not None:
            chain = [*(f"t{j}" for j in range(hops)), "e"]
            tests += [f"{b}.amount >= $hop_lo * {a}.amount AND {b}.amount <= $hop_hi * {a}.amount"
                      for a, b in zip(chain, chain[1:], strict=False)]
        tests += [f"{a}:Account" for a in nodes[1:-1]]
        branches.append(f"MATCH {pattern}\n  WHERE " + "\n    AND ".join(tests)
                        + f"\n  RETURN [{', '.join(f't{j}' for j in range(hops))}] AS path, "
                        f"[{', '.join(n + '.id' for n in nodes[:-1])}] AS path_accounts")
    t2, k, m = g.var("t"), g.var("k"), g.var("m")
    members = "path_accounts + [x.id]"
    novel = ""
    if typ.novel_only:
        s_, r_ = g.var("s"), g.var("r")
        novel = (f"\n  AND all({k}n IN path WHERE EXISTS {{ MATCH ({s_}:Account)-[:SENT]->({k}n)-[:TO]->({r_}:Account) "
                 f"WHERE {g.novel(s_, k + 'n', r_)} }})")
    union = "\n  UNION ALL\n  ".join(branches)
    return f"""{g.anchor()}
CALL (x, y, e, lo) {{
  {union}
}}
WITH x, y, e, lo, path + [e] AS txs, path_accounts
WHERE size({g.dedupe(members)}) = size(txs)
  AND all({k}v IN txs WHERE {k}v = e OR ({k}v.id <> e.id AND {g.visible(k + 'v')})){novel}
  AND all({k} IN range(0, size(txs) - 2) WHERE COUNT {{ MATCH (:Account {{id: path_accounts[{k}]}})-[:SENT]->({t2})
       WHERE {g.visible(t2)} AND ({t2}.at > txs[{k}].at OR ({t2}.at = txs[{k}].at AND {t2}.id > txs[{k}].id)) }} < $cap)
  AND all({m} IN {members} WHERE {g.quiet(m)})
RETURN $typology AS typology, e.id AS closing, e.at AS at, {members} AS members, [tx IN txs | tx.id] AS evidence"""


def _scatter_gather(g: _Gen) -> str:
    c = "x, y, e, lo"
    f1, o1, f2, o2, m = g.var("f"), g.var("o"), g.var("f"), g.var("o"), g.var("m")
    return f"""{g.anchor()}
WITH {c}, {g.ins('y.id')} AS into_sink,
     {g.dedupe(f'[{f1} IN {g.ins("x.id")} WHERE {f1}.src <> y.id | {f1}.src]')} AS sources
UNWIND sources AS source
WITH {c}, into_sink, source, [{o1} IN {g.outs('source')} WHERE {o1}.dst <> source AND {o1}.dst <> y.id] AS sent
WITH {c}, into_sink, source, sent,
     {g.dedupe(f'[{f2} IN into_sink WHERE any({o2} IN sent WHERE {o2}.dst = {f2}.src AND {o2}.at <= {f2}.at)'
               f' | {f2}.src]')} AS legs
WHERE size(legs) >= $min_in AND {g.quiet('source')} AND {g.quiet('y.id')}
WITH {c}, into_sink, source, sent, [{m} IN legs WHERE {g.quiet(m)}] AS mids
WHERE size(mids) >= $min_in
RETURN $typology AS typology, e.id AS closing, e.at AS at, mids + [source, y.id] AS members,
       [{o2}x IN sent WHERE {o2}x.dst IN mids | {o2}x.tx]
       + [{f2}x IN into_sink WHERE {f2}x.src IN mids | {f2}x.tx] AS evidence"""


def _bipartite(g: _Gen) -> str:
    c = "x, y, e, lo"
    typ = g.typ
    o1, r, i1, z, p, a, b, w = (g.var(k) for k in ("o", "r", "i", "z", "p", "a", "b", "w"))
    receivers = g.quiet_list(g.dedupe(f"[{o1} IN {g.outs('x.id')} | {o1}.dst]"))
    senders = g.quiet_list(g.dedupe(f"reduce({w} = [], {r} IN receivers | {w} + [{i1} IN {g.ins(r)} | {i1}.src])"))
    need_a, need_b = max(2, typ.min_in - 1), max(2, typ.min_out - 1)
    return f"""{g.anchor()}
WITH {c}, {receivers} AS receivers
WITH {c}, {senders} AS senders
{g.dense_layer(c, 'senders', str(need_a), str(need_b), 'lefts', 'rights', 'used')}
WHERE size(lefts) >= $min_in AND size(rights) >= $min_out AND x.id IN lefts AND y.id IN rights
  AND none({a} IN lefts WHERE {a} IN rights)
  AND size({g.dedupe(f'[{z} IN used | [{z}.src, {z}.dst]]')}) >= $min_density * size(lefts) * size(rights)
RETURN $typology AS typology, e.id AS closing, e.at AS at, lefts + rights AS members,
       [{p} IN used | {p}.tx] AS evidence"""


def _stack(g: _Gen) -> str:
    c = "x, y, e, lo"
    i1, a, b, d, p, q = (g.var(k) for k in ("i", "a", "b", "d", "p", "q"))
    top = g.quiet_list(g.dedupe(f"[{i1} IN {g.ins('x.id')} | {i1}.src]"))
    c2 = f"{c}, top_l, mid, upper"
    return f"""{g.anchor()}
WITH {c}, {top} AS top
{g.dense_layer(c, 'top', '$min_in', '$min_out', 'top_l', 'mid', 'upper')}
WHERE x.id IN mid AND size(top_l) >= $min_in AND size(mid) >= $min_out
WITH {c2}, {g.quiet_list('mid')} AS mid_q
{g.dense_layer(c2, 'mid_q', '$min_in', '$min_out', 'mid_l', 'bottom', 'lower')}
WHERE y.id IN bottom AND size(mid_l) >= $min_in AND size(bottom) >= $min_out
  AND none({a} IN top_l WHERE {a} IN mid_l OR {a} IN bottom) AND none({b} IN mid_l WHERE {b} IN bottom)
RETURN $typology AS typology, e.id AS closing, e.at AS at, top_l + mid_l + bottom AS members,
       [{p} IN upper | {p}.tx] + [{q} IN lower | {q}.tx] AS evidence"""


def _split(g: _Gen) -> str:
    o1, o2 = g.var("o"), g.var("o")
    return f"""{g.anchor()}
WITH x, y, e, lo, [{o1} IN {g.outs('x.id')} WHERE {o1}.dst = y.id] AS same
WHERE size(same) = $min_count
RETURN $typology AS typology, e.id AS closing, e.at AS at, [x.id, y.id] AS members,
       [{o2} IN same | {o2}.tx] AS evidence"""


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


def cypher_for(typology: Typology | IdentityTypology, matcher: MatcherConfig | None = None
               ) -> tuple[str, dict[str, Any]]:
    """Parameterised Cypher finding ``typology`` in the stored graph (one row per closing transaction).

    ``matcher`` gives the per-account bound (``neighbour_cap``) the queries share with the matcher.
    """
    if isinstance(typology, IdentityTypology):
        return _identity(typology)
    _check(("Account", "Transaction", "Merchant"), ("SENT", "TO", "AT"))
    cfg = matcher or MatcherConfig()
    typ = typology
    params: dict[str, Any] = {
        "since": None, "until": None, "window_s": int(typ.window.total_seconds()), "channels": list(typ.channels),
        "typology": typ.name, "cap": cfg.neighbour_cap, "max_degree": typ.max_degree, "min_in": typ.min_in,
        "min_out": typ.min_out, "min_count": typ.min_count, "min_flow_ratio": typ.min_flow_ratio,
        "max_out_over_in": typ.max_out_over_in, "lump": typ.lump, "burst_factor": typ.burst_factor,
        "min_density": typ.min_density,
        "hop_lo": typ.hop_ratio[0] if typ.hop_ratio else None,
        "hop_hi": typ.hop_ratio[1] if typ.hop_ratio else None,
    }
    query = _SHAPES[typ.shape](_Gen(typ))
    # Send only the parameters the query uses (drivers warn about unused ones in some versions).
    used = {k: v for k, v in params.items() if f"${k}" in query}
    return query, used


def query_pack(matcher: MatcherConfig | None = None) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every declared typology's query, by name (the investigator's ready-made pack)."""
    return {t.name: cypher_for(t, matcher) for t in (*TYPOLOGIES, *IDENTITY_TYPOLOGIES)}
