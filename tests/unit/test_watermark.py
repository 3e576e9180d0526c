"""The low watermark over partitions (pure: a fake wall clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ingest.watermark import LowWatermark

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_nothing_seen_has_no_time() -> None:
    assert LowWatermark().current() is None


def test_one_partition_is_its_newest_event_time() -> None:
    clock = LowWatermark(wall_clock=FakeClock())
    for minutes in (0, 5, 3):  # out of order inside the partition: the newest counts
        clock.observe(("ops", 0), T0 + timedelta(minutes=minutes))
    assert clock.current() == T0 + timedelta(minutes=5) == clock.newest


def test_the_slowest_active_partition_holds_time_back() -> None:
    clock = LowWatermark(wall_clock=FakeClock())
    clock.observe(("ops", 0), T0 + timedelta(minutes=8))
    clock.observe(("ops", 1), T0 + timedelta(minutes=2))
    assert clock.current() == T0 + timedelta(minutes=2)
    assert clock.newest == T0 + timedelta(minutes=8)
    clock.observe(("ops", 1), T0 + timedelta(minutes=6))
    assert clock.current() == T0 + timedelta(minutes=6)


def test_an_idle_partition_stops_holding_time_back() -> None:
    wall = FakeClock()
    clock = LowWatermark(idle_after_s=30, wall_clock=wall)
    clock.observe(("ops", 1), T0)
    wall.now += 31
    clock.observe(("ops", 0), T0 + timedelta(minutes=4))
    assert clock.current() == T0 + timedelta(minutes=4)
    clock.observe(("ops", 1), T0 + timedelta(minutes=1))  # it speaks again: it counts again
    assert clock.current() == T0 + timedelta(minutes=1)


def test_when_every_partition_is_idle_time_is_the_newest_seen() -> None:
    wall = FakeClock()
    clock = LowWatermark(idle_after_s=30, wall_clock=wall)
    clock.observe(("ops", 0), T0 + timedelta(minutes=9))
    clock.observe(("ops", 1), T0)
    wall.now += 60
    assert clock.current() == T0 + timedelta(minutes=9)


def test_lag_behind_the_newest_event_is_bounded() -> None:
    clock = LowWatermark(max_lag_s=120, wall_clock=FakeClock())
    clock.observe(("ops", 0), T0 + timedelta(minutes=30))
    clock.observe(("ops", 1), T0)
    assert clock.current() == T0 + timedelta(minutes=28)


def test_partitions_tracked_are_bounded() -> None:
    clock = LowWatermark(max_partitions=3, wall_clock=FakeClock())
    for p in range(10):
        clock.observe(("ops", p), T0 + timedelta(minutes=p))
    assert clock.current() == T0 + timedelta(minutes=7)  # partitions 7, 8 and 9 are the ones kept


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError):
        LowWatermark(idle_after_s=0)
    with pytest.raises(ValueError):
        LowWatermark(max_lag_s=-1)


def test_records_that_do_not_hold_only_move_the_newest_time() -> None:
    clock = LowWatermark(wall_clock=FakeClock())
    clock.observe(("alerts", 0), T0 - timedelta(hours=3), holds=False)  # a re-notification: an old start
    assert clock.current() == T0 - timedelta(hours=3)  # nothing holds time: it is the newest seen
    clock.observe(("logs", 0), T0)
    clock.observe(("alerts", 0), T0 - timedelta(hours=2), holds=False)
    assert clock.current() == T0
    clock.observe(("alerts", 0), T0 + timedelta(minutes=1), holds=False)
    assert clock.current() == T0 and clock.newest == T0 + timedelta(minutes=1)
