"""Fan-out of findings to gRPC ``Watch`` subscribers.

The pipeline publishes from its own thread; each subscriber owns a bounded asyncio queue on the server's
event loop. A subscriber that falls behind loses its oldest findings (counted), never the pipeline's time.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from prometheus_client import Counter

from schema.findings import Finding

_DROPPED = Counter("sleuth_watch_dropped_total", "Findings dropped for slow Watch subscribers")


@dataclass(frozen=True)
class WatchFilter:
    """Which findings a subscriber wants."""

    kinds: frozenset[str] = frozenset()
    entity: tuple[str, str] | None = None
    min_score: float = 0.0

    def accepts(self, finding: Finding) -> bool:
        if self.kinds and finding.kind not in self.kinds:
            return False
        if finding.score < self.min_score:
            return False
        if self.entity is not None:
            return any((e.kind, e.name) == self.entity for e in finding.entities)
        return True


@dataclass(eq=False)
class Subscription:
    """One subscriber's queue and filter."""

    filter: WatchFilter
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Finding] = field(default_factory=lambda: asyncio.Queue(maxsize=1000))

    def offer(self, finding: Finding) -> None:
        """Runs on the subscriber's loop."""
        if self.queue.full():
            self.queue.get_nowait()
            _DROPPED.inc()
        self.queue.put_nowait(finding)


class FindingHub:
    """A :class:`ingest.pipeline.FindingSink` that streams to in-process subscribers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscriptions: set[Subscription] = set()

    def subscribe(self, watch: WatchFilter) -> Subscription:
        """Register a subscriber on the running loop."""
        subscription = Subscription(watch, asyncio.get_running_loop())
        with self._lock:
            self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscriptions.discard(subscription)

    def publish(self, findings: Sequence[Finding]) -> None:
        """Thread-safe: hand each finding to every interested subscriber's loop."""
        with self._lock:
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            for finding in findings:
                if subscription.filter.accepts(finding):
                    try:
                        subscription.loop.call_soon_threadsafe(subscription.offer, finding)
                    except RuntimeError:  # the loop closed under us: the subscriber is gone
                        self.unsubscribe(subscription)
                        break


class FanOut:
    """Publish to several sinks in order (e.g. Kafka first, for durability, then the hub)."""

    def __init__(self, *sinks: object) -> None:
        self._sinks = [s for s in sinks if s is not None]

    def publish(self, findings: Sequence[Finding]) -> None:
        for sink in self._sinks:
            sink.publish(findings)  # type: ignore[attr-defined]
