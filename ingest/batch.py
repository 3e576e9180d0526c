"""Accumulates graph rows for one write, merging rows that share a natural key.

Many events of a micro-batch touch the same nodes (a busy service, a shared device): merging them here with
the same rules the stores apply (set / min first_seen / max last_seen / add counters) turns thousands of
rows into a few, which is most of what makes a batched write fast.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from schema.graph import rel_spec
from schema.store import Cursor, GraphBatch, NodeRef, NodeRow, RelRow

_RelKey = tuple[str, NodeRef, NodeRef, tuple[tuple[str, Any], ...]]


class _Acc:
    """Mutable accumulator of one row: merged in place, turned into a frozen row once at build time."""

    __slots__ = ("props", "first", "last", "add")

    def __init__(self) -> None:
        self.props: dict[str, Any] = {}
        self.first: datetime | None = None
        self.last: datetime | None = None
        self.add: dict[str, int | float] = {}

    def merge(self, props: dict[str, Any] | None, seen: datetime | None, add: dict[str, int | float] | None) -> None:
        if props:
            self.props.update(props)
        if seen is not None:
            if self.first is None or seen < self.first:
                self.first = seen
            if self.last is None or seen > self.last:
                self.last = seen
        if add:
            for name, delta in add.items():
                self.add[name] = self.add.get(name, 0) + delta


class BatchBuilder:
    """Collects node and relationship upserts; :meth:`build` returns one merged :class:`GraphBatch`."""

    def __init__(self) -> None:
        self._nodes: dict[NodeRef, _Acc] = {}
        self._rels: dict[_RelKey, _Acc] = {}
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
        acc = self._nodes.get(ref)
        if acc is None:
            acc = self._nodes[ref] = _Acc()
        acc.merge(props, seen, add)
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
        """Upsert a relationship between two nodes (the store creates missing end nodes). ``seen`` is
        ignored for relationships that record a single event (``RelSpec.temporal`` is false)."""
        if seen is not None and not rel_spec(rel_type).temporal:
            seen = None
        rkey: _RelKey = (rel_type, start, end, tuple(sorted(key.items())) if key else ())
        acc = self._rels.get(rkey)
        if acc is None:
            acc = self._rels[rkey] = _Acc()
        acc.merge(props, seen, add)

    def cursor(self, source: str, offset: int) -> None:
        """Record that offsets up to ``offset`` of ``source`` are part of this batch."""
        self._cursors[source] = max(offset, self._cursors.get(source, -1))

    def __len__(self) -> int:
        return len(self._nodes) + len(self._rels)

    def build(self) -> GraphBatch:
        """The merged batch (the builder can be discarded afterwards)."""
        return GraphBatch(
            nodes=[NodeRow(r.label, r.key, a.props, a.first, a.last, a.add) for r, a in self._nodes.items()],
            rels=[RelRow(t, s, e, dict(k), a.props, a.first, a.last, a.add) for (t, s, e, k), a in self._rels.items()],
            cursors=[Cursor(source, offset) for source, offset in self._cursors.items()],
        )
