"""The Nezha TrainTicket converter, on a tiny fake dataset folder (the real one is converted by hand)."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.datasets.nezha import Options, convert, metric_name, parse_level, service_of
from ingest.decode import Rejection, decode_record

DAY = "2023-01-29"
GATEWAY = "ts-gateway-service-6f6cfc45b-h5m2n"
ORDER = "ts-order-service-5b67c48447-mv5hb"
T0 = 1674981742_000_000_000  # 2023-01-29T08:42:22Z
TRACE = "ffc8ca7e4c8f06c75142c880d5595d96"
GO_ZERO_TIME = "-6795364578871345152"


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _docker(text: str, when: str) -> str:
    return json.dumps({"log": text + "\n", "stream": "stdout", "time": when})


def _fake_dataset(root: Path) -> Path:
    """A day with two faults (one repeated exactly), two spans, three log rows and one metric file."""
    day = root / "rca_data" / DAY
    day.mkdir(parents=True)
    fault = {"inject_time": "2023-01-29 08:43:04", "inject_timestamp": "1674953044", "inject_pod": ORDER,
             "inject_type": "return"}
    other = {"inject_time": "2023-01-29 09:03:53", "inject_timestamp": "1674954273", "inject_pod": GATEWAY,
             "inject_type": "cpu_contention"}
    (day / f"{DAY}-fault_list.json").write_text(json.dumps({"09": [other], "08": [fault, dict(fault)]}))
    _write_csv(day / "trace" / "08_43_trace.csv",
               ["TraceID", "SpanID", "ParentID", "PodName", "OperationName", "StartTimeUnixNano",
                "EndTimeUnixNano", "Duration"],
               [[TRACE, "aaaa000000000001", "root", GATEWAY, "/*", T0, T0 + 318_316_530, 318316],
                [TRACE, "bbbb000000000002", "aaaa000000000001", ORDER, "/api/v1/orders", T0 + 1_000_000,
                 T0 + 101_500_000, 100500]])
    # The same child span again in an overlapping per-minute file: converted once.
    _write_csv(day / "trace" / "08_44_trace.csv",
               ["TraceID", "SpanID", "ParentID", "PodName", "OperationName", "StartTimeUnixNano",
                "EndTimeUnixNano", "Duration"],
               [[TRACE, "bbbb000000000002", "aaaa000000000001", ORDER, "/api/v1/orders", T0 + 1_000_000,
                 T0 + 101_500_000, 100500]])
    log_header = ["Timestamp", "TimeUnixNano", "Node", "PodName", "Container", "TraceID", "SpanID", "Log"]
    _write_csv(day / "log" / "08_43_log.csv", log_header, [
        ["2023-01-29T08:42:22.5Z", T0 + 500_000_000, "33.33.33.76", ORDER, "server", TRACE, "bbbb000000000002",
         _docker("16:42:22.500 ERROR o.s.OrderServiceImpl#88 TraceID: x [create][failed]",
                 "2023-01-29T08:42:22.5Z")],
        # Go's zero time in TimeUnixNano: the docker time is used instead.
        ["2023-01-29T08:42:23.000", GO_ZERO_TIME, "33.33.33.76", ORDER, "server", TRACE, "bbbb000000000002",
         _docker("16:42:23.004 WARN  o.s.OrderServiceImpl#90 slow", "2023-01-29T08:42:23.004000001Z")],
        ["2023-01-29T08:42:24Z", T0 + 2_000_000_000, "33.33.33.76", ORDER, "server", "", "", "not json"],
    ])
    metric_header = ["Time", "TimeStamp", "PodName", "CpuUsageRate(%)", "PodServerLatencyP90(s)"]
    _write_csv(day / "metric" / f"{ORDER}_metric.csv", metric_header, [
        ["2023-01-29 08:42:09.805279981 +0000 UTC m=+60.88", 1674981729, ORDER, 0.78, "NaN"],
    ])
    return root


def _events(out: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]


@pytest.fixture()
def converted(tmp_path: Path) -> tuple[dict[str, object], Path]:
    src = _fake_dataset(tmp_path / "nezha")
    out = tmp_path / "out"
    return convert(src, DAY, out, Options()), out


def test_spans_get_services_and_callers(converted: tuple[dict[str, object], Path]) -> None:
    _, out = converted
    spans = [e for e in _events(out) if e["type"] == "span"]
    assert spans == [
        {"v": 1, "id": "aaaa000000000001", "at": "2023-01-29T08:42:22Z", "type": "span", "trace_id": TRACE,
         "parent_id": None, "service": "ts-gateway-service", "instance": GATEWAY, "caller": None,
         "operation": "/*", "duration_ms": 318.31653, "error": False},
        {"v": 1, "id": "bbbb000000000002", "at": "2023-01-29T08:42:22.001000Z", "type": "span", "trace_id": TRACE,
         "parent_id": "aaaa000000000001", "service": "ts-order-service", "instance": ORDER,
         "caller": "ts-gateway-service", "operation": "/api/v1/orders", "duration_ms": 100.5, "error": False},
    ]


def test_logs_metrics_and_topology(converted: tuple[dict[str, object], Path]) -> None:
    counts, out = converted
    events = _events(out)
    logs = [e for e in events if e["type"] == "log"]
    assert [(e["at"], e["level"], e["message"], e["host"], e["trace_id"], e["service"]) for e in logs] == [
        ("2023-01-29T08:42:22.500000Z", "ERROR",
         "16:42:22.500 ERROR o.s.OrderServiceImpl#88 TraceID: x [create][failed]", "33.33.33.76", TRACE,
         "ts-order-service"),
        ("2023-01-29T08:42:23.004000Z", "WARN", "16:42:23.004 WARN  o.s.OrderServiceImpl#90 slow",
         "33.33.33.76", TRACE, "ts-order-service"),
    ]
    metrics = {e["metric"]: e for e in events if e["type"] == "metric"}
    assert set(metrics) == {"cpu_usage_rate_pct", "pod_server_latency_p90_s"}
    assert metrics["cpu_usage_rate_pct"]["value"] == 0.78
    assert metrics["pod_server_latency_p90_s"]["value"] is None  # NaN cell -> missing
    assert {(e["entity_kind"], e["entity"], e["service"], e["at"]) for e in metrics.values()} == {
        ("instance", ORDER, "ts-order-service", "2023-01-29T08:42:09Z")}
    topology = [(e["service"], e["instance"], e["host"], e["at"]) for e in events if e["type"] == "topology"]
    assert topology == [("ts-order-service", ORDER, "33.33.33.76", "2023-01-29T08:42:09Z"),
                        ("ts-gateway-service", GATEWAY, None, "2023-01-29T08:42:22Z")]
    times = [datetime.fromisoformat(str(e["at"])) for e in events]
    assert times == sorted(times)  # time order
    assert len({e["id"] for e in events}) == len(events)
    assert counts["events"] == {"log": 2, "metric": 2, "span": 2, "topology": 2}
    assert counts["skipped"]["malformed"] == {"log": 1}  # type: ignore[index]
    assert counts["skipped"]["duplicates"] == {"span": 1}  # type: ignore[index]
    assert counts["repaired"] == {"log_time": 1}


def test_cases_are_utc_and_deduplicated(converted: tuple[dict[str, object], Path]) -> None:
    counts, out = converted
    cases = [json.loads(line) for line in (out / "cases.jsonl").read_text().splitlines()]
    assert cases == [
        {"id": f"nezha-{DAY}-01", "at": "2023-01-29T08:43:04+00:00",
         "root_cause": {"kind": "instance", "name": ORDER}, "fault_type": "return", "service": "ts-order-service"},
        {"id": f"nezha-{DAY}-02", "at": "2023-01-29T09:03:53+00:00",
         "root_cause": {"kind": "instance", "name": GATEWAY}, "fault_type": "cpu_contention",
         "service": "ts-gateway-service"},
    ]
    assert counts["cases"] == 2
    assert datetime.fromisoformat(cases[0]["at"]).tzinfo is not None


def test_every_line_decodes(converted: tuple[dict[str, object], Path]) -> None:
    _, out = converted
    now = datetime(2026, 1, 1, tzinfo=UTC)
    for line in (out / "events.jsonl").read_bytes().splitlines():
        result = decode_record(line, now=now)
        assert not isinstance(result, Rejection), result


def test_window_and_max_events(tmp_path: Path) -> None:
    src = _fake_dataset(tmp_path / "nezha")
    # 0.3 min before 08:43:04 starts at 08:42:46, after all the telemetry; 1 min (08:42:04) takes it all.
    counts = convert(src, DAY, tmp_path / "w", Options(minutes_before=0.3))
    assert counts["total"] == 0 and counts["skipped"]["outside_window"]  # type: ignore[index]
    counts = convert(src, DAY, tmp_path / "w", Options(minutes_before=1))
    assert counts["events"] == {"log": 2, "metric": 2, "span": 2, "topology": 2}
    counts = convert(src, DAY, tmp_path / "m", Options(max_events=3))
    assert counts["total"] == 3
    assert [e["type"] for e in _events(tmp_path / "m")] == ["topology", "metric", "metric"]


@pytest.mark.parametrize(("pod", "service"), [
    ("ts-order-service-5d8f9b7c4-abcde", "ts-order-service"),
    ("ts-verification-code-service-7b6dc75c45-2z9p2", "ts-verification-code-service"),
    ("ts-travel2-service-5c66d57d58-6mp2b", "ts-travel2-service"),
    ("mysql-0", "mysql"),
    ("redis", "redis"),
])
def test_service_of(pod: str, service: str) -> None:
    assert service_of(pod) == service


def test_names_and_levels() -> None:
    assert metric_name("PodClientLatencyP99(s)") == "pod_client_latency_p99_s"
    assert metric_name("CpuUsage(m)") == "cpu_usage_m"
    assert metric_name("NodeNetworkReceiveBytes") == "node_network_receive_bytes"
    assert parse_level("16:42:14.471 WARN  v.s.i.VerifyCodeServiceImpl#114 TraceID: c3") == "WARN"
    assert parse_level("no level here") is None


REAL_ARCHIVE = Path("/work/shared/data/nezha-trainticket-2023-01-29.tar.xz")


@pytest.mark.skipif(not REAL_ARCHIVE.is_file(), reason="the Nezha archive is not in /work/shared/data")
def test_real_fault_list(tmp_path: Path) -> None:
    """The real 2023-01-29 fault list only (streamed out of the archive; ~1 s of CPU, no full unpack)."""
    import tarfile

    from bench.datasets.nezha import load_cases

    day = tmp_path / "rca_data" / DAY
    day.mkdir(parents=True)
    with tarfile.open(REAL_ARCHIVE, "r|xz") as archive:
        for member in archive:
            if member.name.endswith(f"{DAY}-fault_list.json"):
                (day / f"{DAY}-fault_list.json").write_bytes(archive.extractfile(member).read())  # type: ignore[union-attr]
                break
    cases = load_cases(day, DAY)
    assert len(cases) == 28
    assert [c["fault_type"] for c in cases].count("cpu_contention") == 4
    # The two faults that share an inject_timestamp are nine minutes apart by inject_time: both are kept.
    basic = [c["at"] for c in cases if c["service"] == "ts-basic-service"]
    assert basic[:2] == ["2023-01-29T09:03:53+00:00", "2023-01-29T09:12:56+00:00"]
