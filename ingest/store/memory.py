"""In-memory graph store: the embedded default, with the same semantics as the Neo4j back end.

It holds nodes and relationships in dictionaries keyed by natural key, with an adjacency index for
neighbourhood reads. A lock makes each batch atomic with respect to readers (the demo reads from the
gRPC thread while the pipeline writes).
"""

from __future__ import annotations

import threading
from bisect import bisect_left, bisect_right
from collections import defaultdict, deque
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from schema.graph import NODE_SPECS, RELS, node_spec, rel_spec, window_basis
from schema.incident import IncidentReads, read_incident
from schema.store import (
    GraphBatch,
    Hop,
    LogSlices,
    Node,
    NodeRef,
    NodeRow,
    Rel,
    RelRow,
    Subgraph,
    TemplateMix,
    TimeWindow,
    check_hop_direction,
    check_reach,
    slice_count,
    slice_index,
)

_RelKey = tuple[str, NodeRef, NodeRef, tuple[tuple[str, Any], ...]]


def _merge_props(
    target: dict[str, Any],
    props: dict[str, Any],
    first_seen: datetime | None,
    last_seen: datetime | None,
    add: dict[str, int | float],
) -> None:
    """Apply the schema's merge rules (set, min/max of first/last seen, add counters) to ``target``."""
    for name, value in props.items():
        # A null value removes the property, as ``SET n += $props`` does in Neo4j.
        if value is None:
            target.pop(name, None)
        else:
            target[name] = value
    if first_seen is not None:
        current = target.get("first_seen")
        target["first_seen"] = first_seen if current is None else min(current, first_seen)
    if last_seen is not None:
        current = target.get("last_seen")
        target["last_seen"] = last_seen if current is None else max(current, last_seen)
    for name, delta in add.items():
        target[name] = target.get(name, 0) + delta


def _order(key: _RelKey, ref: NodeRef) -> tuple[str, str, str, str]:
    """Stable read order, as the Neo4j back end returns them: type, then the far end's label and key."""
    other = key[2] if key[1] == ref else key[1]
    return (key[0], other.label, other.key, repr(key[3]) if key[3] else "")


def _node_time(label: str, props: dict[str, Any]) -> datetime | None:
    time_prop = NODE_SPECS[label].time_prop
    return props.get(time_prop) if time_prop else None


def _hop_in_window(basis: str, prop: str | None, rel: dict[str, Any], far: dict[str, Any], window: TimeWindow) -> bool:
    """The window rule of ``schema.graph.window_basis`` applied to one relationship and its far node."""
    if basis == "rel" or basis == "far":
        at = (rel if basis == "rel" else far).get(prop or "")
        return at is not None and window.contains(at)
    if basis == "interval":
        return window.overlaps(rel.get("first_seen"), rel.get("last_seen"))
    return True


def _key_time(rel_type: str) -> str | None:
    """The key property a relationship type is windowed by (``EMITTED.bucket``), or ``None``. Only a key property:
    it never changes once written, so an index on it never goes stale."""
    basis, prop = window_basis(rel_type, "out")
    return prop if basis == "rel" and prop in rel_spec(rel_type).key else None


#: Relationship types indexed by their window time per node (see ``MemoryGraphStore._by_time``).
_KEY_TIMES: dict[str, str] = {spec.type: prop for spec in RELS if (prop := _key_time(spec.type)) is not None}


class MemoryGraphStore:
    """A :class:`schema.store.GraphStore` held in process memory."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._nodes: dict[NodeRef, dict[str, Any]] = {}
        self._rels: dict[_RelKey, dict[str, Any]] = {}
        # Per node, per relationship type: reads of one type never scan a node's whole history.
        self._adjacent: dict[NodeRef, dict[str, set[_RelKey]]] = defaultdict(lambda: defaultdict(set))
        self._by_label: dict[str, set[NodeRef]] = defaultdict(set)
        # Per node and bucketed type (CALLED, EMITTED: one relationship per minute), the relationships in time
        # order (parallel lists of times and keys): a windowed read bisects instead of scanning the whole history.
        self._by_time: dict[tuple[NodeRef, str], tuple[list[datetime], list[_RelKey]]] = {}
        self._cursors: dict[str, int] = {}

    # -- writes ---------------------------------------------------------------------------------

    def apply_schema(self) -> None:
        """Nothing to create: dictionary keys already enforce uniqueness."""

    def write(self, batch: GraphBatch) -> None:
        batch.validate()
        with self._lock:
            for node in batch.nodes:
                self._merge_node(node)
            for rel in batch.rels:
                self._merge_rel(rel)
            for cursor in batch.cursors:
                self._cursors[cursor.source] = max(cursor.offset, self._cursors.get(cursor.source, -1))

    def _ensure_node(self, ref: NodeRef) -> dict[str, Any]:
        props = self._nodes.get(ref)
        if props is None:
            props = self._nodes[ref] = {}
            self._by_label[ref.label].add(ref)
        return props

    def _merge_node(self, row: NodeRow) -> None:
        _merge_props(self._ensure_node(row.ref), row.props, row.first_seen, row.last_seen, row.add)

    def _merge_rel(self, row: RelRow) -> None:
        self._ensure_node(row.start)
        self._ensure_node(row.end)
        key: _RelKey = (row.type, row.start, row.end, tuple(sorted(row.key.items())))
        props = self._rels.get(key)
        if props is None:
            props = self._rels[key] = dict(row.key)
            self._adjacent[row.start][row.type].add(key)
            self._adjacent[row.end][row.type].add(key)
            self._index_time(key, insert=True)
        temporal = rel_spec(row.type).temporal
        _merge_props(props, row.props, row.first_seen if temporal else None, row.last_seen if temporal else None,
                     row.add)

    def _index_time(self, key: _RelKey, insert: bool) -> None:
        """Add a new relationship to (or drop one from) ``_by_time`` at both its ends."""
        prop = _KEY_TIMES.get(key[0])
        at = dict(key[3]).get(prop) if prop is not None else None
        if at is None:  # not a bucketed type, or no time: never inside a window
            return
        for node in dict.fromkeys((key[1], key[2])):
            times, keys = self._by_time.setdefault((node, key[0]), ([], []))
            if insert:
                i = bisect_right(times, at)
                times.insert(i, at)
                keys.insert(i, key)
                continue
            i = bisect_left(times, at)
            while i < len(keys) and keys[i] != key:
                i += 1
            if i < len(keys):
                del times[i], keys[i]

    def _in_window(self, ref: NodeRef, rel_type: str, window: TimeWindow) -> list[_RelKey]:
        """The bucketed relationships of ``ref`` whose time lies in the window, from ``_by_time``."""
        times, keys = self._by_time.get((ref, rel_type), ([], []))
        lo = 0 if window.since is None else bisect_left(times, window.since)
        hi = len(times) if window.until is None else bisect_left(times, window.until)
        return keys[lo:hi]

    def cursor(self, source: str) -> int | None:
        with self._lock:
            return self._cursors.get(source)

    # -- reads ----------------------------------------------------------------------------------

    def _node(self, ref: NodeRef) -> Node:
        return Node(ref.label, ref.key, dict(self._nodes[ref]))

    def _rel(self, key: _RelKey) -> Rel:
        return Rel(key[0], key[1], key[2], dict(self._rels[key]))

    def get_node(self, ref: NodeRef) -> Node | None:
        with self._lock:
            return self._node(ref) if ref in self._nodes else None

    def find_nodes(
        self,
        label: str,
        window: TimeWindow | None = None,
        equals: dict[str, Any] | None = None,
        limit: int = 1000,
    ) -> list[Node]:
        node_spec(label)
        found: list[Node] = []
        with self._lock:
            for ref in self._by_label.get(label, ()):
                props = self._nodes[ref]
                if window is not None:
                    at = _node_time(label, props)
                    if at is None or not window.contains(at):
                        continue
                if equals and any(props.get(k) != v for k, v in equals.items()):
                    continue
                found.append(self._node(ref))
        # Newest first, like the Neo4j back end, so a limit keeps the most relevant nodes.
        found.sort(key=lambda n: (_node_time(label, n.props) is not None, _node_time(label, n.props) or 0, n.key),
                   reverse=True)
        return found[:limit]

    def rels_of(self, ref: NodeRef, rel_type: str | None = None, direction: str = "both") -> list[Rel]:
        if rel_type is not None:
            rel_spec(rel_type)
        with self._lock:
            by_type = self._adjacent.get(ref)
            if not by_type:
                return []
            keys = by_type.get(rel_type, ()) if rel_type is not None else [k for ks in by_type.values() for k in ks]
            chosen = [k for k in keys if direction == "both" or (direction == "out") == (k[1] == ref)]
            chosen.sort(key=lambda k: _order(k, ref))
            return [self._rel(k) for k in chosen]

    def expand(
        self,
        refs: Sequence[NodeRef],
        rel_type: str,
        direction: str,
        window: TimeWindow | None = None,
        limit: int = 200_000,
    ) -> list[Hop]:
        check_hop_direction(direction)
        basis, prop = window_basis(rel_type, direction)
        found: list[Hop] = []
        with self._lock:
            for ref in dict.fromkeys(refs):  # each node once, in the caller's order
                # Filtered before sorting: a windowed read of a long history (per-minute CALLED or EMITTED buckets)
                # sorts only what it returns. The order is the same either way.
                candidates = (self._in_window(ref, rel_type, window) if window is not None and rel_type in _KEY_TIMES
                              else self._adjacent.get(ref, {}).get(rel_type, ()))
                keys = [
                    key for key in candidates
                    if (key[1] == ref) == (direction == "out")
                    and (window is None or _hop_in_window(basis, prop, self._rels[key],
                                                          self._nodes[key[2] if direction == "out" else key[1]],
                                                          window))
                ]
                for key in sorted(keys, key=lambda k: _order(k, ref)):
                    far = key[2] if direction == "out" else key[1]
                    found.append(Hop(self._rel(key), self._node(far)))
                    if len(found) >= limit:
                        return found
        return found

    def reach(self, ref: NodeRef, rel_type: str, hops: int, window: TimeWindow | None = None,
              limit: int = 1000) -> list[NodeRef] | None:
        check_reach(rel_type, hops)
        basis, prop = window_basis(rel_type, "out")
        with self._lock:
            if ref not in self._nodes:
                return []
            depth = {ref: 0}
            queue = deque([ref])
            while queue:
                node = queue.popleft()
                if depth[node] >= hops:
                    continue
                for key in self._adjacent.get(node, {}).get(rel_type, ()):
                    far = key[2] if key[1] == node else key[1]
                    if far in depth or far.label != ref.label:
                        continue
                    rel, far_props = self._rels[key], self._nodes[far]
                    if window is not None and not _hop_in_window(basis, prop, rel, far_props, window):
                        continue
                    depth[far] = depth[node] + 1
                    if len(depth) > limit:
                        return None
                    queue.append(far)
        return sorted(depth, key=lambda n: n.key)

    def log_slices(self, refs: Sequence[NodeRef], window: TimeWindow, slice_seconds: int) -> dict[NodeRef, LogSlices]:
        n = slice_count(window, slice_seconds)
        assert window.since is not None
        since = window.since
        emitters = set(rel_spec("EMITTED").starts)
        sums: dict[NodeRef, list[list[float]]] = {}
        for hop in self.expand([r for r in refs if r.label in emitters], "EMITTED", "out", window):
            bucket = hop.rel.props.get("bucket")
            if bucket is None:
                continue
            k = slice_index(bucket, since, slice_seconds)
            acc = sums.setdefault(hop.near, [[0.0] * n for _ in range(4)])
            count = float(hop.rel.props.get("count") or 0)
            errors = float(hop.rel.props.get("errors") or 0)
            acc[0][k] += count
            acc[1][k] += errors
            first = hop.node.props.get("first_seen")
            if first is not None and first >= since:
                acc[2][k] += count
                acc[3][k] += errors
        return {ref: LogSlices(*(tuple(a) for a in acc)) for ref, acc in sums.items()}

    def template_mix(self, refs: Sequence[NodeRef], since: datetime, split: datetime,
                     until: datetime, skip: Sequence[TimeWindow] = ()) -> dict[NodeRef, TemplateMix]:
        emitters = set(rel_spec("EMITTED").starts)
        mix: dict[NodeRef, dict[str, list[float]]] = {}
        window = TimeWindow(since, until)
        for hop in self.expand([r for r in refs if r.label in emitters], "EMITTED", "out", window):
            bucket = hop.rel.props.get("bucket")
            if bucket is None or (bucket < split and any(w.contains(bucket) for w in skip)):
                continue
            counts = mix.setdefault(hop.near, {}).setdefault(hop.node.ref.key, [0.0, 0.0])
            counts[0 if bucket < split else 1] += float(hop.rel.props.get("count") or 0)
        return {ref: {tpl: (c[0], c[1]) for tpl, c in tpls.items()} for ref, tpls in mix.items()}

    def template_errors(self, templates: Sequence[str]) -> dict[str, float]:
        shares: dict[str, float] = {}
        with self._lock:
            for key in dict.fromkeys(templates):
                props = self._nodes.get(NodeRef("LogTemplate", key)) or {}
                count = float(props.get("count") or 0)
                if count > 0:
                    shares[key] = float(props.get("errors") or 0) / count
        return shares

    def incident(self, service: NodeRef, window: TimeWindow, hops: int, limit: int,
                 slice_seconds: int, traffic: bool = False) -> IncidentReads | None:
        return read_incident(self, service, window, hops, limit, slice_seconds, traffic)

    def neighbourhood(
        self,
        ref: NodeRef,
        hops: int,
        window: TimeWindow | None = None,
        rel_types: tuple[str, ...] | None = None,
        limit: int = 5000,
    ) -> Subgraph:
        sub = Subgraph()
        with self._lock:
            if ref not in self._nodes:
                return sub
            sub.nodes[ref] = self._node(ref)
            frontier: deque[tuple[NodeRef, int]] = deque([(ref, 0)])
            seen_rels: set[_RelKey] = set()
            while frontier:
                current, depth = frontier.popleft()
                if depth >= hops:
                    continue
                by_type = self._adjacent.get(current, {})
                keys = [k for t, ks in by_type.items() if not rel_types or t in rel_types for k in ks]
                for key in sorted(keys, key=lambda k: _order(k, current)):
                    if key in seen_rels:
                        continue
                    props = self._rels[key]
                    if window is not None and not window.overlaps(props.get("first_seen"), props.get("last_seen")):
                        continue
                    other = key[2] if key[1] == current else key[1]
                    if other not in sub.nodes:
                        if len(sub.nodes) >= limit:
                            sub.truncated = True
                            continue
                        sub.nodes[other] = self._node(other)
                        frontier.append((other, depth + 1))
                    seen_rels.add(key)
                    sub.rels.append(self._rel(key))
        return sub

    # -- retention and housekeeping ---------------------------------------------------------------

    def delete_older_than(self, cutoff: datetime, batch_size: int = 10_000) -> int:
        deleted = 0
        with self._lock:
            old_rels = [k for k, p in self._rels.items() if p.get("last_seen") is not None and p["last_seen"] < cutoff]
            for key in old_rels:
                self._drop_rel(key)
            deleted += len(old_rels)
            old_nodes = [
                ref for ref, props in self._nodes.items()
                if (at := _node_time(ref.label, props)) is not None and at < cutoff
            ]
            for ref in old_nodes:
                # Detached relationships go with their node and are not counted (as in DETACH DELETE).
                for key in [k for ks in self._adjacent.get(ref, {}).values() for k in ks]:
                    self._drop_rel(key)
                del self._nodes[ref]
                self._by_label[ref.label].discard(ref)
                self._adjacent.pop(ref, None)
            deleted += len(old_nodes)
        return deleted

    def _drop_rel(self, key: _RelKey) -> None:
        self._rels.pop(key, None)
        self._adjacent[key[1]][key[0]].discard(key)
        self._adjacent[key[2]][key[0]].discard(key)
        self._index_time(key, insert=False)

    def count(self, label: str) -> int:
        node_spec(label)
        with self._lock:
            return len(self._by_label.get(label, ()))

    def count_rels(self, rel_type: str) -> int:
        rel_spec(rel_type)
        with self._lock:
            return sum(1 for k in self._rels if k[0] == rel_type)

    def clear(self) -> None:
        with self._lock:
            for table in (self._nodes, self._rels, self._adjacent, self._by_label, self._by_time, self._cursors):
                table.clear()

    def close(self) -> None:
        """Nothing to release."""
