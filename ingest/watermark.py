"""Event time across partitions: the low watermark a streaming detector may act on.

Records of one partition arrive in order, but partitions advance independently: after a restart, a
rebalance or a burst, one partition can be minutes of event time ahead of another. A detector that acts
once event time passes a deadline (an incident analysed ``settle_s`` after its newest alert) must read the
time of the slowest partition, or it acts before that partition's records of the same moment arrive (an
alert of the same storm then opens an incident of its own).

Two bounds keep the slowest partition from holding every deadline back:

* a partition that has delivered nothing for ``idle_after_s`` of wall-clock time is left out, as stream
  processors do with idle sources (a quiet partition says nothing about the others' progress);
* the low watermark is never more than ``max_lag_s`` behind the newest event time seen, which bounds the
  delay a lagging partition adds to every analysis.

With a single partition the low watermark is simply the newest event time seen.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass
class _Partition:
    latest: datetime
    seen_at: float  # wall-clock seconds of the last record


class LowWatermark:
    """The event time every active partition has reached (see the module docstring)."""

    def __init__(self, idle_after_s: float = 30.0, max_lag_s: float = 600.0, max_partitions: int = 10_000,
                 wall_clock: Callable[[], float] = time.monotonic) -> None:
        if idle_after_s <= 0 or max_lag_s < 0:
            raise ValueError("idle_after_s must be positive and max_lag_s non-negative")
        self.idle_after_s = idle_after_s
        self.max_lag = timedelta(seconds=max_lag_s)
        self.max_partitions = max_partitions
        self._wall = wall_clock
        self._partitions: OrderedDict[Hashable, _Partition] = OrderedDict()
        self._newest: datetime | None = None

    def observe(self, partition: Hashable, at: datetime, holds: bool = True) -> None:
        """A record of ``partition`` with event time ``at``. ``holds=False``: the record moves the newest time
        seen but its partition does not hold time back (its event time may be old by nature, such as an alert's
        start carried by every re-notification)."""
        if self._newest is None or at > self._newest:
            self._newest = at
        if not holds:
            return
        now = self._wall()
        state = self._partitions.get(partition)
        if state is None:
            self._partitions[partition] = _Partition(at, now)
            while len(self._partitions) > self.max_partitions:  # bounded: the least recently seen go first
                self._partitions.popitem(last=False)
        else:
            state.latest = max(state.latest, at)
            state.seen_at = now
            self._partitions.move_to_end(partition)

    @property
    def newest(self) -> datetime | None:
        """The newest event time seen on any partition (the high watermark)."""
        return self._newest

    def current(self) -> datetime | None:
        """The low watermark: the slowest active partition's time, at most ``max_lag_s`` behind the newest
        (``None`` before any record)."""
        if self._newest is None:
            return None
        now = self._wall()
        active = [p.latest for p in self._partitions.values() if now - p.seen_at <= self.idle_after_s]
        slowest = min(active) if active else self._newest  # all idle: everything sent has been seen
        return max(slowest, self._newest - self.max_lag)
