"""Ops telemetry simulator with ground truth: random microservice topologies, traffic, faults that propagate.

One scenario is one topology observed for a while: a warm-up (so streaming baselines settle), then one
incident per segment. Every minute the simulator computes, per service, its own latency/error rate from
its instances and then the *effective* latency/error rate seen by callers, walking the call DAG from the
leaves up. Faults change the instances/hosts/services they hit; callers see the effect through the DAG,
one minute later on lagged edges and weaker (retries and fallbacks absorb part of the errors), which is
why alerts usually fire on a caller rather than on the cause.

Noise that makes the task non-trivial: innocent deploys/config changes (some right before an onset on a
neighbour of the cause), unrelated metric spikes, background error logs, noisy metrics with a daily shape.

Everything is a pure function of the config: one ``random.Random`` and one numpy ``Generator`` seeded from
``config.seed``; no globals.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from schema.events import AlertEvent, ChangeEvent, EventBase, LogEvent, MetricEvent, SpanEvent, TopologyEvent

#: Fault kinds and the kind of entity that is the root cause of each.
FAULT_ROOT_KIND: dict[str, str] = {
    "latency": "service",
    "errors": "service",
    "wrong_value": "service",
    "exception": "service",
    "cpu": "instance",
    "memory": "instance",
    "crash": "instance",
    "bad_deploy": "change",
    "network_delay": "host",
    "host_failure": "host",
}
FAULT_KINDS: tuple[str, ...] = tuple(FAULT_ROOT_KIND)
#: Faults that can hit a single instance (pod) instead of the whole service (see ``OpsSimConfig.pod_fault_prob``).
POD_FAULT_KINDS: tuple[str, ...] = ("latency", "errors", "wrong_value", "exception")

_WORDS = (
    "cart", "checkout", "auth", "user", "catalog", "search", "payment", "ledger", "fraud", "shipping",
    "inventory", "pricing", "promo", "review", "media", "notify", "email", "session", "profile", "geo",
    "quote", "order", "invoice", "tax", "ads", "recommend", "report", "audit", "config", "gateway",
)
_NORMAL_TEMPLATES = (
    "GET /api/{op} 200 in {n} ms",
    "POST /api/{op} 201 in {n} ms",
    "cache hit ratio {f} for {op}",
    "processed batch of {n} items for {op}",
    "connection pool size {n} active {n}",
    "scheduled job {op} finished in {n} ms",
)


@dataclass(frozen=True)
class OpsSimConfig:
    """What one simulated scenario looks like. All sizes are ranges sampled with the seed."""

    seed: int = 0
    min_services: int = 10
    max_services: int = 40
    max_instances_per_service: int = 3
    #: Average number of instances per host (hosts are shared by services).
    instances_per_host: float = 3.0
    n_incidents: int = 6
    warmup_minutes: int = 25
    segment_minutes: int = 36
    #: Minute of the segment (inclusive range) at which the fault starts.
    onset_range: tuple[int, int] = (14, 20)
    fault_minutes: tuple[int, int] = (8, 14)
    fault_kinds: tuple[str, ...] = FAULT_KINDS
    #: Probability that a fault hits an entry (user-facing) service; most causes are deeper.
    entry_fault_prob: float = 0.1
    #: Sampled spans per call edge and minute at the caller's usual traffic (Poisson).
    spans_per_edge: int = 3
    logs_per_instance: float = 1.0
    metric_noise: float = 0.06
    innocent_changes_per_hour: float = 4.0
    #: Probability of an innocent change on a neighbour of the cause shortly before the onset.
    distractor_change_prob: float = 0.5
    #: Unrelated metric spikes per incident window (Poisson mean).
    noise_spikes_per_incident: float = 1.5
    background_spikes_per_hour: float = 3.0
    # Realism knobs (all off by default; real systems need them, see ``RcaTrainConfig.sim``):
    #: Fraction of services that are chronically noisy: a persistent error-log rate and frequent metric
    #: anomalies that have nothing to do with any fault.
    noisy_service_frac: float = 0.0
    #: ERROR log lines per minute per instance of a noisy service (Poisson mean, bursty).
    noisy_error_logs: float = 3.0
    #: Unrelated anomaly spikes per hour on each noisy service.
    noisy_spikes_per_hour: float = 12.0
    #: Probability that a segment is short (back-to-back faults): the previous fault is still in the
    #: analysis window of the next one.
    short_segment_prob: float = 0.0
    #: Length range of a short segment in minutes (its fault starts 1-2 minutes in).
    short_segment_minutes: tuple[int, int] = (6, 10)
    #: Wrong-value faults show mainly in the callers' error logs (they fail to use the response); the
    #: faulty service itself logs nothing about it with probability ``quiet_wrong_value_prob``.
    wrong_value_caller_logs: bool = False
    quiet_wrong_value_prob: float = 0.5
    #: Spread of normal log volume across services (sigma of a log-normal multiplier of
    #: ``logs_per_instance``, capped at 30x): real systems have chatty and quiet services.
    log_volume_sigma: float = 0.0
    #: Fraction of services whose normal log lines carry free-text tokens that template mining does not
    #: mask (names, keys), so they keep producing never-seen templates with no fault at all.
    template_churn_frac: float = 0.0
    #: Fraction of services whose logs are not collected at all (no normal, error or fault lines): real
    #: systems have services without log shipping, and some have none anywhere.
    silent_service_frac: float = 0.0
    #: Probability that a whole scenario has no logs (only metrics, traces, alerts and changes).
    silent_scenario_prob: float = 0.0
    #: Probability that each metric (per entity kind) is exported under an unfamiliar name, as real
    #: exporters name them in their own ways: a model cannot rely on recognising metric names.
    renamed_metric_prob: float = 0.0
    #: Probability that a latency, error, wrong-value or exception fault hits one instance (pod) of the service
    #: instead of all of them, as fault injection into a pod does; the pod is then the root cause.
    pod_fault_prob: float = 0.0
    #: Fraction of services that log the failures of their callees (the rest handle them silently or pass
    #: them on without a line).
    caller_failure_log_prob: float = 1.0
    #: Probability that the faulty code logs the exception it throws (real exception faults often leave no
    #: line at the faulty service: the error surfaces only in the traces and at the callers).
    exception_log_prob: float = 1.0
    #: Probability that a scenario's spans carry an error status (many tracers do not set it).
    span_error_prob: float = 1.0
    #: Probability that a scenario exports error-rate metrics at all.
    error_metric_prob: float = 1.0
    start: datetime = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)

    def __post_init__(self) -> None:
        if not 2 <= self.min_services <= self.max_services:
            raise ValueError("need 2 <= min_services <= max_services")
        unknown = set(self.fault_kinds) - set(FAULT_KINDS)
        if unknown or not self.fault_kinds:
            raise ValueError(f"unknown or empty fault kinds: {sorted(unknown)}")
        if self.onset_range[1] + self.fault_minutes[1] > self.segment_minutes:
            raise ValueError("faults must end inside their segment")
        if self.start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        fractions = (self.noisy_service_frac, self.short_segment_prob, self.silent_service_frac,
                     self.silent_scenario_prob, self.renamed_metric_prob, self.pod_fault_prob,
                     self.caller_failure_log_prob, self.exception_log_prob, self.span_error_prob,
                     self.error_metric_prob)
        if not all(0.0 <= f <= 1.0 for f in fractions):
            raise ValueError("noisy_service_frac, short_segment_prob, silent_service_frac, silent_scenario_prob, "
                             "renamed_metric_prob and the *_prob knobs are fractions")
        if not 4 <= self.short_segment_minutes[0] <= self.short_segment_minutes[1] <= self.segment_minutes:
            raise ValueError("short segments need 4 <= min <= max <= segment_minutes")


@dataclass(frozen=True)
class Topology:
    """Services (index order is a topological order: callers before callees), instances and hosts."""

    services: tuple[str, ...]
    calls: tuple[tuple[int, int], ...]
    entries: tuple[int, ...]
    instances: tuple[str, ...]
    instance_service: tuple[int, ...]
    hosts: tuple[str, ...]
    instance_host: tuple[int, ...]

    def callers_of(self, s: int) -> list[int]:
        return [a for a, b in self.calls if b == s]

    def callees_of(self, s: int) -> list[int]:
        return [b for a, b in self.calls if a == s]


@dataclass
class OpsScenario:
    """A simulated event stream with its labelled incidents."""

    config: OpsSimConfig
    topology: Topology
    events: list[EventBase]
    cases: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Fault:
    kind: str
    onset: int
    end: int
    service: int
    instance: int = -1
    host: int = -1
    change_id: str = ""
    magnitude: float = 1.0
    #: The fault hits only ``instance`` (a pod) of a service-level kind; the instance is the root cause.
    pod: bool = False

    @property
    def root_kind(self) -> str:
        return "instance" if self.pod else FAULT_ROOT_KIND[self.kind]


class _Ids:
    """Unique, deterministic event ids per scenario."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.n = 0

    def __call__(self, prefix: str) -> str:
        self.n += 1
        return f"s{self.seed}-{prefix}-{self.n}"


def simulate_ops(config: OpsSimConfig) -> OpsScenario:
    """Simulate one scenario: a random topology, its telemetry and ``n_incidents`` labelled incidents."""
    rng = random.Random(config.seed)
    nrng = np.random.default_rng(config.seed)
    topo = _topology(config, rng)
    return _Simulation(config, topo, rng, nrng).run()


def write_scenario(scenario: OpsScenario, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``events.jsonl`` (one ``model_dump_json()`` per line) and ``cases.jsonl``; returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    events_path, cases_path = out / "events.jsonl", out / "cases.jsonl"
    with events_path.open("w", encoding="utf-8") as fh:
        for event in scenario.events:
            fh.write(event.model_dump_json())
            fh.write("\n")
    with cases_path.open("w", encoding="utf-8") as fh:
        for case in scenario.cases:
            fh.write(json.dumps(case, sort_keys=True))
            fh.write("\n")
    return events_path, cases_path


def config_to_dict(config: OpsSimConfig) -> dict[str, Any]:
    """A JSON-able view of a config (for checkpoints and reports)."""
    data = asdict(config)
    data["start"] = config.start.isoformat()
    return data


# -- topology ------------------------------------------------------------------------------------------


def _topology(config: OpsSimConfig, rng: random.Random) -> Topology:
    n = rng.randint(config.min_services, config.max_services)
    names = [f"{_WORDS[i % len(_WORDS)]}-{i}" if i >= len(_WORDS) else _WORDS[i] for i in rng.sample(range(4 * n), n)]
    n_entry = max(1, round(n / 8))
    calls: set[tuple[int, int]] = set()
    for s in range(n_entry, n):
        # Every non-entry service has at least one caller with a smaller index (keeps the graph a DAG);
        # callers are biased towards recent indices, which gives layered, deep-ish graphs.
        lo = max(0, s - max(4, n // 3))
        for _ in range(1 if rng.random() < 0.6 else 2):
            calls.add((rng.randint(lo, s - 1), s))
    for s in range(n - 1):
        if rng.random() < 0.3:  # a few extra fan-out edges
            calls.add((s, rng.randint(s + 1, n - 1)))
    instances: list[str] = []
    inst_service: list[int] = []
    for s, name in enumerate(names):
        for j in range(rng.randint(1, config.max_instances_per_service)):
            instances.append(f"{name}-{rng.getrandbits(20):05x}-{j}")
            inst_service.append(s)
    n_hosts = max(2, math.ceil(len(instances) / config.instances_per_host))
    hosts = [f"node-{h:03d}" for h in range(n_hosts)]
    inst_host = [rng.randrange(n_hosts) for _ in instances]
    return Topology(
        services=tuple(names),
        calls=tuple(sorted(calls)),
        entries=tuple(range(n_entry)),
        instances=tuple(instances),
        instance_service=tuple(inst_service),
        hosts=tuple(hosts),
        instance_host=tuple(inst_host),
    )


# -- simulation ----------------------------------------------------------------------------------------


class _Simulation:
    """State of one run; :meth:`run` is called once."""

    def __init__(self, config: OpsSimConfig, topo: Topology, rng: random.Random, nrng: np.random.Generator) -> None:
        self.cfg, self.topo, self.rng, self.nrng = config, topo, rng, nrng
        self.ids = _Ids(config.seed)
        self.T = config.warmup_minutes + config.n_incidents * config.segment_minutes
        nS, nI, nH = len(topo.services), len(topo.instances), len(topo.hosts)
        self.nS, self.nI, self.nH = nS, nI, nH
        self.inst_of = [[i for i in range(nI) if topo.instance_service[i] == s] for s in range(nS)]
        self.on_host = [[i for i in range(nI) if topo.instance_host[i] == h] for h in range(nH)]
        self.callees = [topo.callees_of(s) for s in range(nS)]
        self.callers = [topo.callers_of(s) for s in range(nS)]
        # Static parameters.
        self.lat_base = np.array([rng.uniform(3, 40) for _ in range(nS)])
        self.err_base = np.array([rng.uniform(0.0005, 0.004) for _ in range(nS)])
        self.cpu_base = np.array([rng.uniform(0.12, 0.45) for _ in range(nI)])
        self.mem_base = np.array([rng.uniform(0.25, 0.6) for _ in range(nI)])
        self.edge_w = {e: rng.uniform(0.3, 1.0) for e in topo.calls}
        self.edge_prop = {e: rng.uniform(0.45, 0.85) for e in topo.calls}
        self.edge_lag = {e: rng.choice((0, 0, 1)) for e in topo.calls}
        self.templates = [rng.sample(_NORMAL_TEMPLATES, 2) for _ in range(nS)]
        self.ops = [[f"{topo.services[s]}/{w}" for w in rng.sample(("get", "list", "create", "update"), 2)]
                    for s in range(nS)]
        self.log_rate = np.full(nS, config.logs_per_instance)
        self.churn = np.zeros(nS, dtype=bool)
        if config.template_churn_frac > 0:
            self.churn = np.random.default_rng(config.seed + 11).random(nS) < config.template_churn_frac
        if config.log_volume_sigma > 0:
            self.log_rate *= np.minimum(30.0, np.exp(np.random.default_rng(config.seed + 7).normal(
                0, config.log_volume_sigma, nS)))
        # Services whose logs are not collected (their own generator: the defaults draw nothing from it).
        self.silent = np.zeros(nS, dtype=bool)
        if config.silent_service_frac > 0 or config.silent_scenario_prob > 0:
            srng = np.random.default_rng(config.seed + 13)
            if srng.random() < config.silent_scenario_prob:
                self.silent[:] = True
            else:
                self.silent = srng.random(nS) < config.silent_service_frac
        #: (entity kind, metric) -> exported name; unfamiliar names are opaque (``metric_NN``).
        self.metric_names: dict[tuple[str, str], str] = {}
        if config.renamed_metric_prob > 0:
            mrng = random.Random(config.seed + 17)
            pairs = [(k, m) for k in ("service", "instance", "host")
                     for m in ("latency_ms", "error_rate", "requests", "cpu", "memory", "up", "net_rtt_ms")]
            codes = mrng.sample(range(100), len(pairs))
            for pair, code in zip(pairs, codes, strict=True):
                if mrng.random() < config.renamed_metric_prob:
                    self.metric_names[pair] = f"metric_{code:02d}"
        # Which telemetry the scenario has and how services log failures: own generator, so the defaults draw
        # nothing from the main streams (scenarios with the knobs off are unchanged).
        krng = np.random.default_rng(config.seed + 19)
        self.logs_failures = krng.random(nS) < config.caller_failure_log_prob
        self.span_errors = bool(krng.random() < config.span_error_prob)
        self.error_metrics = bool(krng.random() < config.error_metric_prob)
        #: Per-fault draws of the knobs above (pod faults, exception logging).
        self.frng = random.Random(config.seed + 23)
        # Fault effects, per minute.
        T = self.T
        self.lat_mult = np.ones((nI, T))
        self.lat_add = np.zeros((nI, T))
        self.err_add = np.zeros((nI, T))
        self.down = np.zeros((nI, T), dtype=bool)
        self.cpu_add = np.zeros((nI, T))
        self.mem_add = np.zeros((nI, T))
        self.bad_value = np.zeros((nS, T))  # errors induced at the callers of a service (wrong values)
        #: Fraction of an instance's normal log lines still written (a handler that throws stops logging).
        self.log_keep = np.ones((nI, T))
        #: Fraction of a service's requests that make no downstream calls (they fail before them).
        self.call_drop = np.zeros((nS, T))
        self.host_down = np.zeros((nH, T), dtype=bool)
        self.host_net = np.zeros((nH, T))
        #: Extra log lines: (instance, minute) -> list of (level, message, count).
        self.extra_logs: dict[tuple[int, int], list[tuple[str, str, int]]] = {}
        self.events: list[tuple[datetime, int, EventBase]] = []

    # -- helpers -------------------------------------------------------------------------------------

    def at(self, minute: float, jitter: bool = False) -> datetime:
        seconds = minute * 60 + (self.rng.uniform(0, 59) if jitter else 0)
        return self.cfg.start + timedelta(seconds=seconds)

    def emit(self, event: EventBase) -> None:
        if self.metric_names and isinstance(event, MetricEvent):
            renamed = self.metric_names.get((event.entity_kind, event.metric))
            if renamed is not None:
                event = event.model_copy(update={"metric": renamed})
        self.events.append((event.at, len(self.events), event))

    def add_log(self, i: int, t: int, level: str, message: str, count: int = 1) -> None:
        if 0 <= t < self.T and count > 0:
            self.extra_logs.setdefault((i, t), []).append((level, message, count))

    # -- faults --------------------------------------------------------------------------------------

    def plan_faults(self) -> list[_Fault]:
        cfg, rng, topo = self.cfg, self.rng, self.topo
        # Cycle through the kinds in a shuffled order so every scenario covers as many kinds as it can.
        kinds: list[str] = []
        while len(kinds) < cfg.n_incidents:
            block = list(cfg.fault_kinds)
            rng.shuffle(block)
            kinds.extend(block)
        deep = [s for s in range(self.nS) if s not in topo.entries]
        faults: list[_Fault] = []
        seg = cfg.warmup_minutes
        for kind in kinds[: cfg.n_incidents]:
            if cfg.short_segment_prob > 0 and rng.random() < cfg.short_segment_prob:
                length = rng.randint(*cfg.short_segment_minutes)
                onset = seg + rng.randint(1, 2)
                end = onset + rng.randint(3, seg + length - onset)
            else:
                length = cfg.segment_minutes
                onset = seg + rng.randint(*cfg.onset_range)
                end = onset + rng.randint(*cfg.fault_minutes)
            seg += length
            entry = rng.random() < cfg.entry_fault_prob or not deep
            s = rng.choice(list(topo.entries)) if entry else rng.choice(deep)
            fault = _Fault(kind, onset, end, s, magnitude=rng.uniform(0.7, 1.3))
            if kind in POD_FAULT_KINDS and cfg.pod_fault_prob > 0 and self.frng.random() < cfg.pod_fault_prob:
                fault.pod = True
                fault.instance = self.frng.choice(self.inst_of[s])
            elif FAULT_ROOT_KIND[kind] == "instance":
                fault.instance = rng.choice(self.inst_of[s])
            elif FAULT_ROOT_KIND[kind] == "host":
                fault.host = topo.instance_host[rng.choice(self.inst_of[s])]
            faults.append(fault)
        return faults

    def apply_fault(self, f: _Fault) -> None:
        rng, topo, m = self.rng, self.topo, f.magnitude
        a, b = f.onset, f.end
        name = topo.services[f.service]
        # A pod fault hits one instance; requests spread evenly, so the service sees its share.
        insts = [f.instance] if f.pod else self.inst_of[f.service]
        share = len(insts) / len(self.inst_of[f.service])
        if f.kind == "latency":
            mult = rng.uniform(4, 10) * m
            self.lat_mult[insts, a:b] *= mult
            for t in range(a, b):
                for i in insts:
                    took = int(self.lat_base[f.service] * mult * 10)
                    self.add_log(i, t, "WARN", f"slow query on {name}_db took {took} ms", 2)
        elif f.kind == "errors":
            err = rng.uniform(0.15, 0.5) * m
            self.err_add[insts, a:b] += err
            for t in range(a, b):
                for i in insts:
                    self.add_log(i, t, "ERROR", f"Unhandled exception in handler {self.ops[f.service][0]}: "
                                 f"IllegalStateException: pool exhausted (id={rng.randint(1, 9999)})", 3)
        elif f.kind == "wrong_value":
            bad = rng.uniform(0.2, 0.5) * m
            self.bad_value[f.service, a:b] = bad * share
            quiet = self.cfg.wrong_value_caller_logs and rng.random() < self.cfg.quiet_wrong_value_prob
            # Pod faults come from fault-injection tools, whose wrong values the service often reports itself.
            level = "ERROR" if f.pod and self.frng.random() < 0.5 else "INFO"
            for t in range(a, b):
                for i in insts:
                    if not quiet:
                        self.add_log(i, t, level, "serialised response without field amount for request "
                                     f"{rng.randint(1, 99999)}", 2)
            if self.cfg.wrong_value_caller_logs:
                # The callers fail to use the response: their logs show it, naming the callee.
                for c in self.callers[f.service]:
                    rate = min(6.0, 12 * bad * share * self.edge_w[(c, f.service)])
                    for t in range(a, b):
                        for i in self.inst_of[c]:
                            self.add_log(i, t, "ERROR", f"failed to process response from {name}: field amount "
                                         f"is null (order {rng.randint(1, 99999)})", int(self.nrng.poisson(rate)))
        elif f.kind == "exception":
            # A handler throws for a fraction of requests: they fail (callers see errors), stop before the
            # handler's own log lines and before its downstream calls; the exception itself is logged or not.
            frac = min(0.95, rng.uniform(0.3, 0.8) * m)
            self.err_add[insts, a:b] += frac
            self.log_keep[insts, a:b] *= 1 - frac * rng.uniform(0.6, 1.0)
            self.call_drop[f.service, a:b] = np.maximum(self.call_drop[f.service, a:b], frac * share)
            if self.frng.random() < self.cfg.exception_log_prob:
                op = self.ops[f.service][0]
                for t in range(a, b):
                    for i in insts:
                        self.add_log(i, t, "ERROR", f"java.lang.RuntimeException: handler {op} failed at "
                                     f"{name}.Service.handle(Service.java:{rng.randint(10, 900)})", 2)
        elif f.kind == "cpu":
            i = f.instance
            self.cpu_add[i, a:b] = 0.97 - self.cpu_base[i]
            self.lat_mult[i, a:b] *= rng.uniform(5, 12) * m
            self.err_add[i, a:b] += 0.03
            for t in range(a, b):
                self.add_log(i, t, "WARN", f"request queue depth {rng.randint(200, 900)} exceeds soft limit", 2)
        elif f.kind == "memory":
            i = f.instance
            ramp = max(3, (b - a) // 2)
            for t in range(a, b):
                phase = (t - a) % (ramp + 2)
                if phase < ramp:
                    self.mem_add[i, t] = (0.97 - self.mem_base[i]) * (phase + 1) / ramp
                    self.lat_mult[i, t] *= 1 + 4 * (phase + 1) / ramp
                    self.add_log(i, t, "WARN", f"GC overhead {rng.randint(40, 95)}% heap usage "
                                 f"{rng.randint(80, 99)}%", 2)
                else:
                    self.down[i, t] = True
                    if phase == ramp:
                        self.add_log(i, t, "ERROR", "java.lang.OutOfMemoryError: Java heap space", 2)
                    else:
                        self.add_log(i, t, "INFO", f"starting {name} version 1.{rng.randint(1, 40)}.0", 1)
        elif f.kind == "crash":
            i = f.instance
            for t in range(a, b):
                phase = (t - a) % 3
                if phase < 2:
                    self.down[i, t] = True
                    self.add_log(i, t, "ERROR",
                                 "panic: runtime error: invalid memory address or nil pointer dereference", 1)
                else:
                    self.add_log(i, t, "INFO", f"starting {name} version 1.{rng.randint(1, 40)}.0", 1)
        elif f.kind == "bad_deploy":
            version = f"2.{rng.randint(0, 60)}.{rng.randint(0, 9)}"
            lead = rng.randint(1, 6)
            f.change_id = self.ids("chg")
            self.emit(ChangeEvent(id=f.change_id, at=self.at(a - lead, jitter=True), kind="deploy", service=name,
                                  version=version, description=f"deploy {name} {version}",
                                  author=rng.choice(("ci-bot", "alice", "bob", "carol"))))
            # A bad deploy breaks one way or the other: exceptions, or slowness.
            if rng.random() < 0.6:
                self.err_add[insts, a:b] += rng.uniform(0.15, 0.5) * m
                line = f"NullPointerException at {name}.Handler.process(Handler.java:{rng.randint(10, 900)})"
                for t in range(a, b):
                    for i in insts:
                        self.add_log(i, t, "ERROR", line, 3)
            else:
                self.lat_mult[insts, a:b] *= rng.uniform(4, 9) * m
                for t in range(a, b):
                    for i in insts:
                        self.add_log(i, t, "WARN", f"handler {self.ops[f.service][1]} exceeded budget of 50 ms", 2)
        elif f.kind == "network_delay":
            self.host_net[f.host, a:b] = rng.uniform(150, 500) * m
        elif f.kind == "host_failure":
            self.host_down[f.host, a:b] = True
        else:  # pragma: no cover - guarded by the config check
            raise ValueError(f.kind)

    def noise_spike(self, t0: int, avoid: set[int]) -> None:
        """An unrelated, short anomaly on one instance (no user impact, rarely an alert)."""
        rng = self.rng
        choices = [i for i in range(self.nI) if self.topo.instance_service[i] not in avoid] or list(range(self.nI))
        i = rng.choice(choices)
        length = rng.randint(1, 3)
        what = rng.choice(("cpu", "mem", "lat", "err"))
        sl = slice(max(0, t0), min(self.T, t0 + length))
        if what == "cpu":
            self.cpu_add[i, sl] += rng.uniform(0.3, 0.5)
        elif what == "mem":
            self.mem_add[i, sl] += rng.uniform(0.15, 0.3)
        elif what == "lat":
            self.lat_mult[i, sl] *= rng.uniform(2, 4)
        else:
            self.err_add[i, sl] += rng.uniform(0.02, 0.06)
            for t in range(sl.start, sl.stop):
                self.add_log(i, t, "ERROR", f"transient error talking to redis: read timeout ({rng.randint(1, 99)})", 1)

    def chronic_noise(self, hours: float) -> None:
        """Chronically noisy services: persistent, bursty error logs and frequent short anomalies all along."""
        cfg, rng, nrng = self.cfg, self.rng, self.nrng
        k = min(self.nS, max(1, round(cfg.noisy_service_frac * self.nS)))
        for s in sorted(rng.sample(range(self.nS), k)):
            name = self.topo.services[s]
            lines = [f"failed to refresh cache entry for {name}: timeout after {{n}} ms",
                     f"retrying request from {name} (attempt {{n}}): connection reset",
                     f"rejected request to {name}: invalid token for client {{n}}"]
            level = rng.uniform(0.3, 1.0) * cfg.noisy_error_logs
            for i in self.inst_of[s]:
                for t in range(self.T):
                    burst = level * math.exp(nrng.normal(0, 0.8))
                    count = int(nrng.poisson(burst))
                    if count:
                        self.add_log(i, t, "ERROR", rng.choice(lines).format(n=rng.randint(1, 999)), count)
            for _ in range(int(nrng.poisson(cfg.noisy_spikes_per_hour * hours))):
                i = rng.choice(self.inst_of[s])
                t0 = rng.randrange(0, self.T)
                sl = slice(t0, min(self.T, t0 + rng.randint(1, 3)))
                what = rng.choice(("cpu", "mem", "lat", "lat", "err"))
                if what == "cpu":
                    self.cpu_add[i, sl] += rng.uniform(0.2, 0.45)
                elif what == "mem":
                    self.mem_add[i, sl] += rng.uniform(0.1, 0.3)
                elif what == "lat":
                    self.lat_mult[i, sl] *= rng.uniform(1.8, 4)
                else:
                    self.err_add[i, sl] += rng.uniform(0.01, 0.05)

    def innocent_change(self, t: float, s: int) -> None:
        rng = self.rng
        kind = rng.choice(("deploy", "deploy", "config", "feature_flag", "scale"))
        name = self.topo.services[s]
        version = f"1.{rng.randint(0, 60)}.{rng.randint(0, 9)}" if kind == "deploy" else None
        self.emit(ChangeEvent(id=self.ids("chg"), at=self.at(t, jitter=True), kind=kind, service=name,
                              version=version, description=f"{kind} {name}",
                              author=rng.choice(("ci-bot", "alice", "bob", "carol", "dave"))))

    # -- the run -------------------------------------------------------------------------------------

    def run(self) -> OpsScenario:
        cfg, rng, topo = self.cfg, self.rng, self.topo
        self.emit_topology()
        faults = self.plan_faults()
        for f in faults:
            self.apply_fault(f)
        # Noise: unrelated spikes near every onset and in the background; innocent changes.
        for f in faults:
            for _ in range(int(self.nrng.poisson(cfg.noise_spikes_per_incident))):
                self.noise_spike(f.onset + rng.randint(-10, 4), {f.service})
            if rng.random() < cfg.distractor_change_prob:
                neighbours = [x for x in self.callers[f.service] + self.callees[f.service] if x != f.service]
                if neighbours:
                    self.innocent_change(f.onset - rng.uniform(1, 10), rng.choice(neighbours))
        hours = self.T / 60
        for _ in range(int(self.nrng.poisson(cfg.background_spikes_per_hour * hours))):
            self.noise_spike(rng.randrange(cfg.warmup_minutes, self.T), set())
        if cfg.noisy_service_frac > 0:
            self.chronic_noise(hours)
        fault_services = {(f.service, f.onset) for f in faults}
        for _ in range(int(self.nrng.poisson(cfg.innocent_changes_per_hour * hours))):
            t = rng.uniform(5, self.T - 1)
            s = rng.randrange(self.nS)
            # Never put an innocent change on the cause itself right before its onset: the label would lie.
            if any(s == fs and fo - 15 <= t <= fo + 2 for fs, fo in fault_services):
                continue
            self.innocent_change(t, s)
        L, E = self.telemetry()
        alerts = self.alerts(L, E)
        cases = self.cases(faults, alerts)
        self.events.sort(key=lambda x: (x[0], x[1]))
        return OpsScenario(cfg, topo, [e for _, _, e in self.events], cases)

    def emit_topology(self) -> None:
        topo = self.topo
        for i, inst in enumerate(topo.instances):
            s = topo.instance_service[i]
            self.emit(TopologyEvent(id=self.ids("topo"), at=self.at(0), service=topo.services[s], instance=inst,
                                    host=topo.hosts[topo.instance_host[i]],
                                    calls=[topo.services[c] for c in self.callees[s]]))

    def telemetry(self) -> tuple[np.ndarray, np.ndarray]:
        """Per minute: compute latencies/errors through the DAG, emit metrics, spans and logs."""
        cfg, topo, nrng, rng = self.cfg, self.topo, self.nrng, self.rng
        nS, nI, T = self.nS, self.nI, self.T
        L = np.zeros((nS, T))
        E = np.zeros((nS, T))
        load = np.zeros((nS, T))
        entry_rate = {s: rng.uniform(200, 2000) for s in topo.entries}
        edge_ratio = {e: rng.uniform(0.5, 2.0) for e in topo.calls}
        inst_host = np.array(topo.instance_host)
        down_since = np.zeros(nI, dtype=int)
        for t in range(T):
            day = ((cfg.start.hour * 60 + cfg.start.minute + t) % 1440) / 1440
            shape = 1 + 0.35 * math.sin(2 * math.pi * (day - 0.3))
            for s in topo.entries:
                load[s, t] = entry_rate[s] * shape * math.exp(nrng.normal(0, 0.05))
            for a, b in topo.calls:  # callers have smaller indices, so loads are final when used
                load[b, t] += load[a, t] * edge_ratio[(a, b)] * (1 - self.call_drop[a, t])
            down = self.down[:, t] | self.host_down[inst_host, t]
            down_since = np.where(down, down_since + 1, 0)
            net = self.host_net[inst_host, t]
            inst_lat = self.lat_base[list(topo.instance_service)] * self.lat_mult[:, t] + self.lat_add[:, t] + net
            inst_err = np.minimum(1.0, self.err_base[list(topo.instance_service)] + self.err_add[:, t])
            own_lat = np.zeros(nS)
            own_err = np.zeros(nS)
            for s in range(nS):
                insts = self.inst_of[s]
                up = [i for i in insts if not down[i]]
                if up:
                    own_lat[s] = float(np.mean(inst_lat[up]))
                    # Requests routed to a dead instance fail until the load balancer notices (~2 minutes).
                    lost = sum((1.0 if down_since[i] <= 2 else 0.15) for i in insts if down[i]) / len(insts)
                    own_err[s] = min(1.0, float(np.mean(inst_err[up])) * (1 - lost) + lost)
                else:
                    own_lat[s] = 1000.0  # timeouts
                    own_err[s] = 1.0
                for c in self.callees[s]:
                    own_err[s] = 1 - (1 - own_err[s]) * (1 - self.bad_value[c, t] * self.edge_w[(s, c)])
            for s in range(nS - 1, -1, -1):
                lat, ok = own_lat[s], 1 - own_err[s]
                for c in self.callees[s]:
                    e = (s, c)
                    tc = max(0, t - self.edge_lag[e])
                    lat += self.edge_w[e] * L[c, tc]
                    ok *= 1 - self.edge_prop[e] * E[c, tc]
                L[s, t] = lat
                E[s, t] = 1 - ok
            self.emit_minute(t, L, E, load, own_lat, own_err, inst_lat, inst_err, down)
        return L, E

    def emit_minute(self, t: int, L: np.ndarray, E: np.ndarray, load: np.ndarray, own_lat: np.ndarray,
                    own_err: np.ndarray, inst_lat: np.ndarray, inst_err: np.ndarray, down: np.ndarray) -> None:
        cfg, topo, nrng, ids = self.cfg, self.topo, self.nrng, self.ids
        noise = cfg.metric_noise
        at = self.at(t)

        def noisy(x: float, rel: float = noise) -> float:
            return float(max(0.0, x * (1 + nrng.normal(0, rel))))

        for s, name in enumerate(topo.services):
            self.emit(MetricEvent(id=ids("m"), at=at, entity_kind="service", entity=name, metric="latency_ms",
                                  value=round(noisy(L[s, t]), 3)))
            error_rate = round(noisy(E[s, t], 0.3), 5)
            if self.error_metrics:
                self.emit(MetricEvent(id=ids("m"), at=at, entity_kind="service", entity=name, metric="error_rate",
                                      value=error_rate))
            self.emit(MetricEvent(id=ids("m"), at=at, entity_kind="service", entity=name, metric="requests",
                                  value=round(noisy(load[s, t]), 1)))
        host_cpu = np.zeros(self.nH)
        host_mem = np.zeros(self.nH)
        for i, inst in enumerate(topo.instances):
            s = topo.instance_service[i]
            svc = topo.services[s]
            h = topo.instance_host[i]
            n_inst = len(self.inst_of[s])
            cpu = min(1.0, self.cpu_base[i] * (0.6 + 0.4 * load[s, t] / max(load[s, :t + 1].mean(), 1e-9))
                      + self.cpu_add[i, t] + nrng.normal(0, 0.02))
            mem = min(1.0, self.mem_base[i] + self.mem_add[i, t] + nrng.normal(0, 0.01))
            host_cpu[h] += cpu / 3
            host_mem[h] += mem / 3
            self.emit(MetricEvent(id=ids("m"), at=at, entity_kind="instance", entity=inst, service=svc, metric="up",
                                  value=0.0 if down[i] else 1.0))
            if down[i]:  # a dead process is not scraped: missing samples
                for metric in ("latency_ms", "error_rate", "cpu", "memory"):
                    if metric == "error_rate" and not self.error_metrics:
                        continue
                    self.emit(MetricEvent(id=ids("m"), at=at, entity_kind="instance", entity=inst, service=svc,
                                          metric=metric, value=None))
                continue
            downstream_lat = L[s, t] - own_lat[s]
            downstream_ok = (1 - E[s, t]) / max(1e-9, 1 - own_err[s])
            i_err = 1 - (1 - inst_err[i]) * downstream_ok
            for metric, value in (("latency_ms", noisy(inst_lat[i] + downstream_lat)),
                                  ("error_rate", noisy(i_err, 0.3)), ("cpu", max(0.0, cpu)), ("memory", max(0.0, mem))):
                if metric == "error_rate" and not self.error_metrics:
                    continue
                self.emit(MetricEvent(id=ids("m"), at=at, entity_kind="instance", entity=inst, service=svc,
                                      metric=metric, value=round(value, 5)))
            self.emit_logs(t, i, i_err, inst_err[i], n_inst)
        for h, host in enumerate(topo.hosts):
            dead = bool(self.host_down[h, t])
            self.emit(MetricEvent(id=ids("m"), at=at, entity_kind="host", entity=host, metric="up",
                                  value=0.0 if dead else 1.0))
            values = (("cpu", None if dead else min(1.0, 0.1 + host_cpu[h] + nrng.normal(0, 0.02))),
                      ("memory", None if dead else min(1.0, 0.2 + host_mem[h] + nrng.normal(0, 0.01))),
                      ("net_rtt_ms", None if dead else noisy(0.6 + self.host_net[h, t], 0.15)))
            for metric, value in values:
                self.emit(MetricEvent(id=ids("m"), at=at, entity_kind="host", entity=host, metric=metric,
                                      value=None if value is None else round(max(0.0, value), 5)))
        self.emit_spans(t, L, E, load)

    def emit_logs(self, t: int, i: int, err: float, own_err: float, n_inst: int) -> None:
        topo, nrng, rng, ids = self.topo, self.nrng, self.rng, self.ids
        s = topo.instance_service[i]
        svc, inst, host = topo.services[s], topo.instances[i], topo.hosts[topo.instance_host[i]]
        base = self.at(t)
        if self.silent[s]:
            return

        def log(level: str, message: str) -> None:
            self.emit(LogEvent(id=ids("log"), at=base + timedelta(seconds=rng.uniform(0, 59)), service=svc,
                               instance=inst, host=host, level=level, message=message))

        if self.churn[s] and rng.random() < 0.3:
            log("INFO", f"resolved {rng.choice(_WORDS)} route for {rng.choice(_WORDS)} tenant")
        for _ in range(int(nrng.poisson(self.log_rate[s] * self.log_keep[i, t]))):
            tpl = rng.choice(self.templates[s])
            log("INFO", tpl.format(op=rng.choice(self.ops[s]), n=rng.randint(1, 500), f=round(rng.random(), 2)))
        # Errors caused downstream show up as failed calls naming the worst callee.
        downstream = max(0.0, err - own_err)
        callees = self.callees[s]
        if callees and downstream > 0.01 and self.logs_failures[s]:
            worst = max(callees, key=lambda c: self._last_err(c, t))
            for _ in range(int(nrng.poisson(min(6.0, downstream * 12)))):
                log("ERROR", f"call to {topo.services[worst]} failed: upstream error after {rng.randint(5, 3000)} ms")
        for level, message, count in self.extra_logs.get((i, t), ()):
            for _ in range(count):
                log(level, message)

    def _last_err(self, c: int, t: int) -> float:
        hosts = np.array(self.topo.instance_host)[self.inst_of[c]]
        return float(self.err_add[self.inst_of[c], t].max() + self.bad_value[c, t]
                     + self.down[self.inst_of[c], t].mean() + self.host_down[hosts, t].mean()
                     + self.lat_mult[self.inst_of[c], t].max() / 100)

    def emit_spans(self, t: int, L: np.ndarray, E: np.ndarray, load: np.ndarray) -> None:
        """Sampled spans of minute ``t``: per edge, as many as its traffic relative to the caller's usual traffic
        (calls a failing handler no longer makes are missing)."""
        topo, rng, ids = self.topo, self.rng, self.ids
        base = self.at(t)
        edges: list[tuple[int | None, int]] = [(None, s) for s in topo.entries] + list(topo.calls)
        for caller, callee in edges:
            insts = self.inst_of[callee]
            source = callee if caller is None else caller
            drop = 0.0 if caller is None else self.call_drop[caller, t]
            usual = max(float(load[source, : t + 1].mean()), 1e-9)
            for _ in range(int(self.nrng.poisson(self.cfg.spans_per_edge * load[source, t] * (1 - drop) / usual))):
                i = rng.choice(insts)
                h = topo.instance_host[i]
                duration = L[callee, t] * math.exp(rng.gauss(0, 0.25)) + self.host_net[h, t]
                self.emit(SpanEvent(
                    id=ids("span"), at=base + timedelta(seconds=rng.uniform(0, 59)),
                    trace_id=f"{rng.getrandbits(64):016x}",
                    service=topo.services[callee], instance=topo.instances[i],
                    caller=None if caller is None else topo.services[caller],
                    operation=rng.choice(self.ops[callee]), duration_ms=round(duration, 3),
                    error=rng.random() < E[callee, t] and self.span_errors,
                ))

    def alerts(self, L: np.ndarray, E: np.ndarray) -> list[tuple[int, int, str]]:
        """SLO burn alerts per service: (service, start minute, fingerprint). Emitted as events too."""
        cfg, topo = self.cfg, self.topo
        w = cfg.warmup_minutes
        out: list[tuple[int, int, str]] = []
        for s, name in enumerate(topo.services):
            entry = s in topo.entries
            lat_slo = float(np.median(L[s, :w])) * (2.5 if entry else 4.0)
            err_slo = 0.03 if entry else 0.1
            bad = (L[s] > lat_slo) | (E[s] > err_slo)
            t, quiet = 0, 0
            firing_since: int | None = None
            while t < self.T:
                if bad[t] and t + 1 < self.T and bad[t + 1] and firing_since is None:
                    firing_since = t + 1  # two consecutive bad minutes burn the budget fast enough to page
                    which = "ErrorBudgetBurn" if E[s, t + 1] > err_slo else "LatencySLOBurn"
                    fp = self.ids("alert")
                    out.append((s, t + 1, fp))
                    self.emit(AlertEvent(
                        id=fp, at=self.at(t + 1, jitter=True), name=which, severity="page" if entry else "warning",
                        service=name, labels={"service": name, "slo": "availability" if which[0] == "E" else "latency"},
                        annotations={"summary": f"{which} on {name}"},
                    ))
                    quiet = 0
                elif firing_since is not None:
                    quiet = 0 if bad[t] else quiet + 1
                    if quiet >= 3:
                        firing_since = None
                t += 1
        return out

    def cases(self, faults: Sequence[_Fault], alerts: list[tuple[int, int, str]]) -> list[dict[str, Any]]:
        topo = self.topo
        depth = _depths(topo)
        cases: list[dict[str, Any]] = []
        for k, f in enumerate(faults):
            related = [(s, t0, fp) for s, t0, fp in alerts if f.onset <= t0 <= f.end + 2]
            if related:
                # The symptom an on-call engineer starts from: the most user-facing alert, earliest first.
                s, t0, fp = min(related, key=lambda a: (depth[a[0]], a[1]))
                symptom = {"kind": "service", "name": topo.services[s], "alert": fp}
                at = self.at(t0)
            else:
                symptom = {"kind": "service", "name": topo.services[f.service], "alert": None}
                at = self.at(f.onset + 2)
            root_kind = f.root_kind
            root_name = {
                "service": topo.services[f.service],
                "instance": topo.instances[f.instance] if f.instance >= 0 else "",
                "host": topo.hosts[f.host] if f.host >= 0 else "",
                "change": f.change_id,
            }[root_kind]
            cases.append({
                "id": f"s{self.cfg.seed}-case-{k}",
                "at": at.isoformat(),
                "onset": self.at(f.onset).isoformat(),
                "fault": f.kind,
                "symptom": symptom,
                "root_cause": {"kind": root_kind, "name": root_name, "service": topo.services[f.service]},
            })
        return cases


def _depths(topo: Topology) -> list[int]:
    """Call depth from the entry services (entries are 0)."""
    depth = [10**6] * len(topo.services)
    for s in topo.entries:
        depth[s] = 0
    for a, b in topo.calls:  # index order is topological
        depth[b] = min(depth[b], depth[a] + 1)
    return depth
