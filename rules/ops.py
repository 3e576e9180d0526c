"""Ops rulesets for root-cause analysis, evaluated through :class:`rules.engine.RulesEngine` only.

Facts are computed in Python per candidate (minutes between its last change and the onset, how many of a
host's instances went down, saturation scores...), the rules decide. Thresholds live in
:class:`OpsRulesConfig`; conditions are small frozen dataclasses (not lambdas) so that building the same
ruleset from the same config twice gives an *equal* ruleset, which the engine accepts as a no-op
(durable-rules cannot replace a ruleset inside one process).

Rules:

* ``change_before_onset``: a change on the candidate shortly before the onset, and its target misbehaved after it.
* ``host_down_fanout``: a host whose instances went down together (several services hit at once).
* ``host_degraded_fanout``: a host whose instances all slowed down together (network, noisy neighbour).
* ``cpu_saturation`` / ``memory_saturation``: an instance saturated and itself degraded.
* ``deepest_alert``: the alerted service furthest down the call graph in an alert storm.
* ``alert_storm`` (separate ruleset, one fact per group): alerts connected along the topology within
  minutes are one incident.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rules.conditions import AllOf
from rules.engine import Firing, Rule, RulesEngine, Ruleset


@dataclass(frozen=True)
class OpsRulesConfig:
    """Thresholds and scores of the ops rules."""

    #: A change counts when it happened at most this many minutes before the onset ...
    change_window_minutes: float = 15.0
    #: ... and no more than this many minutes after it (clock skew, slow rollouts).
    change_after_onset_minutes: float = 2.0
    #: ... and its target reached this anomaly score after the change.
    change_min_target_score: float = 6.0
    #: Host down: at least this many instances of the host down, and this fraction of them.
    host_down_min_instances: int = 1
    host_down_fraction: float = 0.5
    #: Host degraded: this fraction of its instances (at least two) anomalous on latency together.
    host_degraded_fraction: float = 0.66
    host_degraded_min_instances: int = 2
    #: Saturation: the resource anomaly score, and the instance's own degradation score.
    saturation_score: float = 8.0
    saturation_impact_score: float = 6.0
    #: Alert storm: this many alerts connected along CALLS within this many minutes are one incident.
    storm_min_alerts: int = 3
    storm_window_minutes: float = 10.0
    #: Firing scores (how much each rule adds to a candidate's ranking).
    change_score: float = 1.0
    host_down_score: float = 1.0
    host_degraded_score: float = 0.8
    saturation_rule_score: float = 0.8
    deepest_alert_score: float = 0.3
    storm_score: float = 1.0

    def digest(self) -> str:
        """A short stable id of these thresholds (rulesets are named after it)."""
        return hashlib.sha1(repr(self).encode()).hexdigest()[:10]




def candidate_ruleset(cfg: OpsRulesConfig) -> Ruleset:
    """Rules over one candidate fact (see :func:`candidate_fact`)."""
    return Ruleset(f"ops_rca_{cfg.digest()}", (
        Rule("change_before_onset", AllOf((
            ("kind", "==", "change"),
            ("minutes_before_onset", "<=", cfg.change_window_minutes),
            ("minutes_before_onset", ">=", -cfg.change_after_onset_minutes),
            ("target_score_after", ">=", cfg.change_min_target_score),
        )), cfg.change_score, "changed shortly before the onset, and its target degraded after it",
            ("name", "change_kind", "minutes_before_onset", "target", "target_score_after")),
        Rule("host_down_fanout", AllOf((
            ("kind", "==", "host"),
            ("instances_down", ">=", cfg.host_down_min_instances),
            ("down_fraction", ">=", cfg.host_down_fraction),
        )), cfg.host_down_score, "instances on this host went down together",
            ("name", "instances_down", "instances_total", "down_fraction", "services_hit")),
        Rule("host_degraded_fanout", AllOf((
            ("kind", "==", "host"),
            ("instances_degraded", ">=", cfg.host_degraded_min_instances),
            ("degraded_fraction", ">=", cfg.host_degraded_fraction),
        )), cfg.host_degraded_score, "instances on this host slowed down together",
            ("name", "instances_degraded", "instances_total", "degraded_fraction", "services_hit")),
        Rule("cpu_saturation", AllOf((
            ("kind", "==", "instance"),
            ("cpu_score", ">=", cfg.saturation_score),
            ("impact_score", ">=", cfg.saturation_impact_score),
        )), cfg.saturation_rule_score, "CPU saturated on this instance while it degraded",
            ("name", "cpu_score", "impact_score")),
        Rule("memory_saturation", AllOf((
            ("kind", "==", "instance"),
            ("memory_score", ">=", cfg.saturation_score),
            ("impact_score", ">=", cfg.saturation_impact_score),
        )), cfg.saturation_rule_score, "memory saturated on this instance while it degraded",
            ("name", "memory_score", "impact_score")),
        Rule("deepest_alert", AllOf((
            ("kind", "==", "service"),
            ("alerted", "==", 1),
            ("alerted_callees", "==", 0),
            ("storm_alerts", ">=", cfg.storm_min_alerts),
        )), cfg.deepest_alert_score, "deepest alerted service of an alert storm (its callees are quiet)",
            ("name", "storm_alerts")),
    ))


def storm_ruleset(cfg: OpsRulesConfig) -> Ruleset:
    """Rules over one alert-group fact (see :func:`group_alerts`)."""
    return Ruleset(f"ops_storm_{cfg.digest()}", (
        Rule("alert_storm", AllOf((
            ("alerts", ">=", cfg.storm_min_alerts),
            ("span_minutes", "<=", cfg.storm_window_minutes),
        )), cfg.storm_score, "alerts connected along the call graph within minutes: one incident",
            ("group", "alerts", "services", "span_minutes", "first_alert")),
    ))


def register_ops_rules(engine: RulesEngine, cfg: OpsRulesConfig) -> tuple[str, str]:
    """Register both rulesets (idempotent for the same config); returns their names."""
    cand, storm = candidate_ruleset(cfg), storm_ruleset(cfg)
    engine.register(cand)
    engine.register(storm)
    return cand.name, storm.name


@dataclass(frozen=True)
class AlertGroup:
    """Alerts grouped along the topology into one incident."""

    alerts: tuple[str, ...]
    services: tuple[str, ...]
    first_at: datetime
    last_at: datetime
    firings: tuple[Firing, ...] = field(default=())

    @property
    def is_incident(self) -> bool:
        return bool(self.firings)


def joins_group(services: set[str], first_at: datetime, service: str, at: datetime, neighbours: set[str],
                cfg: OpsRulesConfig) -> bool:
    """Whether an alert on ``service`` at ``at`` belongs to a group: its service, or one it calls or is called
    by (``neighbours``), is already in the group, and it starts within the storm window of the group's first
    alert (either side: streams deliver slightly out of order). Used by the batch grouping below and by the
    streaming incident detector alike."""
    near = service in services or not neighbours.isdisjoint(services)
    return near and abs((at - first_at).total_seconds()) / 60 <= cfg.storm_window_minutes


def group_fact(group: int | str, alerts: Sequence[str], services: set[str], first_at: datetime,
               last_at: datetime) -> dict[str, Any]:
    """The fact the ``alert_storm`` rule sees for one group of alerts."""
    return {"group": group, "alerts": len(alerts), "services": len(services),
            "span_minutes": round((last_at - first_at).total_seconds() / 60, 2), "first_alert": alerts[0]}


def group_alerts(alerts: Iterable[tuple[str, str, datetime]], calls: Iterable[tuple[str, str]],
                 engine: RulesEngine, cfg: OpsRulesConfig) -> list[AlertGroup]:
    """Group ``(fingerprint, service, at)`` alerts whose services are connected by ``calls`` (undirected)
    and that start within ``storm_window_minutes`` of the group's first alert; the storm rule decides which
    groups are one incident."""
    alerts = sorted(alerts, key=lambda a: (a[2], a[0]))
    neighbours: dict[str, set[str]] = {}
    for a, b in calls:
        neighbours.setdefault(a, set()).add(b)
        neighbours.setdefault(b, set()).add(a)
    groups: list[list[tuple[str, str, datetime]]] = []
    for alert in alerts:
        home = next((g for g in groups if joins_group({s for _, s, _ in g}, g[0][2], alert[1], alert[2],
                                                      neighbours.get(alert[1], set()), cfg)), None)
        if home is None:
            groups.append([alert])
        else:
            home.append(alert)
    facts = [group_fact(k, [a for a, _, _ in g], {s for _, s, _ in g}, g[0][2], g[-1][2])
             for k, g in enumerate(groups)]
    register_ops_rules(engine, cfg)
    firings = engine.evaluate_many(storm_ruleset(cfg).name, facts) if facts else []
    return [
        AlertGroup(tuple(a for a, _, _ in g), tuple(sorted({s for _, s, _ in g})), g[0][2], g[-1][2], tuple(f))
        for g, f in zip(groups, firings, strict=True)
    ]
