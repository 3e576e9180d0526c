"""Accumulates graph rows for one write, merging rows that share a natural key.

Many events of a micro-batch touch the same nodes (a busy service, a shared device): merging them here with
the same rules the stores apply (set / min first_seen / max last_seen / add counters) turns thousands of
rows into a few, which is most of what makes a batched write fast.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from schema.store import Cursor, GraphBatch, NodeRef, NodeRow, RelRow

_RelKey = tuple[str, NodeRef, NodeRef, tuple[tuple[str, Any], ...]]


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


def _added(a: dict[str, int | float], b: dict[str, int | float]) -> dict[str, int | float]:
    merged = dict(a)
    for name, delta in b.items():
        merged[name] = merged.get(name, 0) + delta
    return merged


class BatchBuilder:
    """Collects node and relationship upserts; :meth:`build` returns one merged :class:`GraphBatch`."""

    def __init__(self) -> None:
        self._nodes: dict[NodeRef, NodeRow] = {}
        self._rels: dict[_RelKey, RelRow] = {}
        self._cursors: dict[str, int] = {}

    def node(
        self,
        label: str,
        key: str,
        props: dict[str, Any] | None = None,
        seen: datetime | None = None,
        add: dict[str, int | float] | None = None,
    ) -> NodeRef:
        """Upsert a node; ``seen`` widens its first_seen/last_seen interval."""
        ref = NodeRef(label, key)
        row = NodeRow(label, key, props or {}, seen, seen, add or {})
        old = self._nodes.get(ref)
        if old is not None:
            row = NodeRow(
                label,
                key,
                {**old.props, **row.props},
                _earliest(old.first_seen, row.first_seen),
                _latest(old.last_seen, row.last_seen),
                _added(old.add, row.add),
            )
        self._nodes[ref] = row
        return ref

    def rel(
        self,
        rel_type: str,
        start: NodeRef,
        end: NodeRef,
        key: dict[str, Any] | None = None,
        props: dict[str, Any] | None = None,
        seen: datetime | None = None,
        add: dict[str, int | float] | None = None,
    ) -> None:
        """Upsert a relationship between two nodes (which must also be upserted by the caller)."""
        key = key or {}
        rkey: _RelKey = (rel_type, start, end, tuple(sorted(key.items())))
        row = RelRow(rel_type, start, end, key, props or {}, seen, seen, add or {})
        old = self._rels.get(rkey)
        if old is not None:
            row = RelRow(
                rel_type,
                start,
                end,
                key,
                {**old.props, **row.props},
                _earliest(old.first_seen, row.first_seen),
                _latest(old.last_seen, row.last_seen),
                _added(old.add, row.add),
            )
        self._rels[rkey] = row

    def cursor(self, source: str, offset: int) -> None:
        """Record that offsets up to ``offset`` of ``source`` are part of this batch."""
        self._cursors[source] = max(offset, self._cursors.get(source, -1))

    def __len__(self) -> int:
        return len(self._nodes) + len(self._rels)

    def build(self) -> GraphBatch:
        """The merged batch (the builder can be discarded afterwards)."""
        return GraphBatch(
            nodes=list(self._nodes.values()),
            rels=list(self._rels.values()),
            cursors=[Cursor(source, offset) for source, offset in self._cursors.items()],
        )
