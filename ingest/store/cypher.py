"""Every Cypher statement the Neo4j store runs, generated once from the schema's allow-list.

Labels, relationship types and property names come only from ``schema.graph`` (checked identifiers);
every value travels as a parameter. Statements are built at import into plain dictionaries of strings, so
they are constants that tests read as exact text.
"""

from __future__ import annotations

from schema.graph import NODES, RELS, TIME_PROPS, NodeSpec, RelSpec, window_basis

NODE_KEYS: dict[str, str] = {spec.label: spec.key for spec in NODES}


#: Rows carry times as ISO-8601 text (``row.first_seen``, ``row.last_seen``, ``row.t.<name>``); this turns
#: the two interval ends into DATETIMEs once per row.
_ROW_TIMES = "WITH row, datetime(row.first_seen) AS fs, datetime(row.last_seen) AS ls\n"


def _temporal_and_counters(var: str, counters: tuple[str, ...], times: tuple[str, ...], temporal: bool = True) -> str:
    """SET clauses: declared time properties, the earliest first_seen and latest last_seen; add counters."""
    parts = [f"{var}.{t} = CASE WHEN row.t.{t} IS NULL THEN {var}.{t} ELSE datetime(row.t.{t}) END" for t in times]
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


def _merge_node(spec: NodeSpec) -> str:
    return (
        "UNWIND $rows AS row\n"
        f"{_ROW_TIMES}"
        f"MERGE (n:{spec.label} {{{spec.key}: row.key}})\n"
        "SET n += coalesce(row.props, {})\n"
        f"{_temporal_and_counters('n', spec.counters, spec.times)}"
    )


def _merge_rel(spec: RelSpec, start: str, end: str) -> str:
    times = tuple(t for t in spec.times if t not in spec.key)
    sets = _temporal_and_counters("r", spec.counters, times, spec.temporal)
    key = ", ".join(
        f"{name}: datetime(row.key.{name})" if name in spec.times else f"{name}: row.key.{name}" for name in spec.key
    )
    rel_pattern = f"[r:{spec.type} {{{key}}}]" if key else f"[r:{spec.type}]"
    return (
        "UNWIND $rows AS row\n"
        f"{_ROW_TIMES if spec.temporal else ''}"
        f"MERGE (a:{start} {{{NODE_KEYS[start]}: row.start}})\n"
        f"MERGE (b:{end} {{{NODE_KEYS[end]}: row.end}})\n"
        f"MERGE (a)-{rel_pattern}->(b)\n"
        "SET r += coalesce(row.props, {})"
        + (f"\n{sets}" if sets else "")
    )


#: Upsert statements per label.
MERGE_NODES: dict[str, str] = {spec.label: _merge_node(spec) for spec in NODES}
#: Upsert statements per (relationship type, start label, end label).
MERGE_RELS: dict[tuple[str, str, str], str] = {
    (spec.type, start, end): _merge_rel(spec, start, end) for spec in RELS for start, end in spec.pairs
}

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
        # One record per near node: the driver's per-record cost, not the bytes, bounds wide reads.
        f"RETURN key, collect([{_flat_props('r')}, head(labels(m)), {_flat_props('m')}]) AS hops"
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


def _log_slices(spec: NodeSpec) -> str:
    # Slice index in whole nanoseconds from $since (integer division), exactly schema.store.slice_index.
    return (
        "UNWIND $keys AS key\n"
        f"MATCH (n:{spec.label} {{{spec.key}: key}})-[r:EMITTED]->(t:LogTemplate)\n"
        "WHERE r.bucket >= $since AND r.bucket < $until\n"
        "WITH key, r, t, duration.inSeconds($since, r.bucket) AS d\n"
        "WITH key, (d.seconds * 1000000000 + d.nanosecondsOfSecond) / $slice_ns AS k,\n"
        "     toFloat(coalesce(r.count, 0)) AS c, toFloat(coalesce(r.errors, 0)) AS e,\n"
        "     coalesce(t.first_seen >= $since, false) AS fresh\n"
        "WITH key, k, sum(c) AS total, sum(e) AS errors,\n"
        "     sum(CASE WHEN fresh THEN c ELSE 0.0 END) AS new_total,\n"
        "     sum(CASE WHEN fresh THEN e ELSE 0.0 END) AS new_errors\n"
        "RETURN key, collect([k, total, errors, new_total, new_errors]) AS slices"
    )


#: Per-slice log line sums of Service/Instance nodes (``GraphStore.log_slices``), aggregated in the database:
#: a window of an hour holds tens of thousands of template buckets, which cost seconds as driver records.
LOG_SLICES: dict[str, str] = {
    spec.label: _log_slices(spec)
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
