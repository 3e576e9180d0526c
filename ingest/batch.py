"""Accumulates graph rows for one write, merging rows that share a natural key.

Many events of a micro-batch touch the same nodes (a busy service, a shared device): merging them here with
the same rules the stores apply (set / min first_seen / max last_seen / add counters) turns thousands of
rows into a few, which is most of what makes a batched write fast.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from schema.graph import RELS, rel_spec
from schema.store import Cursor, GraphBatch, NodeRef, NodeRow, RelRow

#: A relationship's identity: type, start label and key, end label and key, key properties (plain tuples:
#: they hash much faster than the NodeRefs themselves, and this is hashed for every upsert).
_RelKey = tuple[str, str, str, str, str, tuple[tuple[str, Any], ...]]

_TEMPORAL: dict[str, bool] = {spec.type: spec.temporal for spec in RELS}


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
            mine = self.add
            for name, delta in add.items():
                mine[name] = mine.get(name, 0) + delta


class _NodeAcc(_Acc):
    __slots__ = ("ref",)

    def __init__(self, ref: NodeRef) -> None:
        super().__init__()
        self.ref = ref


class _RelAcc(_Acc):
    __slots__ = ("start", "end")

    def __init__(self, start: NodeRef, end: NodeRef) -> None:
        super().__init__()
        self.start = start
        self.end = end


class BatchBuilder:
    """Collects node and relationship upserts; :meth:`build` returns one merged :class:`GraphBatch`."""

    def __init__(self) -> None:
        self._nodes: dict[tuple[str, str], _NodeAcc] = {}
        self._rels: dict[_RelKey, _RelAcc] = {}
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
        acc = self._nodes.get((label, key))
        if acc is None:
            acc = self._nodes[(label, key)] = _NodeAcc(NodeRef(label, key))  # NodeRef checks the label
        acc.merge(props, seen, add)
        return acc.ref

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
        temporal = _TEMPORAL.get(rel_type)
        if temporal is None:
            rel_spec(rel_type)  # raises: not in the schema
        if seen is not None and not temporal:
            seen = None
        rkey: _RelKey = (rel_type, start.label, start.key, end.label, end.key,
                         tuple(sorted(key.items())) if key else ())
        acc = self._rels.get(rkey)
        if acc is None:
            acc = self._rels[rkey] = _RelAcc(start, end)
        acc.merge(props, seen, add)

    def cursor(self, source: str, offset: int) -> None:
        """Record that offsets up to ``offset`` of ``source`` are part of this batch."""
        self._cursors[source] = max(offset, self._cursors.get(source, -1))

    def __len__(self) -> int:
        return len(self._nodes) + len(self._rels)

    def build(self) -> GraphBatch:
        """The merged batch (the builder can be discarded afterwards)."""
        return GraphBatch(
            nodes=[NodeRow(label, key, a.props, a.first, a.last, a.add) for (label, key), a in self._nodes.items()],
            rels=[RelRow(k[0], a.start, a.end, dict(k[5]), a.props, a.first, a.last, a.add)
                  for k, a in self._rels.items()],
            cursors=[Cursor(source, offset) for source, offset in self._cursors.items()],
        )
