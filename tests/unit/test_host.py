"""The server process does not outlive its pipeline: broken infrastructure stops serving, so a supervisor
restarts the process instead of leaving gRPC up while nothing is ingested."""

from __future__ import annotations

import asyncio

from ingest.errors import StoreError
from ingest.simulate.starter import starter_events
from ingest.store.memory import MemoryGraphStore
from schema.events import partition_key
from server.host import build_embedded_host, serve_grpc
from server.settings import Settings


class _BrokenStore(MemoryGraphStore):
    """A store that fails for good (not a data problem, not an outage that retrying fixes)."""

    def write(self, batch):  # type: ignore[no-untyped-def]
        raise StoreError("the database is read-only")


def test_serving_stops_when_the_pipeline_dies() -> None:
    settings = Settings()
    host = build_embedded_host(settings)
    host.pipeline.store = _BrokenStore()
    assert host.bus is not None
    for event in starter_events(seed=1)[:5]:
        host.bus.produce(settings.kafka.topics.for_event_type(event.type), event.model_dump_json().encode(),
                         partition_key(event).encode())
    host.start()

    async def serve() -> None:
        stop = asyncio.Event()  # nobody sets it: only the pipeline's failure can end serving
        await asyncio.wait_for(serve_grpc(host, settings, stop, port=0, webhook_port=0), timeout=30)

    try:
        asyncio.run(serve())
    finally:
        host.stop()
    assert host.pipeline_failed()
    assert isinstance(host.failure, StoreError)


def test_a_clean_stop_is_not_a_failure() -> None:
    host = build_embedded_host(Settings())
    host.start()
    host.stop()
    assert host.failure is None and not host.pipeline_failed()
