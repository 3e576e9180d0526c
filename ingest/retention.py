"""Retention: a background job that deletes graph data older than the configured horizon.

The store deletes in bounded transactions (``batch_size`` rows each), so a large backlog never turns into
one huge transaction that blocks writers or exhausts the server's memory.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from ingest.errors import IngestError
from schema.store import GraphStore

log = logging.getLogger(__name__)


class RetentionJob:
    """Runs ``store.delete_older_than(now - horizon)`` every ``interval_s`` until stopped."""

    def __init__(self, store: GraphStore, horizon: timedelta, interval_s: float, batch_size: int = 10_000,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._store = store
        self._horizon = horizon
        self._interval_s = interval_s
        self._batch_size = batch_size
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> int:
        """One pass; returns how many nodes and relationships were deleted."""
        cutoff = self._clock() - self._horizon
        deleted = self._store.delete_older_than(cutoff, self._batch_size)
        if deleted:
            log.info("retention: deleted %d nodes/relationships older than %s", deleted, cutoff.isoformat())
        return deleted

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.run_once()
            except IngestError as exc:  # the store may be down: try again next interval
                log.warning("retention pass failed: %s", exc)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
