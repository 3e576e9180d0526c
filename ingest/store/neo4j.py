"""Neo4j graph store: batched ``UNWIND $rows MERGE`` writes, one transaction per batch.

The driver is injected (built at the process edge by :func:`connect`). Each batch is one managed write
transaction running one statement for all its nodes and relationships (``cypher.write_batch``), the log
rollups and the cursor update, so a batch is applied entirely or not at all; the driver retries transient
failures inside ``execute_write``. What still fails is translated here, once, into :mod:`ingest.errors`:
retryable (:class:`StoreUnavailable`) or permanent (:class:`StoreRejected`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from itertools import chain
from operator import attrgetter
from typing import Any, TypeVar

import neo4j
import numpy as np
from neo4j import exceptions as neo4j_errors

from ingest.errors import StoreError, StoreRejected, StoreUnavailable
from ingest.store import cypher
from schema.constraints import STATEMENTS
from schema.graph import NODE_SPECS, node_spec, rel_spec
from schema.incident import IncidentReads, Signal, read_incident, traffic_slices
from schema.store import (
    MAX_REACH_HOPS,
    GraphBatch,
    Hop,
    LogSlices,
    Node,
    NodeRef,
    Rel,
    RelRow,
    Subgraph,
    TemplateMix,
    TimeWindow,
    check_hop_direction,
    check_reach,
    slice_count,
)

T = TypeVar("T")


def connect(uri: str, user: str | None = None, password: str | None = None, **driver_options: Any) -> neo4j.Driver:
    """Build a driver (the only place one is built) and check the server answers."""
    auth = (user, password) if user else None
    driver = neo4j.GraphDatabase.driver(uri, auth=auth, **driver_options)
    with _translated("connect"):
        driver.verify_connectivity()
    return driver


@contextmanager
def _translated(action: str) -> Iterator[None]:
    """Translate driver errors into the ingest error tree (the one place that knows the driver's types)."""
    try:
        yield
    except (neo4j_errors.ServiceUnavailable, neo4j_errors.SessionExpired, neo4j_errors.TransientError,
            neo4j_errors.IncompleteCommit, OSError) as exc:
        # IncompleteCommit is ambiguous (it may have committed); writes are idempotent, so retrying is safe.
        raise StoreUnavailable(f"neo4j unavailable during {action}: {exc}") from exc
    except (neo4j_errors.ClientError, neo4j_errors.CypherTypeError, TypeError, ValueError) as exc:
        raise StoreRejected(f"neo4j rejected {action}: {exc}") from exc
    except neo4j_errors.Neo4jError as exc:
        if exc.is_retryable():
            raise StoreUnavailable(f"neo4j failed during {action} (retryable): {exc}") from exc
        raise StoreError(f"neo4j failed during {action}: {exc}") from exc
    except neo4j_errors.DriverError as exc:
        raise StoreUnavailable(f"neo4j driver failed during {action}: {exc}") from exc


def _native(value: Any) -> Any:
    """Driver temporal types -> Python datetimes, so both back ends return the same values.

    Aware times come back in the fixed UTC offset: the driver's own ``UTC`` is a *named* zone, and Neo4j
    orders a named-zone DATETIME after an offset one at the same instant, so a time read back and passed
    again as a window bound would silently drop the rows exactly at the bound."""
    if hasattr(value, "to_native"):
        native = value.to_native()
        if isinstance(native, datetime) and native.tzinfo is not None:
            return native.astimezone(UTC)
        return native
    if isinstance(value, list):
        return [_native(v) for v in value]
    return value


def _from_pairs(pairs: list[list[Any]]) -> dict[str, Any]:
    """Properties read as pairs by ``cypher._flat_props``: ``[name, value]``, or ``[name, seconds, nanos]``."""
    props: dict[str, Any] = {}
    for item in pairs:
        if len(item) == 3:
            props[item[0]] = _EPOCH + timedelta(seconds=item[1], microseconds=item[2] // 1000)
        else:
            value = item[1]
            props[item[0]] = value if type(value) in _PLAIN else _native(value)
    return props


_PLAIN = frozenset({str, int, float, bool, type(None)})


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _native_props(props: dict[str, Any]) -> dict[str, Any]:
    return {k: _native(v) for k, v in props.items()}


class _Times:
    """The distinct times of one write, as ISO-8601 text (``$times``), which rows refer to by position.

    The driver packs Python datetimes slowly (see ``schema.graph.TIME_PROPS``), and Neo4j parsing the same text
    again for every row that carries it cost about 2 us a time: the rows of one transfer carry its time some
    20 times. The statement parses each distinct time once (``cypher.write_batch``)."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self._by_text: dict[str, int] = {}
        # By identity first: the rows of one event share its time object (the batch's rows, and so their
        # datetime objects, live until the write ends, so identities are not reused meanwhile).
        self._by_id: dict[int, int] = {}

    def ref(self, value: datetime) -> int:
        """The position of ``value`` in :attr:`texts`."""
        at = self._by_id.get(id(value))
        if at is None:
            text = value.isoformat()
            at = self._by_text.get(text)
            if at is None:
                at = self._by_text[text] = len(self.texts)
                self.texts.append(text)
            self._by_id[id(value)] = at
        return at


def _row(props: dict[str, Any], first: datetime | None, last: datetime | None, add: dict[str, Any],
         times: _Times) -> dict[str, Any]:
    """One parameter row. Datetimes travel as positions in the write's :class:`_Times`, and empty parts are
    left out: the server unpacks every field of every row, and a missing key reads as null."""
    row: dict[str, Any] = {}
    if props:
        if any(isinstance(v, datetime) for v in props.values()):
            row["props"] = {k: v for k, v in props.items() if not isinstance(v, datetime)}
            row["t"] = {k: times.ref(v) for k, v in props.items() if isinstance(v, datetime)}
            if not row["props"]:
                del row["props"]
        else:
            row["props"] = props  # read-only from here on: no copy
    if first is not None:
        row["first_seen"] = times.ref(first)
    if last is not None:
        row["last_seen"] = times.ref(last)
    if add:
        row["add"] = add
    return row


def _position(ref: NodeRef, node_rows: dict[str, list[dict[str, Any]]],
              position: dict[tuple[str, str], int]) -> int:
    """Where a relationship's end is among its label's node rows; an end the batch does not upsert gets a row
    with its key alone (the store creates missing ends, and merging a bare row changes nothing else)."""
    at = position.get((ref.label, ref.key))
    if at is None:
        rows = node_rows[ref.label]
        at = position[(ref.label, ref.key)] = len(rows)
        rows.append({"key": ref.key})
    return at


_HOUR_US = 3600 * 1_000_000


def _epoch_us(at: datetime) -> int:
    """Whole microseconds since the epoch (naive times are taken as UTC, as the driver stores them)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return (at - _EPOCH) // timedelta(microseconds=1)


_ROLLUP_SEP = "|"


def _rollup_id(ref: NodeRef, hour_us: int) -> str:
    """The ``LogRollup`` key of one emitter's hour: label and hour first (neither holds ``|``), key last
    (``cypher.INCIDENT`` builds the same text from ``$sep``)."""
    return f"{ref.label}{_ROLLUP_SEP}{hour_us // 1_000_000}{_ROLLUP_SEP}{ref.key}"


def _rollup_blocks(emitters: Sequence[NodeRef], since_us: int, until_us: int) -> dict[str, tuple[NodeRef, int]]:
    """The ``LogRollup`` ids of the emitters' UTC hours that meet ``[since_us, until_us)``, each with its emitter
    and the start of its hour (microseconds)."""
    return {
        _rollup_id(ref, hour_us): (ref, hour_us)
        for ref in emitters
        for hour_us in range(since_us - since_us % _HOUR_US, until_us, _HOUR_US)
    }


def _epoch_time(at: list[int] | None) -> datetime | None:
    """A time read as ``[epochSeconds, nanosecond]`` (see ``cypher._epoch``)."""
    return None if at is None else _EPOCH + timedelta(seconds=at[0], microseconds=at[1] // 1000)


def _log_sums(emitters: list[NodeRef], n: int, since_us: int, until_us: int, slice_seconds: int,
              blocks: Iterable[tuple[NodeRef, int, list[int], list[float], list[float]]],
              fresh: Iterable[tuple[NodeRef, list[list[Any]]]]) -> dict[NodeRef, LogSlices]:
    """``GraphStore.log_slices`` from rollup blocks (emitter, start of the hour in microseconds, offsets, counts,
    errors) and new-template lines (emitter, ``[slice, total, errors]`` triples)."""
    # Every (emitter, bucket) entry of the blocks at once: slice index exactly schema.store.slice_index, in
    # whole microseconds; entries outside the window are dropped; sums per (emitter, slice) by bincount.
    position = {ref: i for i, ref in enumerate(emitters)}
    blocks = list(blocks)
    lengths = np.fromiter((len(b[2]) for b in blocks), np.int64, len(blocks))
    total = int(lengths.sum())
    owner = np.repeat(np.fromiter((position[b[0]] for b in blocks), np.int64, len(blocks)), lengths)
    at_arr = (np.repeat(np.fromiter((b[1] for b in blocks), np.int64, len(blocks)), lengths)
              + np.fromiter(chain.from_iterable(b[2] for b in blocks), np.int64, total))
    count = np.fromiter(chain.from_iterable(b[3] for b in blocks), np.float64, total)
    errors = np.fromiter(chain.from_iterable(b[4] for b in blocks), np.float64, total)
    inside = (at_arr >= since_us) & (at_arr < until_us)
    cell = owner[inside] * n + (at_arr[inside] - since_us) // (slice_seconds * 1_000_000)
    size = len(emitters) * n
    totals = np.bincount(cell, count[inside], size).reshape(-1, n).tolist()
    error_sums = np.bincount(cell, errors[inside], size).reshape(-1, n).tolist()
    seen = np.bincount(cell // n, minlength=len(emitters)) > 0
    zeros = (0.0,) * n
    out = {emitters[i]: LogSlices(tuple(totals[i]), tuple(error_sums[i]), zeros, zeros)
           for i in np.flatnonzero(seen).tolist()}
    for ref, slices in fresh:
        new_total, new_errors = [0.0] * n, [0.0] * n
        for k, line_total, line_errors in slices:
            new_total[k], new_errors[k] = line_total, line_errors
        # A node without rollups cannot happen while rollups and EMITTED agree; it is kept whole if they do not.
        old = out.get(ref) or LogSlices(zeros, zeros, zeros, zeros)
        out[ref] = LogSlices(old.total, old.errors, tuple(new_total), tuple(new_errors))
    return out


def _rollup_rows(batch: GraphBatch) -> list[dict[str, Any]]:
    """The batch's EMITTED counters summed per emitter, UTC hour and bucket (and per bucket and template, in the
    ``tpl`` map of "<offset>|<template>" keys): one ``LogRollup`` row per block.

    Only counters (``add``) are rolled up: that is how the mapping writes EMITTED, and what a replay guard
    (the ingest cursor) protects; a ``count`` set as a plain property would not be summed by EMITTED either."""
    blocks: dict[str, dict[str, Any]] = {}
    for rel in batch.rels:
        if rel.type != "EMITTED":
            continue
        bucket = rel.key["bucket"]
        at = _epoch_us(bucket)
        hour_us = at - at % _HOUR_US
        block = blocks.get(rollup_id := _rollup_id(rel.start, hour_us))
        if block is None:
            block = blocks[rollup_id] = {"id": rollup_id, "sums": {}, "tpl": {}, "first": None, "last": None}
        sums = block["sums"].setdefault(at - hour_us, [0.0, 0.0])
        sums[0] += float(rel.add.get("count", 0))
        sums[1] += float(rel.add.get("errors", 0))
        tpl_key = f"{at - hour_us}{_ROLLUP_SEP}{rel.end.key}"
        block["tpl"][tpl_key] = block["tpl"].get(tpl_key, 0.0) + float(rel.add.get("count", 0))
        for seen in (rel.first_seen, rel.last_seen, bucket):
            if seen is not None:
                block["first"] = seen if block["first"] is None else min(block["first"], seen)
                block["last"] = seen if block["last"] is None else max(block["last"], seen)
    return [
        {"id": b["id"], "at_us": list(b["sums"]), "count": [c for c, _ in b["sums"].values()],
         "errors": [e for _, e in b["sums"].values()], "tpl": b["tpl"], "first_seen": b["first"].isoformat(),
         "last_seen": b["last"].isoformat()}
        for b in blocks.values()
    ]


class Neo4jGraphStore:
    """A :class:`schema.store.GraphStore` on Neo4j 5."""

    def __init__(self, driver: neo4j.Driver, database: str | None = None) -> None:
        self._driver = driver
        self._database = database

    # -- plumbing -------------------------------------------------------------------------------

    def _write(self, action: str, work: Callable[[neo4j.ManagedTransaction], T]) -> T:
        with _translated(action), self._driver.session(database=self._database) as session:
            return session.execute_write(work)

    def _read(self, action: str, query: str, **params: Any) -> list[neo4j.Record]:
        def work(tx: neo4j.ManagedTransaction) -> list[neo4j.Record]:
            return list(tx.run(query, params))

        with _translated(action), self._driver.session(database=self._database) as session:
            return session.execute_read(work)

    # -- writes ---------------------------------------------------------------------------------

    def apply_schema(self) -> None:
        with _translated("schema apply"), self._driver.session(database=self._database) as session:
            for statement in STATEMENTS:
                session.run(statement).consume()
            session.run("CALL db.awaitIndexes(300)").consume()

    def write(self, batch: GraphBatch) -> None:
        """Apply a batch in one transaction: its rows in one statement (``cypher.write_batch``), then the log
        rollups and the cursors."""
        batch.validate()
        times = _Times()
        node_rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
        position: dict[tuple[str, str], int] = {}  # (label, key) -> index in node_rows[label]
        # In key order within each label (labels go in the schema's order, see ``cypher.write_batch``): workers
        # that write the same nodes at once (scale-out: shared merchants and payees) then lock them in one order,
        # which keeps deadlocks, and the driver's pause of about a second before it retries one, rare.
        for node in sorted(batch.nodes, key=attrgetter("key")):
            row = _row(node.props, node.first_seen, node.last_seen, node.add, times)
            row["key"] = node.key
            rows = node_rows[node.label]
            position[(node.label, node.key)] = len(rows)
            rows.append(row)
        rel_rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for rel in batch.rels:
            row = _row(rel.props, rel.first_seen, rel.last_seen, rel.add, times)
            start, end = rel.start, rel.end
            row["start"] = _position(start, node_rows, position)
            row["end"] = _position(end, node_rows, position)
            if rel.key:
                row["key"] = {k: times.ref(v) if isinstance(v, datetime) else v for k, v in rel.key.items()}
            rel_rows[cypher.rel_group(rel.type, start.label, end.label)].append(row)
        cursor_rows = [{"source": c.source, "offset": c.offset} for c in batch.cursors]
        rollup_rows = _rollup_rows(batch)

        statement = cypher.write_batch(
            tuple(label for label in cypher.MERGE_NODES if label in node_rows),
            tuple(shape for shape in cypher.MERGE_RELS if cypher.rel_group(*shape) in rel_rows),
        )

        def work(tx: neo4j.ManagedTransaction) -> None:
            if node_rows:  # every relationship row added its ends to node_rows
                tx.run(statement, nodes=node_rows, rels=rel_rows, times=times.texts).consume()
            if rollup_rows:  # with the EMITTED counters they sum, so both commit or neither does
                tx.run(cypher.MERGE_LOG_ROLLUPS, rows=rollup_rows).consume()
            if cursor_rows:
                tx.run(cypher.ADVANCE_CURSORS, rows=cursor_rows).consume()

        self._write(f"write of {len(batch)} rows", work)

    def cursor(self, source: str) -> int | None:
        records = self._read("read cursor", cypher.READ_CURSOR, source=source)
        return records[0]["offset"] if records else None

    # -- reads ----------------------------------------------------------------------------------

    def get_node(self, ref: NodeRef) -> Node | None:
        records = self._read("get node", cypher.GET_NODE[ref.label], key=ref.key)
        return Node(ref.label, ref.key, self._strip_key(ref.label, records[0]["props"])) if records else None

    @staticmethod
    def _strip_key(label: str, props: dict[str, Any]) -> dict[str, Any]:
        key = NODE_SPECS[label].key
        return {k: v for k, v in _native_props(props).items() if k != key}

    def find_nodes(
        self,
        label: str,
        window: TimeWindow | None = None,
        equals: dict[str, Any] | None = None,
        limit: int = 1000,
    ) -> list[Node]:
        node_spec(label)
        window = window or TimeWindow()
        records = self._read(
            "find nodes", cypher.FIND_NODES[label],
            since=window.since, until=window.until, equals=equals or {}, limit=limit,
        )
        return [Node(label, r["key"], self._strip_key(label, r["props"])) for r in records]

    def rels_of(self, ref: NodeRef, rel_type: str | None = None, direction: str = "both") -> list[Rel]:
        if rel_type is not None:
            rel_spec(rel_type)
        records = self._read(
            "relationships", cypher.RELS_OF[ref.label], key=ref.key, type=rel_type, direction=direction,
            label_keys=cypher.NODE_KEYS,
        )
        rels = []
        for r in records:
            other = NodeRef(r["m_label"], r["m_key"])
            start, end = (ref, other) if r["outgoing"] else (other, ref)
            rels.append(Rel(r["type"], start, end, _native_props(r["props"])))
        return rels

    def expand(
        self,
        refs: Sequence[NodeRef],
        rel_type: str,
        direction: str,
        window: TimeWindow | None = None,
        limit: int = 200_000,
    ) -> list[Hop]:
        check_hop_direction(direction)
        rel_spec(rel_type)
        window = window or TimeWindow()
        by_label: dict[str, list[str]] = {}
        for ref in dict.fromkeys(refs):
            by_label.setdefault(ref.label, []).append(ref.key)
        rel_key = rel_spec(rel_type).key
        found: dict[NodeRef, list[Hop]] = {}
        n_found = 0
        for label, keys in by_label.items():
            statement = cypher.EXPAND_HOPS.get((label, rel_type, direction))
            if statement is None:  # the type never touches this label on that side
                continue
            [record] = self._read("expand", statement, keys=keys, since=window.since, until=window.until,
                                  limit=limit - n_found, time_keys=cypher.TIME_KEYS)
            for near_key, hop_rows in record["near"]:
                near = NodeRef(label, near_key)
                near_hops = found[near] = []
                for r_pairs, m_label, m_pairs in hop_rows:
                    m_props = _from_pairs(m_pairs)
                    key = NODE_SPECS[m_label].key
                    far = NodeRef(m_label, m_props.pop(key))
                    start, end = (near, far) if direction == "out" else (far, near)
                    near_hops.append(Hop(Rel(rel_type, start, end, _from_pairs(r_pairs)),
                                         Node(m_label, far.key, m_props)))
                # The in-memory store's order: the far end's label and key, then the relationship's key.
                near_hops.sort(key=lambda h: (h.node.label, h.node.key,
                                              repr(tuple(sorted((k, h.rel.props.get(k)) for k in rel_key)))
                                              if rel_key else ""))
                n_found += len(near_hops)
            if n_found >= limit:
                break
        # Near nodes in the caller's order, as the in-memory store walks them: readers that number what they
        # find (the RCA extraction's node indices) get the same numbering from every back end.
        return [h for ref in dict.fromkeys(refs) for h in found.get(ref, ())][:limit]

    def reach(self, ref: NodeRef, rel_type: str, hops: int, window: TimeWindow | None = None,
              limit: int = 1000) -> list[NodeRef] | None:
        check_reach(rel_type, hops)
        statement = cypher.REACH.get((ref.label, rel_type, hops))
        if statement is None:  # the type never joins this label to itself: only the node itself is in reach
            return [ref] if self.get_node(ref) is not None else []
        window = window or TimeWindow()
        records = self._read("reach", statement, key=ref.key, since=window.since, until=window.until, limit=limit + 1)
        if len(records) > limit:
            return None
        return sorted((NodeRef(ref.label, r["key"]) for r in records if r["key"] is not None), key=lambda n: n.key)

    def log_slices(self, refs: Sequence[NodeRef], window: TimeWindow, slice_seconds: int) -> dict[NodeRef, LogSlices]:
        """Totals from the ``LogRollup`` blocks of the window's hours (a few index seeks per node instead of every
        EMITTED relationship of the window); ``new_*`` from the lines of templates first seen in the window."""
        n = slice_count(window, slice_seconds)
        assert window.since is not None and window.until is not None
        since_us, until_us = _epoch_us(window.since), _epoch_us(window.until)
        emitters = list(dict.fromkeys(ref for ref in refs if ref.label in cypher.NEW_LOG_SLICES))
        if not emitters:
            return {}
        blocks = _rollup_blocks(emitters, since_us, until_us)
        by_label: dict[str, list[str]] = {}
        for ref in emitters:
            by_label.setdefault(ref.label, []).append(ref.key)

        def work(tx: neo4j.ManagedTransaction) -> tuple[list[list[Any]], list[tuple[str, list[Any]]]]:
            rollups = tx.run(cypher.READ_LOG_ROLLUPS, ids=list(blocks)).single(strict=True)["blocks"]
            fresh = [(label, list(tx.run(cypher.NEW_LOG_SLICES[label], keys=keys, since=window.since,
                                         until=window.until, slice_ns=slice_seconds * 1_000_000_000)))
                     for label, keys in by_label.items()]
            return rollups, fresh

        with _translated("log slices"), self._driver.session(database=self._database) as session:
            rollups, fresh = session.execute_read(work)
        return _log_sums(
            emitters, n, since_us, until_us, slice_seconds,
            ((*blocks[rollup_id], offsets, block_count, block_errors)
             for rollup_id, offsets, block_count, block_errors in rollups),
            ((NodeRef(label, record["key"]), record["slices"]) for label, records in fresh for record in records),
        )

    def template_mix(self, refs: Sequence[NodeRef], since: datetime, split: datetime,
                     until: datetime, skip: Sequence[TimeWindow] = ()) -> dict[NodeRef, TemplateMix]:
        """From the ``LogRollup`` blocks of the period's hours (a few index seeks per node, however long the
        node's history), not from its ``EMITTED`` relationships."""
        emitters = list(dict.fromkeys(ref for ref in refs if ref.label in cypher.NEW_LOG_SLICES))
        if not emitters:
            return {}
        since_us, split_us, until_us = _epoch_us(since), _epoch_us(split), _epoch_us(until)
        blocks = _rollup_blocks(emitters, since_us, until_us)
        with _translated("template mix"), self._driver.session(database=self._database) as session:
            found = session.execute_read(
                lambda tx: tx.run(cypher.READ_TEMPLATE_ROLLUPS, ids=list(blocks)).single(strict=True)["blocks"])
        skipped = [(_epoch_us(w.since) if w.since else since_us, _epoch_us(w.until) if w.until else until_us)
                   for w in skip]
        mix: dict[NodeRef, dict[str, list[float]]] = {}
        for rollup_id, keys, counts in found:
            ref, hour_us = blocks[rollup_id]
            for key, count in zip(keys or (), counts or (), strict=True):
                offset, template = key.split(_ROLLUP_SEP, 1)
                at = hour_us + int(offset)
                if not since_us <= at < until_us:
                    continue
                if at < split_us and any(lo <= at < hi for lo, hi in skipped):
                    continue
                mix.setdefault(ref, {}).setdefault(template, [0.0, 0.0])[0 if at < split_us else 1] += count
        return {ref: {tpl: (c[0], c[1]) for tpl, c in tpls.items()} for ref, tpls in mix.items()}

    def template_errors(self, templates: Sequence[str]) -> dict[str, float]:
        if not templates:
            return {}
        records = self._read("template errors", cypher.READ_TEMPLATE_ERRORS, ids=list(dict.fromkeys(templates)))
        return {r["id"]: float(r["share"]) for r in records}

    def incident(self, service: NodeRef, window: TimeWindow, hops: int, limit: int,
                 slice_seconds: int, traffic: bool = False) -> IncidentReads | None:
        """One statement (``cypher.INCIDENT``): reach, calls, instances, hosts, the signals on all of them and the log
        rollups and new-template lines; ordered here as :func:`schema.incident.read_incident` orders them."""
        if hops > MAX_REACH_HOPS or service.label != "Service":
            return read_incident(self, service, window, hops, limit, slice_seconds, traffic)
        assert window.since is not None and window.until is not None
        n = slice_count(window, slice_seconds)
        since_us, until_us = _epoch_us(window.since), _epoch_us(window.until)
        hours = [h // 1_000_000 for h in range(since_us - since_us % _HOUR_US, until_us, _HOUR_US)]
        records = self._read("incident", cypher.INCIDENT[hops, traffic], key=service.key, since=window.since,
                             until=window.until, limit=limit + 1, label_keys=cypher.NODE_KEYS, hours=hours,
                             sep=_ROLLUP_SEP, slice_ns=slice_seconds * 1_000_000_000)
        if not records:  # the service does not exist: what the reads one by one give
            return read_incident(self, service, window, hops, limit, slice_seconds, traffic)
        record = records[0]
        if len(record["services"]) > limit:
            return None
        services = sorted(dict.fromkeys([service, *(NodeRef(service.label, k) for k in record["services"])]),
                          key=lambda r: r.key)
        svc = {r.key: r for r in services}

        def service_ref(key: str) -> NodeRef:
            return svc.get(key) or NodeRef(service.label, key)

        calls = [(service_ref(a), service_ref(b), float(c or 0), float(e or 0))
                 for a, b, c, e in sorted(record["calls"], key=lambda row: (row[0], row[1]))]
        position = {r.key: i for i, r in enumerate(services)}
        instance_rows = sorted(record["instances"], key=lambda row: (position[row[1]], row[0]))
        # One NodeRef per entity, looked up by (label, key) (a plain tuple hashes in C, a NodeRef in Python); rows
        # name entities by label and key.
        ref_of: dict[tuple[str, str], NodeRef] = {(r.label, r.key): r for r in services}

        def ref(label: str, key: str) -> NodeRef:
            found = ref_of.get((label, key))
            if found is None:
                found = ref_of[label, key] = NodeRef(label, key)
            return found

        instances = [(ref("Instance", i), svc[s]) for i, s in instance_rows]
        inst_order = {key: k for k, key in enumerate(dict.fromkeys(i for i, _ in instance_rows))}
        host_rows = sorted(record["hosts"], key=lambda row: (inst_order[row[0]], row[1]))
        hosts = [(ref("Instance", i), ref("Host", h)) for i, h in host_rows]
        entities = list(dict.fromkeys([*services, *(i for i, _ in instances), *(h for _, h in hosts)]))
        entity_order = {(r.label, r.key): k for k, r in enumerate(entities)}

        def signals(rows: list[list[Any]]) -> list[Signal]:
            # Sorted by entity and the far node's key first, then made (the order sorting the signals gave).
            rows = sorted(rows, key=lambda row: (entity_order[row[0], row[1]], row[2]))
            return [Signal(ref(label, key), far_key, _epoch_time(at), *rest) for label, key, far_key, at, *rest in rows]

        changes = [Signal(ref(label, key), change_key, _epoch_time(at), metric=kind)
                   for label, key, change_key, at, kind in
                   sorted(record["changes"], key=lambda row: (entity_order[row[0], row[1]], row[2]))]

        fresh: dict[NodeRef, list[list[Any]]] = {}  # one row per emitter and slice
        for label, key, k, new_total, new_errors in record["fresh"]:
            fresh.setdefault(ref(label, key), []).append([k, new_total, new_errors])
        logs = _log_sums(
            entities[:len(services) + len(inst_order)], n, since_us, until_us, slice_seconds,
            ((ref(label, key), hour * 1_000_000, offsets, block_count, block_errors)
             for label, key, hour, offsets, block_count, block_errors in record["rollups"]),
            fresh.items(),
        )
        # Summed per service, direction and slice in the statement; integers (durations in microseconds), so exact.
        traffic_rows = record["traffic"]
        traffic = traffic_slices(
            n, ((svc[key], k, calls, us, errors) for key, k, out, calls, us, errors in traffic_rows if not out),
            ((svc[key], k, calls) for key, k, out, calls, _, _ in traffic_rows if out))
        return IncidentReads(services=services, calls=calls, instances=instances, hosts=hosts,
                             changes=changes, anomalies=signals(record["anomalies"]),
                             alerts=signals(record["alerts"]), logs=logs, traffic=traffic)

    def neighbourhood(
        self,
        ref: NodeRef,
        hops: int,
        window: TimeWindow | None = None,
        rel_types: tuple[str, ...] | None = None,
        limit: int = 5000,
    ) -> Subgraph:
        window = window or TimeWindow()
        sub = Subgraph()
        records = self._read("neighbourhood", cypher.ELEMENT_ID[ref.label], key=ref.key)
        if not records:
            return sub
        sub.nodes[ref] = Node(ref.label, ref.key, self._strip_key(ref.label, records[0]["props"]))
        seen_nodes = {records[0]["id"]}
        seen_rels: set[str] = set()
        frontier = [records[0]["id"]]
        for _ in range(hops):
            if not frontier:
                break
            rows = self._read(
                "neighbourhood", cypher.EXPAND, frontier=frontier, types=list(rel_types) if rel_types else None,
                since=window.since, until=window.until, limit=limit + 1, label_keys=cypher.NODE_KEYS,
            )
            if len(rows) > limit:
                sub.truncated = True
            frontier = []
            for r in rows[:limit]:
                if r["mid"] not in seen_nodes:
                    if len(sub.nodes) >= limit:
                        sub.truncated = True
                        continue
                    seen_nodes.add(r["mid"])
                    frontier.append(r["mid"])
                    m_label = r["m_label"]
                    m_key = r["m_props"][NODE_SPECS[m_label].key]
                    sub.nodes[NodeRef(m_label, m_key)] = Node(m_label, m_key, self._strip_key(m_label, r["m_props"]))
                if r["rid"] not in seen_rels:
                    seen_rels.add(r["rid"])
                    sub.rels.append(Rel(r["type"], NodeRef(r["s_label"], r["s_key"]), NodeRef(r["e_label"], r["e_key"]),
                                        _native_props(r["props"])))
        return sub

    # -- retention and housekeeping ---------------------------------------------------------------

    def delete_older_than(self, cutoff: datetime, batch_size: int = 10_000) -> int:
        total = 0
        statements = [*cypher.DELETE_OLD_RELS.values(), *cypher.DELETE_OLD_NODES.values()]
        for statement in statements:
            while True:  # bounded transactions: each deletes at most batch_size
                deleted = self._write(
                    "retention",
                    lambda tx, q=statement: tx.run(q, cutoff=cutoff, batch=batch_size).single()["deleted"],
                )
                total += deleted
                if deleted < batch_size:
                    break
        return total

    def rebuild_log_rollups(self, page: int = 200, batch_size: int = 10_000) -> int:
        """Recompute every ``LogRollup`` from the ``EMITTED`` counters; returns the rollups written.

        For a database written before rollups existed (its log counts would read as zero), or one whose rollups
        are in doubt. Run it with ingest stopped: a batch written while it runs could be counted twice or not at
        all. It is idempotent: the rollups are deleted first, then summed again from the relationships."""
        while True:
            deleted = self._write("rollup rebuild", lambda tx: tx.run(cypher.DELETE_LOG_ROLLUPS,
                                                                      batch=batch_size).single()["deleted"])
            if deleted < batch_size:
                break
        written = 0
        for label, statement in cypher.EMITTER_KEYS.items():
            keys = [r["key"] for r in self._read("rollup rebuild", statement)]
            for i in range(0, len(keys), page):
                records = self._read("rollup rebuild", cypher.EMITTED_COUNTS[label], keys=keys[i : i + page])
                # The rows the write path would have rolled up, rebuilt from what EMITTED holds now.
                counters = GraphBatch(rels=[
                    RelRow("EMITTED", NodeRef(label, r["key"]), NodeRef("LogTemplate", r["template"]),
                           key={"bucket": r["bucket"].to_native()}, add={"count": r["count"], "errors": r["errors"]})
                    for r in records
                ])
                rows = _rollup_rows(counters)
                if rows:
                    self._write("rollup rebuild",
                                lambda tx, rows=rows: tx.run(cypher.MERGE_LOG_ROLLUPS, rows=rows).consume())
                written += len(rows)
        return written

    def count(self, label: str) -> int:
        node_spec(label)
        return self._read("count", cypher.COUNT_NODES[label])[0]["n"]

    def count_rels(self, rel_type: str) -> int:
        rel_spec(rel_type)
        return self._read("count", cypher.COUNT_RELS[rel_type])[0]["n"]

    def clear(self) -> None:
        with _translated("clear"), self._driver.session(database=self._database) as session:
            session.run(cypher.CLEAR).consume()

    def close(self) -> None:
        self._driver.close()
