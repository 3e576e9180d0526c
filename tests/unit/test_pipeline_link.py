"""The pipe between ``sleuth serve``'s pipeline process and the gRPC process, both ends in one test process: a
request sent ahead of the write and abandoned (the write failed) is superseded, a retried batch gets the
verdicts the parent remembers, a detection failure and a vanished parent are errors of their own."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from multiprocessing import Pipe
from multiprocessing.connection import Connection

import pytest

from gnn.fraud.matcher import MatcherConfig
from gnn.fraud.rings import DetectorConfig, FraudDetector
from ingest.detectors import FraudRingDetector
from ingest.pipeline import Detection, Observed, SourceRecord
from schema.events import IdentityEvent, TransactionEvent
from server.pipeline_process import (
    Link,
    ParentUnreachable,
    PipelineProcess,
    RemoteDetectionFailed,
    RemoteFraudDetector,
)
from server.settings import Settings

T0 = datetime(2026, 3, 2, tzinfo=UTC)


class _Hub:
    def __init__(self) -> None:
        self.findings: list[object] = []

    def publish(self, findings: Sequence[object]) -> None:
        self.findings.extend(findings)


class _Failing(FraudRingDetector):
    def detect_events(self, events: Sequence[tuple[TransactionEvent | IdentityEvent, bool]]) -> Detection:
        raise ValueError("broken on purpose")


def _observed(txs: list[TransactionEvent], offset: int) -> list[Observed]:
    return [Observed(tx, SourceRecord("payments", 0, offset + i, b""), False) for i, tx in enumerate(txs)]


def _structuring(first: int) -> list[TransactionEvent]:
    """Two cash deposits just below the reporting threshold: the depositor and the receiver become risky."""
    return [TransactionEvent(id=f"t{first + i}", at=T0 + timedelta(minutes=60 * i), src="dep", dst="acct",
                             amount=9_600.0 + 100 * i, channel="cash") for i in range(2)]


def _linked(fraud: FraudRingDetector) -> Iterator[tuple[RemoteFraudDetector, _Hub, Connection]]:
    """The child's remote detector joined by a pipe to a parent serving with ``fraud`` (in a thread)."""
    parent_end, child_end = Pipe()
    hub = _Hub()
    parent = PipelineProcess(Settings(), fraud, hub)
    server = threading.Thread(target=parent._serve, args=(parent_end,), daemon=True)  # noqa: SLF001
    server.start()
    yield RemoteFraudDetector(Link(child_end)), hub, child_end
    child_end.close()
    server.join(5)


@pytest.fixture
def fraud() -> FraudRingDetector:
    return FraudRingDetector(FraudDetector(DetectorConfig(matcher=MatcherConfig(warmup_s=0.0))))


def _risky(detection: Detection) -> set[str]:
    return {n.key for n in detection.annotations.nodes if n.label == "Account"}


def test_an_abandoned_request_is_superseded_and_the_retry_gets_the_remembered_verdicts(fraud) -> None:
    for remote, _, child_end in _linked(fraud):
        batch = _observed(_structuring(0), 0)
        remote.begin(batch)  # sent ahead of the write ...
        # ... which failed: the runner retries the batch, and the pipeline begins it again.
        retried = _observed(_structuring(0), 0)
        remote.begin(retried)
        detection = remote.detect(retried, store=None)  # type: ignore[arg-type]
        assert _risky(detection) == {"dep", "acct"}  # written again: the first write may have failed
        assert len(fraud._verdicts) == 2  # noqa: SLF001 - scored once, remembered for the retry
        # A detect without begin (a store rejection isolates records one by one) asks and waits.
        later = _observed([TransactionEvent(id="t9", at=T0 + timedelta(hours=3), src="acct", dst="x",
                                            amount=20.0)], 2)
        assert isinstance(remote.detect(later, store=None), Detection)  # type: ignore[arg-type]
        assert len(fraud._verdicts) == 3  # noqa: SLF001
        assert not child_end.poll(0.2), "an answer was left unread: the next batch would get it"


def test_findings_are_forwarded_and_batches_without_payments_ask_nothing(fraud) -> None:
    from ingest.pipeline import Observed as Item
    from schema.events import MetricEvent
    from schema.findings import Finding
    from server.pipeline_process import ForwardedFindings

    for remote, hub, _ in _linked(fraud):
        metric = MetricEvent(id="m1", at=T0, entity="svc", metric="cpu", value=1.0)
        remote.begin([Item(metric, SourceRecord("metrics", 0, 0, b""), False)])
        assert remote.detect([Item(metric, SourceRecord("metrics", 0, 0, b""), False)],
                             store=None) == Detection()  # type: ignore[arg-type]
        finding = Finding(id="f1", kind="anomaly", at=T0, score=0.5, title="t", detector="test")
        ForwardedFindings(remote._link).publish([finding])  # noqa: SLF001
        remote.detect(_observed(_structuring(0), 0), store=None)  # type: ignore[arg-type]  # a round trip after it
        assert [f.id for f in hub.findings] == ["f1"]  # type: ignore[attr-defined]


def test_a_detection_failure_and_a_vanished_parent_are_errors(fraud) -> None:
    for remote, _, _ in _linked(_Failing(fraud._detector)):  # noqa: SLF001
        with pytest.raises(RemoteDetectionFailed, match="broken on purpose"):
            remote.detect(_observed(_structuring(0), 0), store=None)  # type: ignore[arg-type]
    parent_end, child_end = Pipe()
    parent_end.close()  # the gRPC process is gone
    with pytest.raises(ParentUnreachable):
        RemoteFraudDetector(Link(child_end)).detect(_observed(_structuring(0), 0), store=None)  # type: ignore[arg-type]
