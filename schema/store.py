"""The graph store contract: the rows a writer sends and the interface every back end implements.

Two back ends implement :class:`GraphStore`: Neo4j (``ingest.store.neo4j``) and in-memory
(``ingest.store.memory``, the embedded default). One conformance suite runs unchanged against both.
Readers (rules, GNN feature extraction, the gRPC server) depend on this protocol only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from schema.graph import check_property_name, node_spec, rel_spec, window_basis

#: Property values a store accepts: what Neo4j can hold natively.
PropValue = str | int | float | bool | datetime | list[str] | list[int] | list[float] | None


@dataclass(frozen=True)
class NodeRef:
    """A node by label and natural key value."""

    label: str
    key: str

    def __post_init__(self) -> None:
        node_spec(self.label)


@dataclass(frozen=True)
class NodeRow:
    """Upsert one node. ``first_seen``/``last_seen`` keep the min/max; ``add`` increments counters."""

    label: str
    key: str
    props: dict[str, Any] = field(default_factory=dict)
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    add: dict[str, int | float] = field(default_factory=dict)

    @property
    def ref(self) -> NodeRef:
        return NodeRef(self.label, self.key)


@dataclass(frozen=True)
class RelRow:
    """Upsert one relationship (and its end nodes if missing). ``key`` tells parallel edges apart."""

    type: str
    start: NodeRef
    end: NodeRef
    key: dict[str, Any] = field(default_factory=dict)
    props: dict[str, Any] = field(default_factory=dict)
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    add: dict[str, int | float] = field(default_factory=dict)


@dataclass(frozen=True)
class Cursor:
    """The highest source offset a batch contains, stored in the same transaction as the batch."""

    source: str
    offset: int


@dataclass
class GraphBatch:
    """Everything one write applies atomically."""

    nodes: list[NodeRow] = field(default_factory=list)
    rels: list[RelRow] = field(default_factory=list)
    cursors: list[Cursor] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.nodes) + len(self.rels)

    def extend(self, other: GraphBatch) -> None:
        """Append another batch's rows (order kept: nodes before relationships at write time)."""
        self.nodes.extend(other.nodes)
        self.rels.extend(other.rels)
        self.cursors.extend(other.cursors)

    def validate(self) -> None:
        """Check every label, type, key and property name against the schema allow-list."""
        for node in self.nodes:
            spec = node_spec(node.label)
            for name, value in node.props.items():
                check_property_name(name)
                _check_time(node.label, name, value, spec.times)
                if name == spec.key:
                    raise ValueError(f"{node.label}.{name} is the key; pass it as key, not a property")
            _check_counters(node.label, node.add, spec.counters)
        for rel in self.rels:
            spec = rel_spec(rel.type)
            if (rel.start.label, rel.end.label) not in spec.pairs:
                raise ValueError(f"{rel.type} cannot join {rel.start.label} to {rel.end.label}")
            if set(rel.key) != set(spec.key):
                raise ValueError(f"{rel.type} needs key properties {spec.key}, got {tuple(rel.key)}")
            for name, value in (*rel.props.items(), *rel.key.items()):
                check_property_name(name)
                _check_time(rel.type, name, value, spec.times)
            _check_counters(rel.type, rel.add, spec.counters)


def _check_time(owner: str, name: str, value: Any, times: tuple[str, ...]) -> None:
    """Datetimes only under the time properties the schema declares, so every back end stores them natively."""
    if value is None or isinstance(value, datetime) == (name in times):
        return
    if isinstance(value, datetime):
        raise ValueError(f"{owner}.{name} holds a datetime, but {owner}'s declared time properties are {times}")
    raise ValueError(f"{owner}.{name} is a time property and must hold a datetime, got {type(value).__name__}")


def _check_counters(owner: str, add: dict[str, int | float], allowed: tuple[str, ...]) -> None:
    """Counters become Cypher text in generated statements, so only declared ones are accepted."""
    unknown = set(add) - set(allowed)
    if unknown:
        raise ValueError(f"{owner} has no counters {sorted(unknown)} (declared: {allowed})")


@dataclass(frozen=True)
class Node:
    """A node read back from a store."""

    label: str
    key: str
    props: dict[str, Any]

    @property
    def ref(self) -> NodeRef:
        return NodeRef(self.label, self.key)


@dataclass(frozen=True)
class Rel:
    """A relationship read back from a store."""

    type: str
    start: NodeRef
    end: NodeRef
    props: dict[str, Any]


def check_hop_direction(direction: str) -> None:
    """``expand`` follows relationships one way: ``out`` or ``in``."""
    if direction not in ("out", "in"):
        raise ValueError(f"direction must be 'out' or 'in', got {direction!r}")


@dataclass(frozen=True)
class Hop:
    """One relationship followed from a node, with the node at its far end."""

    rel: Rel
    node: Node

    @property
    def near(self) -> NodeRef:
        """The node the hop was followed from."""
        return self.rel.start if self.rel.end == self.node.ref else self.rel.end


@dataclass
class Subgraph:
    """Nodes and relationships around an entity."""

    nodes: dict[NodeRef, Node] = field(default_factory=dict)
    rels: list[Rel] = field(default_factory=list)
    truncated: bool = False


@dataclass(frozen=True)
class TimeWindow:
    """A half-open time window ``[since, until)``; either end may be open."""

    since: datetime | None = None
    until: datetime | None = None

    def contains(self, at: datetime) -> bool:
        return (self.since is None or at >= self.since) and (self.until is None or at < self.until)

    def overlaps(self, first: datetime | None, last: datetime | None) -> bool:
        """Whether an interval ``[first, last]`` (either end unknown) overlaps the window."""
        lo = first or last
        hi = last or first
        if lo is None or hi is None:
            return True
        return (self.until is None or lo < self.until) and (self.since is None or hi >= self.since)


def slice_count(window: TimeWindow, slice_seconds: int) -> int:
    """How many slices of ``slice_seconds`` cover a bounded window (the last one may be partial)."""
    if window.since is None or window.until is None:
        raise ValueError("slicing needs a bounded window")
    if slice_seconds <= 0:
        raise ValueError(f"slice_seconds must be positive, got {slice_seconds}")
    span = window.until - window.since
    step = timedelta(seconds=slice_seconds)
    return max(1, -(-span // step))


def slice_index(at: datetime, since: datetime, slice_seconds: int) -> int:
    """The slice that ``at`` falls in, counted from ``since``; exact to the microsecond (no float rounding),
    so every back end puts a time on a slice boundary into the same slice."""
    return (at - since) // timedelta(seconds=slice_seconds)


@dataclass(frozen=True)
class LogSlices:
    """One node's log lines per slice of a window, summed over its templates (``EMITTED`` counts).

    ``new_*`` count only lines of templates first seen inside the window (templates are mined globally, so
    "new" means new anywhere)."""

    total: tuple[float, ...]
    errors: tuple[float, ...]
    new_total: tuple[float, ...]
    new_errors: tuple[float, ...]


#: One node's log lines per template id: ``(lines before the split, lines from it)`` (``GraphStore.template_mix``).
TemplateMix = dict[str, tuple[float, float]]


@dataclass(frozen=True)
class TrafficSlices:
    """One service's calls per slice of a window, summed from the ``CALLED`` buckets (one per caller, callee and
    minute) whose bucket lies in the window. Callers and callees count whoever they are; self-calls are never
    stored (the mapping skips them).

    ``duration_in_ms`` is summed in whole microseconds (each bucket's ``duration_ms_sum`` truncated to the
    microsecond, see :func:`duration_us`): integer sums are exact in any order, so every back end, whatever
    order it adds in, gives the same value to the bit."""

    #: Calls into the service (``calls`` of the CALLED buckets ending at it).
    calls_in: tuple[float, ...]
    #: Their summed duration (``duration_ms_sum``), in milliseconds.
    duration_in_ms: tuple[float, ...]
    #: Errors among them (``errors``).
    errors_in: tuple[float, ...]
    #: Calls out of the service (``calls`` of the CALLED buckets starting at it).
    calls_out: tuple[float, ...]


def duration_us(duration_ms: float | int | None) -> int:
    """A bucket's ``duration_ms_sum`` in whole microseconds, truncated toward zero: the Neo4j store's
    ``toInteger(duration_ms_sum * 1000)`` computes exactly this (the same IEEE product, the same truncation)."""
    return int((duration_ms or 0) * 1000)


#: The most hops ``GraphStore.reach`` follows (the Neo4j back end has one statement per bound).
MAX_REACH_HOPS = 12


def check_reach(rel_type: str, hops: int) -> None:
    """``reach`` follows one relationship type that joins a label to itself, with the same window rule both ways."""
    spec = rel_spec(rel_type)
    if not 0 <= hops <= MAX_REACH_HOPS:
        raise ValueError(f"hops must be within 0..{MAX_REACH_HOPS}, got {hops}")
    if window_basis(rel_type, "out") != window_basis(rel_type, "in"):
        raise ValueError(f"{rel_type} is windowed differently in each direction; reach cannot follow it both ways")
    if not set(spec.starts) & set(spec.ends):
        raise ValueError(f"{rel_type} never joins a label to itself")


if TYPE_CHECKING:
    from schema.incident import IncidentReads


@runtime_checkable
class GraphStore(Protocol):
    """What the pipeline, detectors and the API need from a graph back end."""

    def apply_schema(self) -> None:
        """Create constraints and indexes for every natural key (idempotent)."""

    def write(self, batch: GraphBatch) -> None:
        """Apply a batch atomically and idempotently (MERGE on natural keys)."""

    def cursor(self, source: str) -> int | None:
        """The highest offset applied for a source partition, or ``None``."""

    def get_node(self, ref: NodeRef) -> Node | None:
        """One node by label and key."""

    def find_nodes(
        self,
        label: str,
        window: TimeWindow | None = None,
        equals: dict[str, Any] | None = None,
        limit: int = 1000,
    ) -> list[Node]:
        """Nodes of a label whose time falls in the window and whose properties equal ``equals``."""

    def rels_of(self, ref: NodeRef, rel_type: str | None = None, direction: str = "both") -> list[Rel]:
        """Relationships touching a node (``out``, ``in`` or ``both``), optionally of one type."""

    def expand(
        self,
        refs: Sequence[NodeRef],
        rel_type: str,
        direction: str,
        window: TimeWindow | None = None,
        limit: int = 200_000,
    ) -> list[Hop]:
        """Relationships of one type leaving (``out``) or entering (``in``) any of ``refs``, each with its far
        node, in one read. With a window, only those whose time falls in it (see ``schema.graph.window_basis``).
        At most ``limit`` hops are returned; readers that must bound their work pass a limit."""

    def reach(self, ref: NodeRef, rel_type: str, hops: int, window: TimeWindow | None = None,
              limit: int = 1000) -> list[NodeRef] | None:
        """The nodes within ``hops`` relationships of ``rel_type`` from ``ref``, followed in either direction,
        every relationship on the way inside the window (``schema.graph.window_basis``); ``ref`` included when
        it exists, in key order. One read, however many hops. ``None`` when more than ``limit`` nodes are within
        reach (the caller then bounds a breadth-first walk itself). ``hops`` is at most :data:`MAX_REACH_HOPS`."""

    def log_slices(self, refs: Sequence[NodeRef], window: TimeWindow, slice_seconds: int) -> dict[NodeRef, LogSlices]:
        """Per-slice sums of the ``EMITTED`` counts of Service/Instance ``refs`` whose bucket lies in the bounded
        window, aggregated where the data is (one read, one row per node whatever the number of templates and
        buckets). Slices follow :func:`slice_index` and :func:`slice_count`; nodes without lines are absent."""

    def template_mix(self, refs: Sequence[NodeRef], since: datetime, split: datetime,
                     until: datetime, skip: Sequence[TimeWindow] = ()) -> dict[NodeRef, TemplateMix]:
        """Per Service/Instance of ``refs``, the ``EMITTED`` lines of each template before ``split`` (buckets in
        ``[since, split)``) and from it (``[split, until)``), summed where the data is (one read). Buckets before
        ``split`` that start inside a ``skip`` window are left out (earlier incidents: the past a node is compared
        with should be its normal operation). Nodes without lines counted are absent."""

    def template_errors(self, templates: Sequence[str]) -> dict[str, float]:
        """Per ``LogTemplate`` id of ``templates``, the share of its lines that were error lines (its ``errors``
        counter over its ``count``), in one read; ids without lines are absent."""

    def neighbourhood(
        self,
        ref: NodeRef,
        hops: int,
        window: TimeWindow | None = None,
        rel_types: tuple[str, ...] | None = None,
        limit: int = 5000,
    ) -> Subgraph:
        """Nodes and relationships within ``hops`` of a node, relationships limited to the window."""

    def incident(self, service: NodeRef, window: TimeWindow, hops: int, limit: int,
                 slice_seconds: int, traffic: bool = False) -> IncidentReads | None:
        """What root-cause extraction reads around a symptom ``service``: the services within ``hops`` CALLS either
        way (as :meth:`reach`), their calls, instances and hosts, the changes, anomalies and alerts on all of them,
        and the log slices of services and instances, all in the bounded window (see
        :class:`schema.incident.IncidentReads`). Equal to :func:`schema.incident.read_incident`, which composes it
        from the reads above; a back end may answer in one read. ``None`` when more than ``limit`` services are in
        reach or ``hops`` exceeds :data:`MAX_REACH_HOPS` (the caller then bounds a walk itself). ``traffic``: also
        the per-slice span traffic of the services (every ``CALLED`` bucket of the window: the costliest part);
        without it ``IncidentReads.traffic`` is empty."""

    def delete_older_than(self, cutoff: datetime, batch_size: int = 10_000) -> int:
        """Retention: delete event nodes and relationships last seen before ``cutoff``; returns the count."""

    def count(self, label: str) -> int:
        """Number of nodes with a label."""

    def count_rels(self, rel_type: str) -> int:
        """Number of relationships of a type."""

    def clear(self) -> None:
        """Delete everything (tests and demos only)."""

    def close(self) -> None:
        """Release connections."""
