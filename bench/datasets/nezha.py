"""Convert one day of the Nezha TrainTicket dataset into sleuthgraph events and RCA cases.

Usage::

    python bench/datasets/nezha.py SRC --day 2023-01-29 --out DIR [--max-events N]
        [--minutes-before M] [--minutes-after M] [--include-normal] [--skip-frontend]

``SRC`` is the unpacked root (the folder holding ``rca_data/``). Writes ``DIR/events.jsonl`` (one validated
event per line, sorted by time) and ``DIR/cases.jsonl`` (one injected fault per line), then prints one JSON
line of counts.

What becomes what
-----------------
* ``trace/*.csv`` -> :class:`SpanEvent`: id = SpanID, service derived from PodName, caller = the service of
  the parent span (resolved within the trace over *all* trace files of the day, because a parent can sit in
  the neighbouring per-minute file). ``Duration`` is in microseconds (it equals (End-Start) ns / 1000,
  truncated), so ``duration_ms`` is computed from the nanosecond start/end instead. The traces carry no
  status column, so ``error`` is always False.
* ``log/*.csv`` -> :class:`LogEvent`: message = the ``log`` field of the docker JSON line, stripped; level =
  the first log-level word in the Java text; host = Node. Logs have no id, so the id is a hash of the row.
* ``metric/*.csv`` -> :class:`MetricEvent` per pod, column and minute (``entity_kind="instance"``). Column
  names become snake_case with their unit kept as a suffix (``CpuUsageRate(%)`` -> ``cpu_usage_rate_pct``,
  ``PodServerLatencyP90(s)`` -> ``pod_server_latency_p90_s``) because the units differ between columns.
  ``NaN`` cells become ``None`` (the contract scores them as missing). ``front_service.csv`` has no pod: its
  rows become service-level metrics of the service named in its ``ServiceName`` column (``Frontend``);
  ``--skip-frontend`` drops them.
* One :class:`TopologyEvent` per (service, pod, node), at the pod's first kept observation, so instances
  map to hosts. Nodes come from the logs' Node column (traces and metrics have none); a pod never seen in
  a log (the gateway, and the 18 pods that only have metric files) gets one topology event with no host.
* No alerts: the dataset has none and inventing them from the ground truth would leak the answer.

The clock
---------
All telemetry is on UTC: log ``Timestamp`` (``...Z``) equals ``TimeUnixNano``, the metric ``Time`` column
reads ``+0000 UTC`` and equals ``TimeStamp``. The Java log text itself is in UTC+8 (a line logged at
08:42:22Z reads ``16:42:22.382 INFO ...``). ``inject_time`` is on the telemetry clock, i.e. UTC, which
this converter checked three ways on 2023-01-29:

1. the per-minute files are named after ``inject_time`` (``08_43_*.csv`` for the 08:43:04 fault) and
   hold 08:42:09-08:43:08 UTC, i.e. each ``HH_MM`` file covers the minute ending at HH:MM UTC;
2. for the four ``cpu_contention`` faults the root pod's ``CpuUsageRate(%)`` jumps from about 1 % to
   80-100 % in the first or second 60 s sample after ``inject_time`` read as UTC (13:31:54 -> 13:33:09,
   14:23:31 -> 14:24:11, 14:49:57 -> 14:51:10, 15:42:00 -> 15:43:10) and drops back 3-5 min later;
3. the metrics start at 08:41 UTC, so ``inject_time`` read as UTC+8 (00:43 UTC) would lie before all data.

``inject_timestamp`` is unreliable: for the 24 faults before noon it is ``inject_time`` minus 8 h (the time
read as China Standard Time), sometimes also off by 20-90 s; for the four CPU faults it equals ``inject_time``
read as UTC. It is ignored.

The repeated fault time
-----------------------
The fault time that appears twice is ``inject_timestamp`` 1674954273, shared by the 09:03:53 and 09:12:56
faults on ts-basic-service (by ``inject_time`` they are two faults nine minutes apart, each with its own
per-minute files), so both are kept. Cases are de-duplicated on (``inject_time``, ``inject_pod``) only: an
exact repeat is dropped, the same time on two different pods stays as two cases.

Data quirks handled
-------------------
* Per-minute files overlap (``08_52_trace.csv`` covers 08:50-08:53, ``08_53`` 08:52-08:53), so the same
  span and log rows appear twice: spans are de-duplicated by (TraceID, SpanID), logs by row hash, metrics
  by (pod, timestamp) (which also drops ``construct_data`` metric files that repeat the ``rca_data`` ones).
* 45 log rows carry Go's zero time in ``TimeUnixNano`` (-6795364578871345152) and a naive millisecond
  ``Timestamp``; their time is taken from the docker JSON ``time`` field instead (counted as repaired).
* ``construct_data`` (08:48:16-08:51:04) overlaps ``rca_data/08_52_*`` (08:50:08-08:53:09) by about a minute
  (99 spans, 36 log rows in both); with ``--include-normal`` the repeats are dropped like any other. It
  lies between the 08:43 and 08:52 faults, so "fault-free" assumes the 08:43 fault was over by 08:48.
* A row whose field count is wrong (one log row on 2023-01-29 has two lines interleaved) is skipped and
  counted as malformed, as is a row with an unparsable number or a ``Log`` cell that is not docker JSON.

Options: ``--minutes-before/--minutes-after`` keep only telemetry within [fault - before, fault + after] of
some fault (a bound left out counts as 0; topology follows the kept telemetry); ``--max-events N`` writes
the first N events in time order (all input is still read and sorted, but only N events are validated);
``--include-normal`` adds ``construct_data/<day>``; cases are always all written.

Memory stays bounded: rows are streamed with the csv module, turned into small JSON records and sorted
with an external merge sort (sorted chunks spilled to a temporary folder, then ``heapq.merge``). Pydantic
validation runs as the sorted stream is written, so ``--max-events N`` validates only the first N events.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import heapq
import json
import math
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from schema.events import EventBase, LogEvent, MetricEvent, SpanEvent, TopologyEvent

TRACE_COLUMNS = ("TraceID", "SpanID", "ParentID", "PodName", "OperationName", "StartTimeUnixNano",
                 "EndTimeUnixNano", "Duration")
LOG_COLUMNS = ("Timestamp", "TimeUnixNano", "Node", "PodName", "Container", "TraceID", "SpanID", "Log")
#: Metric columns that identify the row rather than measure something.
METRIC_ID_COLUMNS = frozenset({"Time", "TimeStamp", "PodName", "ServiceName"})
#: The root span's ParentID in the traces.
ROOT_PARENT = "root"
#: k8s Deployment pods are ``<deployment>-<replica-set hash>-<pod hash>``; StatefulSet pods ``<name>-<n>``.
DEPLOYMENT_POD = re.compile(r"^(?P<service>.+?)-[a-z0-9]{6,10}-[a-z0-9]{5}$")
STATEFUL_POD = re.compile(r"^(?P<service>.+?)-\d+$")
#: Log levels as Java (logback/log4j) writes them; searched near the start of the text only.
LEVEL = re.compile(r"\b(TRACE|DEBUG|INFO|WARN|WARNING|ERROR|FATAL|SEVERE)\b")
LEVEL_SEARCH_CHARS = 64
#: Sort rank at equal timestamps: topology first so an instance is mapped before its telemetry arrives.
RANK = {"topology": 0, "metric": 1, "span": 2, "log": 3}
MODELS: dict[str, type[EventBase]] = {"topology": TopologyEvent, "metric": MetricEvent, "span": SpanEvent,
                                      "log": LogEvent}
#: RFC 3339 with an optional fraction of up to 9 digits (datetime.fromisoformat takes at most 6 in 3.11).
RFC3339 = re.compile(r"^(?P<whole>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(?P<fraction>\d{1,9}))?"
                     r"(?P<offset>Z|[+-]\d\d:\d\d)?$")
MAX_OPERATION = 512
SORT_CHUNK = 100_000
NANOS_PER_SECOND = 1_000_000_000
NANOS_PER_MINUTE = 60 * NANOS_PER_SECOND


@dataclass(frozen=True)
class Options:
    """Conversion options (see the CLI help)."""

    max_events: int | None = None
    minutes_before: float | None = None
    minutes_after: float | None = None
    include_normal: bool = False
    skip_frontend: bool = False


@dataclass
class Stats:
    """What happened to the input rows, reported at the end."""

    malformed: Counter[str] = field(default_factory=Counter)
    duplicates: Counter[str] = field(default_factory=Counter)
    invalid: Counter[str] = field(default_factory=Counter)
    outside_window: Counter[str] = field(default_factory=Counter)
    repaired: Counter[str] = field(default_factory=Counter)
    missing_values: int = 0
    unresolved_parents: int = 0


@dataclass
class PodSeen:
    """First kept observation of each pod, and the nodes its logs ran on (node -> first time seen)."""

    first: dict[str, int] = field(default_factory=dict)
    nodes: dict[str, dict[str, int]] = field(default_factory=dict)

    def saw(self, pod: str, ns: int, node: str | None = None) -> None:
        """Record that ``pod`` was observed at ``ns`` (on ``node`` when known)."""
        if ns < self.first.get(pod, ns + 1):
            self.first[pod] = ns
        if node:
            by_node = self.nodes.setdefault(pod, {})
            if ns < by_node.get(node, ns + 1):
                by_node[node] = ns


# --- small pure helpers -------------------------------------------------------------------------


def service_of(pod: str) -> str:
    """The service a pod belongs to: the pod name minus its k8s replica-set/pod hash suffixes."""
    for pattern in (DEPLOYMENT_POD, STATEFUL_POD):
        match = pattern.match(pod)
        if match:
            return match.group("service")
    return pod  # a bare pod name is its own service


def metric_name(column: str) -> str:
    """``PodClientLatencyP90(s)`` -> ``pod_client_latency_p90_s``; ``CpuUsageRate(%)`` -> ``cpu_usage_rate_pct``."""
    text = column.replace("%", "pct")
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", text)
    text = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", text)
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def parse_level(text: str) -> str | None:
    """The log level word near the start of a Java log line, if any."""
    match = LEVEL.search(text[:LEVEL_SEARCH_CHARS])
    return match.group(1) if match else None


def parse_value(cell: str) -> float | None:
    """A metric cell as a float; NaN, empty and infinite cells are missing samples (None)."""
    value = float(cell)  # raises ValueError on garbage: the caller counts it
    return value if math.isfinite(value) else None


def utc_from_ns(ns: int) -> datetime:
    """Nanoseconds since the epoch as an aware UTC datetime (microsecond precision)."""
    seconds, nanos = divmod(ns, NANOS_PER_SECOND)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=nanos // 1000)


def parse_inject_time(text: str) -> datetime:
    """``inject_time`` ("YYYY-MM-DD HH:MM:SS", on the UTC data clock: see the module docstring)."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)


def row_hash(*parts: str) -> str:
    """A short stable id for a row that has none."""
    return hashlib.sha1("\x1f".join(parts).encode()).hexdigest()[:24]


# --- cases and windows --------------------------------------------------------------------------


def load_cases(day_dir: Path, day: str) -> list[dict[str, object]]:
    """The day's faults as case dicts, in time order, exact (time, pod) repeats dropped."""
    grouped = json.loads((day_dir / f"{day}-fault_list.json").read_text())
    faults = [fault for hour in sorted(grouped) for fault in grouped[hour]]
    faults.sort(key=lambda f: (f["inject_time"], f["inject_pod"]))
    cases: list[dict[str, object]] = []
    seen: set[tuple[str, str]] = set()
    for fault in faults:
        key = (fault["inject_time"], fault["inject_pod"])
        if key in seen:
            continue
        seen.add(key)
        cases.append({
            "id": f"nezha-{day}-{len(cases) + 1:02d}",
            "at": parse_inject_time(fault["inject_time"]).isoformat(),
            "root_cause": {"kind": "instance", "name": fault["inject_pod"]},
            "fault_type": fault["inject_type"],
            "service": service_of(fault["inject_pod"]),
        })
    return cases


def fault_windows(cases: list[dict[str, object]], options: Options) -> list[tuple[int, int]] | None:
    """Merged [start, end] nanosecond windows around the faults, or None to keep everything.

    Filtering is on when either bound is given; the bound not given is 0 minutes.
    """
    if options.minutes_before is None and options.minutes_after is None:
        return None
    before = int((options.minutes_before or 0) * NANOS_PER_MINUTE)
    after = int((options.minutes_after or 0) * NANOS_PER_MINUTE)
    spans = sorted((int(datetime.fromisoformat(str(c["at"])).timestamp()) * NANOS_PER_SECOND - before,
                    int(datetime.fromisoformat(str(c["at"])).timestamp()) * NANOS_PER_SECOND + after)
                   for c in cases)
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def in_windows(ns: int, windows: list[tuple[int, int]] | None) -> bool:
    """Whether ``ns`` falls in one of the (few, merged) windows; None means no filtering."""
    return windows is None or any(start <= ns <= end for start, end in windows)


# --- reading ------------------------------------------------------------------------------------


def read_rows(path: Path, columns: tuple[str, ...] | None, stats: Stats, source: str) -> Iterator[dict[str, str]]:
    """Rows of a CSV file as dicts; rows with the wrong number of fields are counted and skipped."""
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            return
        if columns is not None and tuple(header) != columns:
            stats.malformed[f"{source}_file_header"] += 1
            return
        for row in reader:
            if len(row) != len(header):
                stats.malformed[source] += 1
                continue
            yield dict(zip(header, row, strict=True))


def telemetry_dirs(src: Path, day: str, options: Options) -> list[Path]:
    """The day's telemetry folders: rca_data first (it wins de-duplication), then construct_data if asked."""
    dirs = [src / "rca_data" / day]
    normal = src / "construct_data" / day
    if options.include_normal and normal.is_dir():
        dirs.append(normal)
    return dirs


def files(dirs: list[Path], kind: str) -> list[Path]:
    """All ``kind`` CSV files of the given telemetry folders, in name (= time) order per folder."""
    return [path for d in dirs for path in sorted((d / kind).glob("*.csv"))]


# --- records: (sort key, payload) pairs, validated only when written -------------------------------


def record(ns: int, kind: str, fields: dict[str, object]) -> tuple[str, str]:
    """A sortable record: zero-padded time then type rank, so string order is time order."""
    return f"{ns:020d}{RANK[kind]}", json.dumps({"type": kind, **fields}, separators=(",", ":"))


def index_spans(trace_files: list[Path], stats: Stats) -> dict[tuple[str, str], str]:
    """(trace id, span id) -> service, over all trace files, so callers resolve across file boundaries."""
    services: dict[tuple[str, str], str] = {}
    interned: dict[str, str] = {}  # one string per service keeps the index small
    scratch = Stats()  # malformed rows are counted once, in span_records
    for path in trace_files:
        for row in read_rows(path, TRACE_COLUMNS, scratch, "trace"):
            service = service_of(row["PodName"])
            services[(row["TraceID"], row["SpanID"])] = interned.setdefault(service, service)
    return services


def span_records(trace_files: list[Path], services: dict[tuple[str, str], str], windows: list[tuple[int, int]] | None,
                 pods: PodSeen, stats: Stats) -> Iterator[tuple[str, str]]:
    """Span records, each span once."""
    emitted: set[tuple[str, str]] = set()
    for path in trace_files:
        for row in read_rows(path, TRACE_COLUMNS, stats, "trace"):
            key = (row["TraceID"], row["SpanID"])
            if key in emitted:
                stats.duplicates["span"] += 1
                continue
            try:
                start, end = int(row["StartTimeUnixNano"]), int(row["EndTimeUnixNano"])
                if start <= 0:  # Go's zero time, as some log rows have: no usable time
                    raise ValueError("span without a start time")
                # Duration is microseconds; End-Start keeps the nanoseconds. Fall back if the pair is broken.
                duration_ms = (end - start) / 1e6 if end >= start else int(row["Duration"]) / 1e3
            except ValueError:
                stats.malformed["trace"] += 1
                continue
            emitted.add(key)
            if not in_windows(start, windows):
                stats.outside_window["span"] += 1
                continue
            parent = row["ParentID"] if row["ParentID"] not in ("", ROOT_PARENT) else None
            caller = services.get((row["TraceID"], parent)) if parent else None
            if parent and caller is None:
                stats.unresolved_parents += 1
            pods.saw(row["PodName"], start)
            yield record(start, "span", {
                "id": row["SpanID"], "trace_id": row["TraceID"], "parent_id": parent,
                "service": service_of(row["PodName"]), "instance": row["PodName"], "caller": caller,
                "operation": row["OperationName"][:MAX_OPERATION], "duration_ms": duration_ms, "error": False,
            })


def docker_log(cell: str) -> tuple[str, str | None]:
    """(Java log text, docker ``time``) of a docker JSON log line; ValueError when it is not one."""
    obj = json.loads(cell)
    if not isinstance(obj, dict) or not isinstance(obj.get("log"), str):
        raise ValueError("not a docker JSON log line")
    stamp = obj.get("time")
    return obj["log"].strip(), stamp if isinstance(stamp, str) else None


def rfc3339_ns(text: str) -> int:
    """``2023-01-29T09:33:14.720362621Z`` (nanosecond fraction, optional offset; naive = UTC) -> nanoseconds."""
    match = RFC3339.match(text.strip())
    if not match:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    whole = datetime.fromisoformat(match["whole"] + (match["offset"] or "+00:00").replace("Z", "+00:00"))
    fraction = int((match["fraction"] or "0").ljust(9, "0")[:9])
    return int(whole.timestamp()) * NANOS_PER_SECOND + fraction


def log_time(row: dict[str, str], docker_time: str | None, stats: Stats) -> int:
    """The row's time in nanoseconds.

    ``TimeUnixNano`` is right for all but a few rows, where it holds Go's zero time
    (-6795364578871345152) and ``Timestamp`` is a naive millisecond time; those take the docker ``time``
    field (UTC, nanoseconds), else ``Timestamp`` read as UTC.
    """
    ns = int(row["TimeUnixNano"])
    if ns > 0:
        return ns
    stats.repaired["log_time"] += 1
    return rfc3339_ns(docker_time) if docker_time else rfc3339_ns(row["Timestamp"])


def log_records(log_files: list[Path], windows: list[tuple[int, int]] | None, pods: PodSeen,
                stats: Stats) -> Iterator[tuple[str, str]]:
    """Log records, each distinct row once."""
    emitted: set[str] = set()
    for path in log_files:
        for row in read_rows(path, LOG_COLUMNS, stats, "log"):
            event_id = "log-" + row_hash(row["TimeUnixNano"], row["PodName"], row["SpanID"], row["Log"])
            if event_id in emitted:
                stats.duplicates["log"] += 1
                continue
            try:
                message, docker_time = docker_log(row["Log"])
                ns = log_time(row, docker_time, stats)
            except ValueError:  # json.JSONDecodeError is a ValueError
                stats.malformed["log"] += 1
                continue
            emitted.add(event_id)
            if not in_windows(ns, windows):
                stats.outside_window["log"] += 1
                continue
            pods.saw(row["PodName"], ns, row["Node"] or None)
            yield record(ns, "log", {
                "id": event_id, "service": service_of(row["PodName"]), "instance": row["PodName"],
                "host": row["Node"] or None, "level": parse_level(message), "message": message,
                "trace_id": row["TraceID"] or None,
            })


def metric_row_records(row: dict[str, str], ns: int, stats: Stats) -> list[tuple[str, str]]:
    """One record per measured column of a metric row (pod row, or the frontend's service row)."""
    pod = row.get("PodName")
    entity = pod or row["ServiceName"]
    base: dict[str, object] = {"entity_kind": "instance" if pod else "service", "entity": entity,
                               "service": service_of(pod) if pod else entity}
    out = []
    missing = 0
    for column, cell in row.items():
        if column in METRIC_ID_COLUMNS:
            continue
        value = parse_value(cell) if cell.strip() else None  # ValueError: the caller skips the row
        name = metric_name(column)
        out.append(record(ns, "metric", {**base, "id": f"metric-{entity}-{name}-{ns // NANOS_PER_SECOND}",
                                         "metric": name, "value": value}))
        missing += value is None
    stats.missing_values += missing  # counted only once the whole row parsed
    return out


def metric_records(metric_files: list[Path], windows: list[tuple[int, int]] | None, options: Options,
                   pods: PodSeen, stats: Stats) -> Iterator[tuple[str, str]]:
    """Metric records, one sample per (entity, timestamp) however many files repeat it."""
    emitted: set[tuple[str, str]] = set()
    for path in metric_files:
        for row in read_rows(path, None, stats, "metric"):
            if "PodName" not in row and ("ServiceName" not in row or options.skip_frontend):
                continue
            entity = row.get("PodName") or row["ServiceName"]
            key = (entity, row.get("TimeStamp", ""))
            if key in emitted:
                stats.duplicates["metric_row"] += 1
                continue
            try:
                ns = int(row["TimeStamp"]) * NANOS_PER_SECOND
                if not in_windows(ns, windows):
                    emitted.add(key)
                    stats.outside_window["metric_row"] += 1
                    continue
                records = metric_row_records(row, ns, stats)
            except (KeyError, ValueError):
                stats.malformed["metric"] += 1
                continue
            emitted.add(key)
            if "PodName" in row:
                pods.saw(row["PodName"], ns)
            yield from records


def topology_records(pods: PodSeen) -> Iterator[tuple[str, str]]:
    """One topology record per (service, pod, node); the earliest node's is dated at the pod's first sight."""
    for pod, first in sorted(pods.first.items()):
        nodes = sorted(pods.nodes.get(pod, {}).items(), key=lambda item: item[1])
        if not nodes:
            yield record(first, "topology", {"id": f"topology-{pod}", "service": service_of(pod),
                                             "instance": pod, "host": None})
            continue
        for index, (node, seen_at) in enumerate(nodes):
            yield record(first if index == 0 else seen_at, "topology", {
                "id": f"topology-{pod}@{node}", "service": service_of(pod), "instance": pod, "host": node})


# --- external sort and output ----------------------------------------------------------------------


def spill(records: Iterable[tuple[str, str]], folder: Path, chunk: int = SORT_CHUNK) -> list[Path]:
    """Write the records as sorted chunk files of ``key\\tpayload`` lines; bounded memory."""
    paths: list[Path] = []
    buffer: list[str] = []

    def flush() -> None:
        buffer.sort()
        # Named by a folder-wide count: several spill() calls share the folder.
        path = folder / f"chunk-{sum(1 for _ in folder.iterdir()):05d}.txt"
        path.write_text("".join(buffer), encoding="utf-8")
        paths.append(path)
        buffer.clear()

    for key, payload in records:
        buffer.append(f"{key}\t{payload}\n")
        if len(buffer) >= chunk:
            flush()
    if buffer:
        flush()
    return paths


def merged(paths: list[Path]) -> Iterator[tuple[int, dict[str, object]]]:
    """The spilled records in time order, as (nanoseconds, fields)."""
    handles = [path.open(encoding="utf-8") for path in paths]
    try:
        for line in heapq.merge(*handles):
            key, payload = line.rstrip("\n").split("\t", 1)
            yield int(key[:-1]), json.loads(payload)
    finally:
        for handle in handles:
            handle.close()


def to_event(ns: int, fields: dict[str, object]) -> EventBase:
    """Validate one record through its contract model (raises ValidationError)."""
    model = MODELS[str(fields["type"])]
    return model.model_validate({**fields, "at": utc_from_ns(ns)})


def write_events(stream: Iterator[tuple[int, dict[str, object]]], out: Path, max_events: int | None,
                 stats: Stats) -> Counter[str]:
    """Validate and write events (atomically) until ``max_events``; returns counts per type."""
    counts: Counter[str] = Counter()
    partial = out / "events.jsonl.part"
    with partial.open("w", encoding="utf-8") as handle:
        for ns, fields in stream:
            if max_events is not None and counts.total() >= max_events:
                break
            kind = str(fields["type"])
            try:
                event = to_event(ns, fields)
            except ValidationError:
                stats.invalid[kind] += 1
                continue
            handle.write(event.model_dump_json() + "\n")
            counts[kind] += 1
    partial.replace(out / "events.jsonl")
    return counts


def write_cases(cases: list[dict[str, object]], out: Path) -> None:
    """``cases.jsonl``: one case per line."""
    (out / "cases.jsonl").write_text("".join(json.dumps(case) + "\n" for case in cases), encoding="utf-8")


# --- entry points ----------------------------------------------------------------------------------


def convert(src: Path, day: str, out: Path, options: Options | None = None) -> dict[str, object]:
    """Convert one day; returns the counts that the CLI prints."""
    started = time.monotonic()
    options = options or Options()
    day_dir = src / "rca_data" / day
    if not day_dir.is_dir():
        raise FileNotFoundError(f"{day_dir} does not exist (SRC must be the folder holding rca_data/)")
    out.mkdir(parents=True, exist_ok=True)
    stats, pods = Stats(), PodSeen()
    cases = load_cases(day_dir, day)
    windows = fault_windows(cases, options)
    dirs = telemetry_dirs(src, day, options)
    trace_files = files(dirs, "trace")
    with tempfile.TemporaryDirectory(prefix=".nezha-sort-", dir=out) as tmp:
        folder = Path(tmp)
        services = index_spans(trace_files, stats)
        chunks = spill(span_records(trace_files, services, windows, pods, stats), folder)
        del services  # the caller index is no longer needed: free it before the other sources
        chunks += spill(log_records(files(dirs, "log"), windows, pods, stats), folder)
        chunks += spill(metric_records(files(dirs, "metric"), windows, options, pods, stats), folder)
        chunks += spill(topology_records(pods), folder)
        counts = write_events(merged(chunks), out, options.max_events, stats)
    write_cases(cases, out)
    return {
        "events": dict(sorted(counts.items())), "total": counts.total(), "cases": len(cases),
        "skipped": {"malformed": dict(stats.malformed), "invalid": dict(stats.invalid),
                    "duplicates": dict(stats.duplicates), "outside_window": dict(stats.outside_window)},
        "repaired": dict(stats.repaired),
        "missing_metric_values": stats.missing_values, "unresolved_parents": stats.unresolved_parents,
        "seconds": round(time.monotonic() - started, 2),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description="Convert a Nezha TrainTicket day into sleuthgraph events.")
    parser.add_argument("src", type=Path, help="the unpacked dataset root (the folder holding rca_data/)")
    parser.add_argument("--day", required=True, help="YYYY-MM-DD, a folder under rca_data/")
    parser.add_argument("--out", type=Path, required=True, help="output folder (events.jsonl, cases.jsonl)")
    parser.add_argument("--max-events", type=int, help="write only the first N events in time order")
    parser.add_argument("--minutes-before", type=float, help="keep telemetry from M minutes before each fault")
    parser.add_argument("--minutes-after", type=float, help="keep telemetry up to M minutes after each fault")
    parser.add_argument("--include-normal", action="store_true",
                        help="also convert the fault-free construct_data/<day> telemetry")
    parser.add_argument("--skip-frontend", action="store_true",
                        help="drop the service-level metrics of front_service.csv")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """CLI entry: convert and print one JSON line of counts."""
    args = parse_args(argv)
    options = Options(max_events=args.max_events, minutes_before=args.minutes_before,
                      minutes_after=args.minutes_after, include_normal=args.include_normal,
                      skip_frontend=args.skip_frontend)
    print(json.dumps(convert(args.src, args.day, args.out, options)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
