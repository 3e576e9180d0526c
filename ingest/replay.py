"""Replay events into a graph store through the real mapping (simulations, evaluations, training data)."""

from __future__ import annotations

from collections.abc import Iterable

from ingest.logs.templates import LogTemplateMiner
from ingest.mapping import EventMapper
from schema.events import EventBase
from schema.store import GraphStore


def replay(events: Iterable[EventBase], store: GraphStore, batch_size: int = 20_000,
           mapper: EventMapper | None = None) -> str:
    """Map time-ordered ``events`` into ``store`` in batches (no Kafka, no detectors); returns the mapper name."""
    mapper = mapper or EventMapper(LogTemplateMiner())
    chunk: list[EventBase] = []
    for event in events:
        chunk.append(event)
        if len(chunk) >= batch_size:
            store.write(mapper.map(chunk).build())
            chunk = []
    if chunk:
        store.write(mapper.map(chunk).build())
    return "ingest.mapping"
