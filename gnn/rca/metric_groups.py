"""What a metric measures, read from its name: the metric groups of the RCA features.

The model reads one anomaly feature per group (latency, errors, CPU, memory, up, other). It learned them from
the simulator, whose metrics have canonical names (``latency_ms``, ``error_rate``, ``cpu``, ``memory``, ``up``;
``requests`` and every name it does not know are "other"). Real systems name metrics their own way (exporter
prefixes, units, percentiles), so a name is split into words and the words say the group:
``pod_server_latency_p99_s`` is latency, ``cpu_usage_rate_pct`` CPU, ``pod_success_rate_pct`` errors. A name
whose words say none of these stays "other", as the model learned it: the training simulator renames a share
of its metrics to opaque names (``metric_37``), which land there.

Metrics that measure another entity than the one they are reported on are *ungrouped*: the model does not
read them (they stay in the graph, in the evidence and in the baselines). Client-side latency and errors are
the callee's: read as the caller's own, they blame callers for their callees' faults. Host-level metrics
(``node_*``, ``host_*``) reported on a pod or instance are its host's.

``FeatureConfig.metric_groups`` adds rules of one's own (a regular expression on the whole name, and a group
name or ``"none"``), tried before the words.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

#: The metric groups, in feature order (``anom_latency`` ... ``anom_other``).
GROUP_NAMES: tuple[str, ...] = ("latency", "error", "cpu", "memory", "up", "other")
OTHER = len(GROUP_NAMES) - 1
N_METRIC_GROUPS = len(GROUP_NAMES)
#: A rule's group name for "not read by the model".
UNGROUPED_NAME = "none"

#: The simulator's names, exactly.
CANONICAL: dict[str, int] = {"latency_ms": 0, "net_rtt_ms": 0, "error_rate": 1, "cpu": 2, "memory": 3, "up": 4,
                             "requests": OTHER}
#: Words saying the metric belongs to another entity than the one reporting it.
_CLIENT_WORDS = frozenset({"client", "outbound", "upstream"})
#: Leading words of host-level metrics (the host's when reported on a pod, instance or service). ``system`` as in
#: OpenTelemetry's ``system.cpu.utilization`` and Micrometer's ``system_cpu_usage`` (the whole machine; the
#: process's own are ``process.*``).
_HOST_PREFIXES = frozenset({"node", "host", "machine", "system"})
#: Last words of the parts of a histogram or summary that count observations or add them up
#: (``request_duration_seconds_count`` is a request count, not a latency).
_TALLY_SUFFIXES = frozenset({"count", "sum"})
_LATENCY = 0
#: Words per group, tried in this order (``http_request_errors`` is errors, ``request_duration_seconds`` latency).
_GROUP_WORDS: tuple[tuple[int, frozenset[str]], ...] = (
    (4, frozenset({"up", "health", "healthy", "alive", "liveness", "readiness", "ready"})),
    (2, frozenset({"cpu", "cpus"})),
    (3, frozenset({"mem", "memory", "heap", "rss", "oom"})),
    (1, frozenset({"error", "errors", "err", "fail", "failed", "failure", "failures", "success", "successful",
                   "exception", "exceptions", "5xx", "fault", "faults"})),
    (_LATENCY, frozenset({"latency", "duration", "rtt", "elapsed"})),
)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SPLIT = re.compile(r"[^a-z0-9]+")


def words(name: str) -> list[str]:
    """The lower-case words of a metric name (split on punctuation and camelCase)."""
    return [w for w in _SPLIT.split(_CAMEL.sub("_", name).lower()) if w]


def metric_group(name: str, on_host: bool = False, rules: Sequence[tuple[str, str]] = ()) -> int | None:
    """The group index of metric ``name`` (an index into :data:`GROUP_NAMES`), or ``None`` when it measures another
    entity than the one it is reported on (ungrouped).

    ``on_host``: the metric is reported on a host (then ``node_*`` metrics are its own). ``rules``: (regular
    expression, group name or ``"none"``) pairs tried first, in order, on the whole name. Callers that look up many
    rows keep the answer per name (the extraction does, per window)."""
    for pattern, group in rules:
        if re.fullmatch(pattern, name):
            return None if group == UNGROUPED_NAME else GROUP_NAMES.index(group)
    if name in CANONICAL:
        return CANONICAL[name]
    parts = words(name)
    if _CLIENT_WORDS.intersection(parts):
        return None
    if parts and parts[0] in _HOST_PREFIXES:
        if not on_host:
            return None
        parts = parts[1:]
    found = set(parts)
    for group, vocabulary in _GROUP_WORDS:
        if vocabulary & found:
            return OTHER if group == _LATENCY and parts[-1] in _TALLY_SUFFIXES else group
    return OTHER


def check_rules(rules: Sequence[tuple[str, str]]) -> None:
    """Raise ``ValueError`` for a rule with an invalid pattern or an unknown group name."""
    for pattern, group in rules:
        if group != UNGROUPED_NAME and group not in GROUP_NAMES:
            raise ValueError(f"metric group rule {pattern!r}: unknown group {group!r} "
                             f"(one of {', '.join((*GROUP_NAMES, UNGROUPED_NAME))})")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"metric group rule {pattern!r}: {exc}") from exc
