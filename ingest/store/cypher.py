"""Every Cypher statement the Neo4j store runs, generated once from the schema's allow-list.

Labels, relationship types and property names come only from ``schema.graph`` (checked identifiers);
every value travels as a parameter. Statements are built at import into plain dictionaries of strings, so
they are constants that tests read as exact text; the batch write joins a few of them (``write_batch``).
"""

from __future__ import annotations

from functools import cache

from schema.graph import NODES, RELS, TIME_PROPS, NodeSpec, RelSpec, node_spec, window_basis
from schema.store import MAX_REACH_HOPS

NODE_KEYS: dict[str, str] = {spec.label: spec.key for spec in NODES}


#: Rows of :func:`write_batch` carry times as positions (``row.first_seen``, ``row.last_seen``, ``row.t.<name>``,
#: time keys) in ``times``, the statement's distinct times parsed once; a missing position reads null.
_ROW_TIMES = "times[row.first_seen] AS fs, times[row.last_seen] AS ls"


def _temporal_and_counters(var: str, counters: tuple[str, ...], times: tuple[str, ...], temporal: bool = True) -> str:
    """SET clauses: declared time properties, the earliest first_seen and latest last_seen; add counters."""
    parts = [f"{var}.{t} = CASE WHEN row.t.{t} IS NULL THEN {var}.{t} ELSE times[row.t.{t}] END" for t in times]
    parts += [] if not temporal else [
        f"{var}.first_seen = CASE WHEN fs IS NULL OR ({var}.first_seen IS NOT NULL AND "
        f"{var}.first_seen <= fs) THEN {var}.first_seen ELSE fs END",
        f"{var}.last_seen = CASE WHEN ls IS NULL OR ({var}.last_seen IS NOT NULL AND "
        f"{var}.last_seen >= ls) THEN {var}.last_seen ELSE ls END",
    ]
    # Only counters the row carries are touched, so a node never gains a zero it was not given.
    parts += [
        f"{var}.{c} = CASE WHEN row.add.{c} IS NULL THEN {var}.{c} ELSE coalesce({var}.{c}, 0) + row.add.{c} END"
        for c in counters
    ]
    return "SET " + ",\n    ".join(parts) if parts else ""


def rel_group(rel_type: str, start: str, end: str) -> str:
    """The ``$rels`` entry of :func:`write_batch` that holds one relationship shape's rows."""
    return f"{rel_type}_{start}_{end}"


def _nodes_var(label: str) -> str:
    return f"nodes_{label}"


def _merge_nodes(spec: NodeSpec) -> str:
    # The merged nodes come back in row order: relationship rows name their ends by position in this list, so
    # each node is found by its key once per batch, not again for every relationship that touches it.
    sets = _temporal_and_counters("n", spec.counters, spec.times)
    return (
        "CALL (times) {\n"
        f"  UNWIND $nodes.{spec.label} AS row\n"
        f"  WITH row, {_ROW_TIMES}\n"
        f"  MERGE (n:{spec.label} {{{spec.key}: row.key}})\n"
        "  SET n += coalesce(row.props, {})\n"
        + (f"  {sets}\n" if sets else "")
        + f"  RETURN collect(n) AS {_nodes_var(spec.label)}\n"
        "}\n"
    )


def _merge_rels(spec: RelSpec, start: str, end: str) -> str:
    times = tuple(t for t in spec.times if t not in spec.key)
    sets = _temporal_and_counters("r", spec.counters, times, spec.temporal)
    key = ", ".join(
        f"{name}: times[row.key.{name}]" if name in spec.times else f"{name}: row.key.{name}" for name in spec.key
    )
    rel_pattern = f"[r:{spec.type} {{{key}}}]" if key else f"[r:{spec.type}]"
    ends = ", ".join(dict.fromkeys((_nodes_var(start), _nodes_var(end))))
    row_times = f", {_ROW_TIMES}" if spec.temporal else ""
    return (
        f"CALL (times, {ends}) {{\n"
        f"  UNWIND $rels.{rel_group(spec.type, start, end)} AS row\n"
        f"  WITH row, {_nodes_var(start)}[row.start] AS a, {_nodes_var(end)}[row.end] AS b{row_times}\n"
        f"  MERGE (a)-{rel_pattern}->(b)\n"
        "  SET r += coalesce(row.props, {})\n"
        + (f"  {sets}\n" if sets else "")
        + "}\n"
    )


#: Subqueries of :func:`write_batch`, per label and per relationship shape, in the schema's order.
MERGE_NODES: dict[str, str] = {spec.label: _merge_nodes(spec) for spec in NODES}
MERGE_RELS: dict[tuple[str, str, str], str] = {
    (spec.type, start, end): _merge_rels(spec, start, end) for spec in RELS for start, end in spec.pairs
}


@cache  # batches come in a few shapes (payments, ops, annotations), so few texts and few query plans
def write_batch(labels: tuple[str, ...], shapes: tuple[tuple[str, str, str], ...]) -> str:
    """One statement for a whole batch's rows: the nodes of ``labels`` (``$nodes``: label -> rows with ``key``),
    then the relationships of ``shapes`` (``$rels``: :func:`rel_group` -> rows whose ``start``/``end`` are
    positions in their label's node rows), each group a subquery of :data:`MERGE_NODES` / :data:`MERGE_RELS`.

    One statement instead of one per group saves a round trip per group, and a relationship row takes its two
    ends from the node lists instead of looking each up by key again. Only the groups the batch has are in the
    text: a subquery over no rows still costs (a statement of every group was slower on payments batches). Pass
    groups in the schema's order (as the dictionaries list them) so that concurrent writers lock in one order.
    """
    return (
        "WITH [t IN $times | datetime(t)] AS times\n"
        + "".join(MERGE_NODES[label] for label in labels)
        + "".join(MERGE_RELS[shape] for shape in shapes)
        + "FINISH"
    )


ADVANCE_CURSORS = (
    "UNWIND $rows AS row\n"
    "MERGE (c:IngestCursor {id: row.source})\n"
    "SET c.offset = CASE WHEN c.offset IS NULL OR row.offset > c.offset THEN row.offset ELSE c.offset END"
)
READ_CURSOR = "MATCH (c:IngestCursor {id: $source}) RETURN c.offset AS offset"

GET_NODE: dict[str, str] = {
    spec.label: f"MATCH (n:{spec.label} {{{spec.key}: $key}}) RETURN properties(n) AS props" for spec in NODES
}


def _find_nodes(spec: NodeSpec) -> str:
    window = (
        f"WHERE ($since IS NULL OR n.{spec.time_prop} >= $since) AND ($until IS NULL OR n.{spec.time_prop} < $until)\n"
        "  AND "
        if spec.time_prop
        else "WHERE "
    )
    order = f"ORDER BY n.{spec.time_prop} DESC, n.{spec.key} DESC\n" if spec.time_prop else f"ORDER BY n.{spec.key}\n"
    return (
        f"MATCH (n:{spec.label})\n"
        f"{window}all(k IN keys($equals) WHERE n[k] = $equals[k])\n"
        f"RETURN n.{spec.key} AS key, properties(n) AS props\n"
        f"{order}LIMIT $limit"
    )


FIND_NODES: dict[str, str] = {spec.label: _find_nodes(spec) for spec in NODES}

#: Relationships of one node. ``$label_keys`` maps each label to its key property so the far end's key
#: is read without naming labels in the text.
RELS_OF: dict[str, str] = {
    spec.label: (
        f"MATCH (n:{spec.label} {{{spec.key}: $key}})-[r]-(m)\n"
        "WHERE ($type IS NULL OR type(r) = $type)\n"
        "  AND ($direction = 'both' OR ($direction = 'out') = (startNode(r) = n))\n"
        "WITH n, r, m, head(labels(m)) AS m_label\n"
        "RETURN type(r) AS type, startNode(r) = n AS outgoing, m_label,\n"
        "       m[$label_keys[m_label]] AS m_key, properties(r) AS props\n"
        "ORDER BY type, m_label, m_key"
    )
    for spec in NODES
}

ELEMENT_ID: dict[str, str] = {
    spec.label: f"MATCH (n:{spec.label} {{{spec.key}: $key}}) RETURN elementId(n) AS id, properties(n) AS props"
    for spec in NODES
}

#: One hop of a breadth-first expansion from a frontier of element ids, relationships within the window.
EXPAND = (
    "UNWIND $frontier AS id\n"
    "MATCH (n) WHERE elementId(n) = id\n"
    "MATCH (n)-[r]-(m)\n"
    "WHERE ($types IS NULL OR type(r) IN $types)\n"
    "WITH n, r, m, coalesce(r.first_seen, r.last_seen) AS r_first, coalesce(r.last_seen, r.first_seen) AS r_last\n"
    "WHERE ($since IS NULL OR r_last IS NULL OR r_last >= $since)\n"
    "  AND ($until IS NULL OR r_first IS NULL OR r_first < $until)\n"
    "WITH r, m, head(labels(startNode(r))) AS s_label, head(labels(endNode(r))) AS e_label\n"
    "LIMIT $limit\n"
    "RETURN elementId(r) AS rid, type(r) AS type, properties(r) AS props,\n"
    "       s_label, startNode(r)[$label_keys[s_label]] AS s_key,\n"
    "       e_label, endNode(r)[$label_keys[e_label]] AS e_key,\n"
    "       elementId(m) AS mid, head(labels(m)) AS m_label, properties(m) AS m_props"
)

def _window_condition(rel_type: str, direction: str) -> str:
    """The WHERE clause of ``schema.graph.window_basis`` (``$since``/``$until`` may be null: open ends)."""
    basis, prop = window_basis(rel_type, direction)
    if basis in ("rel", "far"):
        at = f"{'r' if basis == 'rel' else 'm'}.{prop}"
        return f"WHERE ($since IS NULL OR {at} >= $since) AND ($until IS NULL OR {at} < $until)\n"
    if basis == "interval":
        return (
            "WHERE ($since IS NULL OR coalesce(r.last_seen, r.first_seen) IS NULL"
            " OR coalesce(r.last_seen, r.first_seen) >= $since)\n"
            "  AND ($until IS NULL OR coalesce(r.first_seen, r.last_seen) IS NULL"
            " OR coalesce(r.first_seen, r.last_seen) < $until)\n"
        )
    return ""


#: Property names that hold DATETIMEs anywhere in the schema (see :func:`_flat_props`).
TIME_KEYS: list[str] = sorted({*TIME_PROPS, "first_seen", "last_seen"})


def _expand_hops(spec: NodeSpec, rel: RelSpec, direction: str) -> str:
    arrow = f"-[r:{rel.type}]->" if direction == "out" else f"<-[r:{rel.type}]-"
    return (
        "UNWIND $keys AS key\n"
        f"MATCH (n:{spec.label} {{{spec.key}: key}}){arrow}(m)\n"
        f"{_window_condition(rel.type, direction)}"
        "WITH key, r, m LIMIT $limit\n"
        f"WITH key, collect([{_flat_props('r')}, head(labels(m)), {_flat_props('m')}]) AS hops\n"
        # One record in all, a [key, hops] pair per near node: the driver's per-record cost, not the bytes,
        # bounds wide reads (586 instances' hosts: one record instead of 586).
        "RETURN collect([key, hops]) AS near"
    )


def _flat_props(var: str) -> str:
    """Properties as ``[name, value]`` pairs, times as ``[name, epochSeconds, nanosecond]``: the driver turns
    each DATETIME into a Python object in pure Python (about 0.15 ms apiece), which dominated wide reads."""
    return (f"[k IN keys({var}) | CASE WHEN k IN $time_keys THEN [k, {var}[k].epochSeconds, {var}[k].nanosecond] "
            f"ELSE [k, {var}[k]] END]")


#: One read per (label of the near nodes, relationship type, direction): a relationship type followed from
#: many nodes at once, with the far nodes' properties, filtered by the window rule of the schema.
EXPAND_HOPS: dict[tuple[str, str, str], str] = {
    (spec.label, rel.type, direction): _expand_hops(spec, rel, direction)
    for rel in RELS
    for direction, labels in (("out", rel.starts), ("in", rel.ends))
    for spec in NODES
    if spec.label in labels
}


def _in_window(rel_type: str, var: str) -> str:
    """The window rule of ``schema.graph.window_basis`` for a relationship ``var`` followed either way (the
    rule is the same both ways, see ``schema.store.check_reach``), as a boolean expression."""
    basis, prop = window_basis(rel_type, "out")
    if basis == "rel":
        return f"(($since IS NULL OR {var}.{prop} >= $since) AND ($until IS NULL OR {var}.{prop} < $until))"
    if basis == "interval":
        return (f"(($since IS NULL OR coalesce({var}.last_seen, {var}.first_seen) IS NULL"
                f" OR coalesce({var}.last_seen, {var}.first_seen) >= $since)"
                f" AND ($until IS NULL OR coalesce({var}.first_seen, {var}.last_seen) IS NULL"
                f" OR coalesce({var}.first_seen, {var}.last_seen) < $until))")
    return "true"


def _reach(spec: NodeSpec, rel: RelSpec, hops: int) -> str:
    # Only the distinct far nodes are kept, so Neo4j expands breadth-first and prunes paths to nodes already
    # reached (a plain variable-length match would enumerate every path: exponential in dense call graphs).
    # The bound is text because Cypher takes no parameter there: one statement per bound.
    return (
        f"MATCH (s:{spec.label} {{{spec.key}: $key}})\n"
        f"OPTIONAL MATCH (s)-[rs:{rel.type}*0..{hops}]-(m:{spec.label})\n"
        f"WHERE all(r IN rs WHERE {_in_window(rel.type, 'r')})\n"
        f"WITH DISTINCT m.{spec.key} AS key LIMIT $limit\n"
        "RETURN key"
    )


#: ``GraphStore.reach``: (label, relationship type, hops) -> one statement, for types joining a label to itself.
REACH: dict[tuple[str, str, int], str] = {
    (spec.label, rel.type, hops): _reach(spec, rel, hops)
    for rel in RELS
    if window_basis(rel.type, "out") == window_basis(rel.type, "in")
    for spec in NODES if spec.label in rel.starts and spec.label in rel.ends
    for hops in range(MAX_REACH_HOPS + 1)
}

#: Per-template entries one log rollup block keeps at most (an hour of 34 templates a minute).
MAX_TEMPLATE_KEYS = 2048

#: Log rollups (``LogRollup``): per emitter and UTC hour, parallel lists of bucket offsets (``at_us``,
#: microseconds from the hour) and the EMITTED ``count``/``errors`` summed over templates. The store writes them
#: in the transaction that adds the EMITTED counters, from the same rows, so both stay equal under the same
#: idempotency rule (the ingest cursor skips replayed offsets; a batch is applied whole or not at all). A row
#: carries one block's offsets (distinct) and increments: offsets new to the block are appended, then every
#: offset adds its row's increment. Lists hold floats (Neo4j lists are homogeneous; sums are exact below 2^53).
MERGE_LOG_ROLLUPS = (
    "UNWIND $rows AS row\n"
    "MERGE (h:LogRollup {id: row.id})\n"
    # A write first takes the node's lock until commit: the lists below are read, then written (read committed
    # would otherwise let two writers of one block both read the old lists and lose an update).
    "SET h.at_us = coalesce(h.at_us, [])\n"
    "WITH h, row, h.at_us AS old\n"
    "WITH h, row, old + [o IN row.at_us WHERE NOT o IN old] AS at_us,\n"
    "     coalesce(h.count, []) AS count, coalesce(h.errors, []) AS errors, size(old) AS n_old\n"
    "WITH h, row, at_us, count, errors, n_old,\n"
    "     [o IN at_us | [i IN range(0, size(row.at_us) - 1) WHERE row.at_us[i] = o]] AS hits\n"
    "SET h.at_us = at_us,\n"
    "    h.count = [j IN range(0, size(at_us) - 1) | CASE WHEN j < n_old THEN count[j] ELSE 0.0 END\n"
    "               + reduce(s = 0.0, i IN hits[j] | s + row.count[i])],\n"
    "    h.errors = [j IN range(0, size(at_us) - 1) | CASE WHEN j < n_old THEN errors[j] ELSE 0.0 END\n"
    "                + reduce(s = 0.0, i IN hits[j] | s + row.errors[i])],\n"
    "    h.first_seen = CASE WHEN h.first_seen IS NULL OR datetime(row.first_seen) < h.first_seen\n"
    "                        THEN datetime(row.first_seen) ELSE h.first_seen END,\n"
    "    h.last_seen = CASE WHEN h.last_seen IS NULL OR datetime(row.last_seen) > h.last_seen\n"
    "                       THEN datetime(row.last_seen) ELSE h.last_seen END\n"
    # The same per (bucket, template), for ``GraphStore.template_mix``: keys "<offset>|<template id>"
    # (``tpl_keys``) and their counts (``tpl_count``), from the row's map of increments (a map lookup per key,
    # so the update is linear in the block). At most MAX_TEMPLATE_KEYS keys a block: a service whose
    # templates churn (thousands an hour) keeps the first ones, and its later new templates are not counted
    # in the mix (its totals above are).
    "WITH h, row\n"
    "WITH h, row, coalesce(h.tpl_keys, []) AS old, coalesce(h.tpl_count, []) AS count\n"
    "WITH h, row, count, size(old) AS n_old,\n"
    f"     CASE WHEN size(old) >= {MAX_TEMPLATE_KEYS} THEN old\n"
    "          ELSE old + [k IN keys(row.tpl) WHERE NOT k IN old]"
    f"[..{MAX_TEMPLATE_KEYS} - size(old)] END AS keys\n"
    "SET h.tpl_keys = keys,\n"
    "    h.tpl_count = [j IN range(0, size(keys) - 1) | CASE WHEN j < n_old THEN count[j] ELSE 0.0 END\n"
    "                   + coalesce(row.tpl[keys[j]], 0.0)]"
)

#: The rollup blocks of a window (``GraphStore.log_slices``): unique-index seeks by id, a few per emitter. The
#: lists come back whole, in one record (the driver's cost is per record), and are summed per slice by the
#: caller (list indexing in Cypher cost several times more).
READ_LOG_ROLLUPS = (
    "UNWIND $ids AS id\n"
    "MATCH (h:LogRollup {id: id})\n"
    "RETURN collect([id, h.at_us, h.count, h.errors]) AS blocks"
)


def _new_log_slices(spec: NodeSpec) -> str:
    # Starts from the templates first seen since the window began (a range index seek: few, unless the window
    # covers the start of the data), so only their lines are read. Slice index in whole nanoseconds from $since
    # (integer division), exactly schema.store.slice_index.
    return (
        "MATCH (t:LogTemplate) WHERE t.first_seen >= $since\n"
        f"MATCH (n:{spec.label})-[r:EMITTED]->(t)\n"
        f"WHERE n.{spec.key} IN $keys AND r.bucket >= $since AND r.bucket < $until\n"
        f"WITH n.{spec.key} AS key, r, duration.inSeconds($since, r.bucket) AS d\n"
        "WITH key, (d.seconds * 1000000000 + d.nanosecondsOfSecond) / $slice_ns AS k,\n"
        "     toFloat(coalesce(r.count, 0)) AS c, toFloat(coalesce(r.errors, 0)) AS e\n"
        "WITH key, k, sum(c) AS new_total, sum(e) AS new_errors\n"
        "RETURN key, collect([k, new_total, new_errors]) AS slices"
    )


#: Per-slice lines of templates first seen inside the window (the ``new_*`` sums of ``GraphStore.log_slices``).
NEW_LOG_SLICES: dict[str, str] = {
    spec.label: _new_log_slices(spec)
    for rel in RELS if rel.type == "EMITTED"
    for spec in NODES if spec.label in rel.starts
}

#: The per-template entries of some rollup blocks (``GraphStore.template_mix``), by unique-index seeks.
READ_TEMPLATE_ROLLUPS = (
    "UNWIND $ids AS id\n"
    "MATCH (h:LogRollup {id: id})\n"
    "RETURN collect([id, h.tpl_keys, h.tpl_count]) AS blocks"
)

#: The error share of some log templates (``GraphStore.template_errors``), by unique-index seeks.
READ_TEMPLATE_ERRORS = (
    "UNWIND $ids AS id\n"
    "MATCH (t:LogTemplate {id: id})\n"
    "WHERE t.count > 0\n"
    "RETURN id, toFloat(coalesce(t.errors, 0)) / t.count AS share"
)

#: ``Neo4jGraphStore.rebuild_log_rollups``: every rollup, in bounded transactions.
DELETE_LOG_ROLLUPS = "MATCH (h:LogRollup) WITH h LIMIT $batch DETACH DELETE h RETURN count(*) AS deleted"


def _emitter_keys(spec: NodeSpec) -> str:
    return (
        f"MATCH (n:{spec.label}) WHERE EXISTS {{ (n)-[:EMITTED]->() }}\n"
        f"RETURN n.{spec.key} AS key ORDER BY key"
    )


def _emitted_counts(spec: NodeSpec) -> str:
    return (
        "UNWIND $keys AS key\n"
        f"MATCH (n:{spec.label} {{{spec.key}: key}})-[r:EMITTED]->(t)\n"
        f"RETURN key, t.{node_spec('LogTemplate').key} AS template, r.bucket AS bucket,\n"
        "       coalesce(r.count, 0) AS count, coalesce(r.errors, 0) AS errors"
    )


#: The keys of a label's nodes that emitted log lines, in key order (the rebuild pages through them).
EMITTER_KEYS: dict[str, str] = {
    spec.label: _emitter_keys(spec)
    for rel in RELS if rel.type == "EMITTED"
    for spec in NODES if spec.label in rel.starts
}

#: Every EMITTED counter of some emitters (the rebuild's input).
EMITTED_COUNTS: dict[str, str] = {
    spec.label: _emitted_counts(spec)
    for rel in RELS if rel.type == "EMITTED"
    for spec in NODES if spec.label in rel.starts
}

#: Retention: event nodes by their time property, in bounded transactions.
DELETE_OLD_NODES: dict[str, str] = {
    spec.label: (
        f"MATCH (n:{spec.label}) WHERE n.{spec.time_prop} < $cutoff\n"
        "WITH n LIMIT $batch\n"
        "DETACH DELETE n\n"
        "RETURN count(*) AS deleted"
    )
    for spec in NODES
    if spec.time_prop
}
DELETE_OLD_RELS: dict[str, str] = {
    spec.type: (
        f"MATCH ()-[r:{spec.type}]->() WHERE r.last_seen < $cutoff\n"
        "WITH r LIMIT $batch\n"
        "DELETE r\n"
        "RETURN count(*) AS deleted"
    )
    for spec in RELS
}

COUNT_NODES: dict[str, str] = {spec.label: f"MATCH (n:{spec.label}) RETURN count(n) AS n" for spec in NODES}
COUNT_RELS: dict[str, str] = {spec.type: f"MATCH ()-[r:{spec.type}]->() RETURN count(r) AS n" for spec in RELS}

CLEAR = "MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 10000 ROWS"


def _epoch(expr: str) -> str:
    """A DATETIME as ``[epochSeconds, nanosecond]`` (null stays null; see :func:`_flat_props` for why)."""
    return f"CASE WHEN {expr} IS NULL THEN null ELSE [{expr}.epochSeconds, {expr}.nanosecond] END"


def _only(labels: tuple[str, ...]) -> NodeSpec:
    [label] = labels
    return next(spec for spec in NODES if spec.label == label)


def _incident(hops: int, traffic: bool) -> str:
    by_type = {rel.type: rel for rel in RELS}
    service, instance, host = (_only(by_type["CALLS"].ends), _only(by_type["INSTANCE_OF"].starts),
                               _only(by_type["RUNS_ON"].ends))
    change, anomaly, alert = (_only(by_type[t].starts) for t in ("CHANGED", "ON", "FIRED_ON"))
    entity_key = "n[$label_keys[head(labels(n))]]"

    def signals(rel_type: str, far: NodeSpec, props: tuple[str, ...], name: str) -> str:
        # The event nodes of the window first (range index on their time: window_basis filters these relationships
        # on the far node's time, and the statement always has both ends), then those on the entities: bounded by
        # the events of the window, where expanding from each entity reads every event it ever had (its whole
        # retained history) and drops those outside the window.
        basis, prop = window_basis(rel_type, "in")
        assert (basis, prop) == ("far", far.time_prop), (rel_type, basis, prop)
        values = ", ".join(f"m.{p}" for p in props)
        return (
            "CALL (entities) {\n"
            f"  MATCH (m:{far.label}) WHERE m.{prop} >= $since AND m.{prop} < $until\n"
            f"  MATCH (m)-[r:{rel_type}]->(n) WHERE n IN entities\n"
            f"  RETURN collect([head(labels(n)), {entity_key}, m.{far.key}, {_epoch('m.' + str(prop))}"
            f"{', ' + values if values else ''}]) AS {name}\n"
            "}\n"
        )

    # The CALLED buckets of the window into and out of each service, summed per service, direction and slice
    # here, so only services x slices rows come back. One traversal both ways (half the cost of one per
    # direction). Slice index in whole nanoseconds from $since (integer division), exactly schema.store.slice_index;
    # epoch arithmetic instead of a duration per row (a third cheaper). Durations in whole microseconds as
    # schema.store.duration_us, so the sums are exact in any order. The far end is left unlabelled: CALLED joins
    # services only (the schema checks every write), and a label test would load every far node for nothing.
    called = by_type["CALLED"]
    bucket = f"r.{called.times[0]}"
    traffic_read = (
        "CALL (services) {\n"
        "  UNWIND services AS n\n"
        f"  MATCH (n)-[r:{called.type}]-()\n"
        f"  {_window_condition(called.type, 'in')}"
        f"  WITH n.{service.key} AS key, startNode(r) = n AS out, r,\n"
        f"       (({bucket}.epochSeconds - $since.epochSeconds) * 1000000000\n"
        f"        + {bucket}.nanosecond - $since.nanosecond) / $slice_ns AS k\n"
        "  WITH key, out, k, sum(coalesce(r.calls, 0)) AS calls,\n"
        "       sum(CASE WHEN out THEN 0 ELSE toInteger(coalesce(r.duration_ms_sum, 0) * 1000) END) AS us,\n"
        "       sum(CASE WHEN out THEN 0 ELSE coalesce(r.errors, 0) END) AS errors\n"
        "  RETURN collect([key, k, out, calls, us, errors]) AS traffic\n"
        "}\n"
    )

    return (
        # Services in reach, as REACH does (one more than $limit tells the caller there are too many).
        f"MATCH (s:{service.label} {{{service.key}: $key}})\n"
        f"OPTIONAL MATCH (s)-[rs:CALLS*0..{hops}]-(m:{service.label})\n"
        f"WHERE all(r IN rs WHERE {_in_window('CALLS', 'r')})\n"
        "WITH DISTINCT m LIMIT $limit\n"
        "WITH collect(m) AS services\n"
        "CALL (services) {\n"
        "  UNWIND services AS n\n"
        f"  MATCH (n)-[r:CALLS]->(m:{service.label})\n"
        f"  {_window_condition('CALLS', 'out')}"
        f"  RETURN collect([n.{service.key}, m.{service.key}, r.calls, r.errors]) AS calls\n"
        "}\n"
        "CALL (services) {\n"
        "  UNWIND services AS n\n"
        f"  MATCH (n)<-[r:INSTANCE_OF]-(m:{instance.label})\n"
        f"  {_window_condition('INSTANCE_OF', 'in')}"
        f"  RETURN collect([m.{instance.key}, n.{service.key}]) AS instances, collect(DISTINCT m) AS instance_nodes\n"
        "}\n"
        "CALL (instance_nodes) {\n"
        "  UNWIND instance_nodes AS n\n"
        f"  MATCH (n)-[r:RUNS_ON]->(m:{host.label})\n"
        f"  {_window_condition('RUNS_ON', 'out')}"
        f"  RETURN collect([n.{instance.key}, m.{host.key}]) AS hosts, collect(DISTINCT m) AS host_nodes\n"
        "}\n"
        "WITH services, calls, instances, instance_nodes, hosts, services + instance_nodes + host_nodes AS entities\n"
        + signals("CHANGED", change, ("kind",), "changes")
        + signals("ON", anomaly, ("score", "metric", "value"), "anomalies")
        + signals("FIRED_ON", alert, (), "alerts")
        # Log rollups of services and instances by id (label, hour in epoch seconds and key joined by $sep).
        + "CALL (services, instance_nodes) {\n"
        "  UNWIND services + instance_nodes AS n\n"
        f"  WITH head(labels(n)) AS label, {entity_key} AS key\n"
        "  UNWIND $hours AS hour\n"
        "  MATCH (h:LogRollup {id: label + $sep + toString(hour) + $sep + key})\n"
        "  RETURN collect([label, key, hour, h.at_us, h.count, h.errors]) AS rollups\n"
        "}\n"
        # Lines of templates first seen in the window, per slice, as NEW_LOG_SLICES.
        "CALL (services, instance_nodes) {\n"
        "  MATCH (t:LogTemplate) WHERE t.first_seen >= $since\n"
        "  MATCH (n)-[r:EMITTED]->(t)\n"
        "  WHERE r.bucket >= $since AND r.bucket < $until AND (n IN services OR n IN instance_nodes)\n"
        f"  WITH head(labels(n)) AS label, {entity_key} AS key, r, duration.inSeconds($since, r.bucket) AS d\n"
        "  WITH label, key, (d.seconds * 1000000000 + d.nanosecondsOfSecond) / $slice_ns AS k,\n"
        "       toFloat(coalesce(r.count, 0)) AS c, toFloat(coalesce(r.errors, 0)) AS e\n"
        "  WITH label, key, k, sum(c) AS new_total, sum(e) AS new_errors\n"
        "  RETURN collect([label, key, k, new_total, new_errors]) AS fresh\n"
        "}\n"
        + (traffic_read if traffic else "")
        + f"RETURN [n IN services | n.{service.key}] AS services, calls, instances, hosts, changes, anomalies,\n"
        + ("       alerts, rollups, fresh, traffic" if traffic else "       alerts, rollups, fresh, [] AS traffic")
    )


#: ``GraphStore.incident``: everything the RCA extraction reads around a service, one statement per hop bound and
#: with or without the per-slice span traffic (the most expensive part: every CALLED bucket of the window).
INCIDENT: dict[tuple[int, bool], str] = {
    (hops, traffic): _incident(hops, traffic) for hops in range(MAX_REACH_HOPS + 1) for traffic in (False, True)
}
