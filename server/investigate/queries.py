"""Ready Cypher queries for investigators, as parameterised constants.

Every query names only labels and relationship types of the allow-list (``schema.graph``), and takes every
value as a ``$parameter``: the text holds no string literals, so a query can be pasted into Neo4j Browser
or cypher-shell as it is (``:param ring => 'ring-...'`` first). :func:`check_query` enforces both rules and
the unit tests run it on every query. ``sleuth queries`` lists them and ``sleuth query NAME --param k=v``
runs one (read-only transaction) against the configured Neo4j.

Times: every time property is a native ``DATETIME``; windows are half-open ``[since, until)``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from schema.graph import NODE_SPECS, REL_SPECS

#: Parameter types a query may declare (how the CLI parses ``--param k=v``).
PARAM_TYPES = ("str", "int", "float", "bool", "datetime", "list")
#: A default meaning "the current time", resolved when the query runs.
NOW = "now"


@dataclass(frozen=True)
class Param:
    """One ``$parameter`` of a query."""

    name: str
    type: str
    description: str
    required: bool = True
    default: Any = None

    def __post_init__(self) -> None:
        if self.type not in PARAM_TYPES:
            raise ValueError(f"parameter {self.name}: unknown type {self.type!r}")
        if self.required and self.default is not None:
            raise ValueError(f"parameter {self.name}: a required parameter has no default")


@dataclass(frozen=True)
class Query:
    """A ready query: what it answers, its parameters and its Cypher text."""

    name: str
    description: str
    params: tuple[Param, ...]
    cypher: str
    #: The columns each row has, in order.
    columns: tuple[str, ...]

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)


def _since_until(what: str, required: bool = True) -> tuple[Param, Param]:
    return (Param("since", "datetime", f"start of the window on {what} (inclusive)", required),
            Param("until", "datetime", f"end of the window on {what} (exclusive)", required))


def _limit(default: int) -> Param:
    return Param("limit", "int", "at most this many rows", False, default)


def _entity_lookup() -> str:
    """One index lookup per label a finding can be ABOUT (generated from the allow-list)."""
    branches = [f"MATCH (e:{label} {{{NODE_SPECS[label].key}: $name}}) RETURN e"
                for label in REL_SPECS["ABOUT"].ends]
    return "CALL () {\n  " + "\n  UNION ".join(branches) + "\n}"


QUERIES: tuple[Query, ...] = (
    # -- fraud -------------------------------------------------------------------------------------
    Query(
        "rings",
        "Fraud rings detected in a window (all when no window), highest score first, with their size and the "
        "money their evidence transactions moved. Rings merged into another one (status merged, property "
        "merged_into) are left out.",
        (*_since_until("FraudRing.detected_at", required=False),
         Param("min_score", "float", "lowest ring score", False, 0.0), _limit(50)),
        """
MATCH (r:FraudRing)
WHERE ($since IS NULL OR r.detected_at >= $since) AND ($until IS NULL OR r.detected_at < $until)
  AND coalesce(r.score, 0.0) >= $min_score AND r.merged_into IS NULL
OPTIONAL MATCH (a:Account)-[:MEMBER_OF]->(r)
WITH r, count(DISTINCT a) AS members
OPTIONAL MATCH (r)-[:EVIDENCE]->(t:Transaction)
RETURN r.id AS ring, r.kind AS kind, r.score AS score, r.detected_at AS detected_at, r.status AS status,
       members, count(t) AS transactions, sum(t.amount) AS amount
ORDER BY score DESC, detected_at DESC, ring
LIMIT $limit""",
        ("ring", "kind", "score", "detected_at", "status", "members", "transactions", "amount"),
    ),
    Query(
        "ring_members",
        "The member accounts of a fraud ring with their role and risk, and the identities (device, IP, card, "
        "phone, email) each one shares with other members of the same ring.",
        (Param("ring", "str", "FraudRing.id"),),
        """
MATCH (r:FraudRing {id: $ring})<-[m:MEMBER_OF]-(a:Account)
OPTIONAL MATCH (a)-[:USES]->(i)<-[:USES]-(b:Account)-[:MEMBER_OF]->(r)
WHERE b <> a
WITH a, m, collect(DISTINCT i) AS shared, collect(DISTINCT b.id) AS shared_with
RETURN a.id AS account, m.role AS role, a.risk_score AS risk_score, a.risk_reasons AS risk_reasons,
       [x IN shared | {kind: head(labels(x)), id: x.id}] AS shared_identities, shared_with
ORDER BY account""",
        ("account", "role", "risk_score", "risk_reasons", "shared_identities", "shared_with"),
    ),
    Query(
        "ring_money_trail",
        "The money trail of a fraud ring: its evidence transactions in time order, who paid whom, how much, "
        "over which channel, and the running total.",
        (Param("ring", "str", "FraudRing.id"),),
        """
MATCH (r:FraudRing {id: $ring})-[:EVIDENCE]->(t:Transaction)
MATCH (s:Account)-[:SENT]->(t)-[:TO]->(d:Account)
WITH t, s, d ORDER BY t.at, t.id
WITH collect({t: t, src: s.id, dst: d.id}) AS trail
UNWIND range(0, size(trail) - 1) AS n
WITH trail[n] AS step, reduce(total = 0.0, x IN trail[0..n + 1] | total + x.t.amount) AS running_total
RETURN step.t.id AS transaction, step.t.at AS at, step.src AS src, step.dst AS dst, step.t.amount AS amount,
       step.t.currency AS currency, step.t.channel AS channel, step.t.risk_score AS risk_score, running_total
ORDER BY at, transaction""",
        ("transaction", "at", "src", "dst", "amount", "currency", "channel", "risk_score", "running_total"),
    ),
    Query(
        "riskiest_accounts",
        "The riskiest accounts active in the last $minutes before $now (sent or received a transaction): "
        "risk is the larger of the account's risk_score and its riskiest transaction in the window.",
        (Param("now", "datetime", "the end of the look-back (default: the current time)", False, NOW),
         Param("minutes", "int", "look-back in minutes", False, 60), _limit(20)),
        """
MATCH (t:Transaction)
WHERE t.at > $now - duration({minutes: $minutes}) AND t.at <= $now
MATCH (a:Account)-[:SENT|TO]-(t)
WITH a, count(t) AS transactions, sum(t.amount) AS amount, max(coalesce(t.risk_score, 0.0)) AS max_tx_risk
WITH a, transactions, amount, max_tx_risk, coalesce(a.risk_score, 0.0) AS account_risk
RETURN a.id AS account,
       CASE WHEN account_risk > max_tx_risk THEN account_risk ELSE max_tx_risk END AS risk,
       account_risk, max_tx_risk, a.risk_reasons AS reasons, transactions, amount
ORDER BY risk DESC, transactions DESC, account
LIMIT $limit""",
        ("account", "risk", "account_risk", "max_tx_risk", "reasons", "transactions", "amount"),
    ),
    Query(
        "accounts_sharing_identity",
        "Accounts that use the same device or phone (or the identity labels in $kinds) as a given account, "
        "with what they share and the rings they belong to.",
        (Param("account", "str", "Account.id"),
         Param("kinds", "list", "identity labels to follow (Device, IP, Card, Phone, Email)", False,
               ("Device", "Phone"))),
        """
MATCH (a:Account {id: $account})-[:USES]->(i)<-[:USES]-(b:Account)
WHERE b <> a AND any(l IN labels(i) WHERE l IN $kinds)
WITH b, collect(DISTINCT i) AS shared
OPTIONAL MATCH (b)-[:MEMBER_OF]->(r:FraudRing)
RETURN b.id AS account, [x IN shared | {kind: head(labels(x)), id: x.id}] AS shared, b.risk_score AS risk_score,
       collect(DISTINCT r.id) AS rings
ORDER BY size(shared) DESC, account""",
        ("account", "shared", "risk_score", "rings"),
    ),
    Query(
        "account_transactions",
        "The transactions an account sent or received in a window, in time order, with counterparties, risk "
        "and the devices, IPs and cards they went through.",
        (Param("account", "str", "Account.id"), *_since_until("Transaction.at"), _limit(500)),
        """
MATCH (a:Account {id: $account})-[:SENT|TO]-(t:Transaction)
WHERE t.at >= $since AND t.at < $until
MATCH (s:Account)-[:SENT]->(t)-[:TO]->(d:Account)
OPTIONAL MATCH (t)-[:VIA]->(v)
WITH t, s, d, collect({kind: head(labels(v)), id: v.id}) AS via
RETURN t.id AS transaction, t.at AS at, s.id AS src, d.id AS dst, t.amount AS amount, t.currency AS currency,
       t.channel AS channel, t.risk_score AS risk_score, t.risk_reasons AS risk_reasons,
       [x IN via WHERE x.id IS NOT NULL] AS via
ORDER BY at, transaction
LIMIT $limit""",
        ("transaction", "at", "src", "dst", "amount", "currency", "channel", "risk_score", "risk_reasons", "via"),
    ),
    # -- incidents and root causes -------------------------------------------------------------------
    Query(
        "top_incidents",
        "Incidents (started in a window, or all), highest root-cause score first. Incidents merged into "
        "another one (same first-ranked cause, property merged_into) are left out unless $include_merged.",
        (*_since_until("Incident.at", required=False),
         Param("include_merged", "bool", "also incidents merged into another", False, False), _limit(20)),
        """
MATCH (i:Incident)
WHERE ($since IS NULL OR i.at >= $since) AND ($until IS NULL OR i.at < $until)
  AND (i.merged_into IS NULL OR $include_merged)
RETURN i.id AS incident, i.started_at AS started_at, i.status AS status, i.symptom AS symptom,
       i.root_cause AS root_cause, i.score AS score, i.alerts AS alerts, i.model AS model,
       i.merged_into AS merged_into, i.resolved_at AS resolved_at
ORDER BY coalesce(score, 0.0) DESC, started_at DESC, incident
LIMIT $limit""",
        ("incident", "started_at", "status", "symptom", "root_cause", "score", "alerts", "model", "merged_into",
         "resolved_at"),
    ),
    Query(
        "incident_root_cause",
        "The ranked root-cause candidates of an incident (current ones; with $history also those a later "
        "analysis dropped), each with its score, model, evidence (JSON text) and the propagation path from "
        "the cause to the symptom.",
        (Param("incident", "str", "Incident.id"),
         Param("history", "bool", "also candidates that are no longer current", False, False)),
        """
MATCH (i:Incident {id: $incident})-[rc:ROOT_CAUSE]->(c)
WHERE coalesce(rc.current, false) OR $history
RETURN rc.rank AS rank, toLower(head(labels(c))) AS kind, coalesce(c.name, c.id) AS name, rc.score AS score,
       rc.model AS model, rc.path AS path, rc.current AS current, rc.at AS analysed_at, rc.evidence AS evidence,
       i.symptom AS symptom
ORDER BY current DESC, rank, kind, name""",
        ("rank", "kind", "name", "score", "model", "path", "current", "analysed_at", "evidence", "symptom"),
    ),
    Query(
        "incident_alerts",
        "The alerts an incident groups, in firing order, with what each fired on.",
        (Param("incident", "str", "Incident.id"),),
        """
MATCH (i:Incident {id: $incident})-[:GROUPS]->(a:Alert)
OPTIONAL MATCH (a)-[:FIRED_ON]->(e)
WITH a, collect({kind: toLower(head(labels(e))), name: e.name}) AS fired_on
RETURN a.fingerprint AS alert, a.name AS name, a.severity AS severity, a.status AS status, a.at AS at,
       a.ends_at AS ends_at, a.summary AS summary, [x IN fired_on WHERE x.name IS NOT NULL] AS fired_on
ORDER BY at, alert""",
        ("alert", "name", "severity", "status", "at", "ends_at", "summary", "fired_on"),
    ),
    Query(
        "changes_before_incident",
        "What changed in the $minutes before an incident started: Change nodes on the services its alerts "
        "fired on (directly, or through an instance or host), on the services those call or are called by, "
        "and on their instances and hosts. Newest first.",
        (Param("incident", "str", "Incident.id"),
         Param("minutes", "int", "look-back before Incident.started_at, in minutes", False, 30)),
        """
MATCH (inc:Incident {id: $incident})-[:GROUPS]->(:Alert)-[:FIRED_ON]->(e)
OPTIONAL MATCH (e)-[:INSTANCE_OF]->(s1:Service)
OPTIONAL MATCH (e)<-[:RUNS_ON]-(:Instance)-[:INSTANCE_OF]->(s2:Service)
WITH inc, collect(DISTINCT e) + collect(DISTINCT s1) + collect(DISTINCT s2) AS touched
UNWIND [x IN touched WHERE x:Service] AS alerted
OPTIONAL MATCH (alerted)-[:CALLS]-(near:Service)
WITH inc, collect(DISTINCT alerted) AS alerted, collect(DISTINCT near) AS near
UNWIND alerted + [n IN near WHERE NOT n IN alerted] AS s
OPTIONAL MATCH (s)<-[:INSTANCE_OF]-(inst:Instance)
OPTIONAL MATCH (inst)-[:RUNS_ON]->(h:Host)
WITH inc, alerted, s, [s] + collect(DISTINCT inst) + collect(DISTINCT h) AS entities
UNWIND entities AS target
MATCH (c:Change)-[:CHANGED]->(target)
WHERE c.at <= inc.started_at AND c.at >= inc.started_at - duration({minutes: $minutes})
WITH inc, c, collect(DISTINCT s.name) AS services, max(CASE WHEN s IN alerted THEN 1 ELSE 0 END) AS on_alerted
RETURN c.id AS change, c.kind AS kind, c.at AS at, c.service AS service, c.version AS version,
       c.description AS description, services AS near_services, on_alerted = 1 AS on_alerted_service,
       duration.inSeconds(c.at, inc.started_at).seconds / 60.0 AS minutes_before
ORDER BY at DESC, change""",
        ("change", "kind", "at", "service", "version", "description", "near_services", "on_alerted_service",
         "minutes_before"),
    ),
    # -- ops telemetry -------------------------------------------------------------------------------
    Query(
        "service_anomalies",
        "Metric anomalies in a window on a service, its instances and the hosts they run on, in time order.",
        (Param("service", "str", "Service.name"), *_since_until("Anomaly.at")),
        """
MATCH (s:Service {name: $service})
OPTIONAL MATCH (s)<-[:INSTANCE_OF]-(i:Instance)
OPTIONAL MATCH (i)-[:RUNS_ON]->(h:Host)
WITH s, collect(DISTINCT i) + collect(DISTINCT h) AS around
UNWIND [s] + around AS e
MATCH (a:Anomaly)-[:ON]->(e)
WHERE a.at >= $since AND a.at < $until
RETURN a.id AS anomaly, a.metric AS metric, a.at AS at, a.score AS score, a.z AS z, a.value AS value,
       a.baseline AS baseline, toLower(head(labels(e))) AS entity_kind, e.name AS entity
ORDER BY at, anomaly""",
        ("anomaly", "metric", "at", "score", "z", "value", "baseline", "entity_kind", "entity"),
    ),
    Query(
        "new_log_templates",
        "Log templates first seen in a window (never seen before it), with their counts and the services "
        "that emitted them.",
        (*_since_until("LogTemplate.first_seen"), _limit(100)),
        """
MATCH (t:LogTemplate)
WHERE t.last_seen >= $since AND t.first_seen >= $since AND t.first_seen < $until
OPTIONAL MATCH (s:Service)-[:EMITTED]->(t)
WITH t, collect(DISTINCT s.name) AS services
RETURN t.id AS template_id, t.template AS template, t.first_seen AS first_seen, t.last_seen AS last_seen,
       t.count AS count, t.errors AS errors, services
ORDER BY first_seen, template_id
LIMIT $limit""",
        ("template_id", "template", "first_seen", "last_seen", "count", "errors", "services"),
    ),
    Query(
        "service_calls",
        "Callers and callees of a service, one row per caller -> callee and minute bucket in a window, with "
        "the bucket's calls, errors, mean, p50 and p99 latency (CALLED).",
        (Param("service", "str", "Service.name"), *_since_until("CALLED.bucket")),
        """
MATCH (s:Service {name: $service})-[c:CALLED]-(:Service)
WHERE c.bucket >= $since AND c.bucket < $until
RETURN startNode(c).name AS caller, endNode(c).name AS callee, c.bucket AS bucket, c.calls AS calls,
       c.errors AS errors, CASE WHEN c.calls > 0 THEN c.duration_ms_sum / c.calls END AS mean_ms,
       c.p50_ms AS p50_ms, c.p99_ms AS p99_ms
ORDER BY bucket, caller, callee""",
        ("caller", "callee", "bucket", "calls", "errors", "mean_ms", "p50_ms", "p99_ms"),
    ),
    # -- findings ------------------------------------------------------------------------------------
    Query(
        "entity_findings",
        "Findings about an entity (a service, instance, host, change, alert, incident, account, transaction "
        "or ring), newest first; $label narrows the lookup when two labels share a key.",
        (Param("name", "str", "the entity's key (Service.name, Account.id, Alert.fingerprint, ...)"),
         Param("label", "str", "the entity's label, e.g. Account (default: any)", False), _limit(50)),
        _entity_lookup() + """
WITH e WHERE $label IS NULL OR toLower(head(labels(e))) = toLower($label)
MATCH (f:Finding)-[:ABOUT]->(e)
RETURN f.id AS finding, f.kind AS kind, f.at AS at, f.score AS score, f.title AS title, f.detector AS detector,
       head(labels(e)) AS label, f.evidence AS evidence
ORDER BY at DESC, finding
LIMIT $limit""",
        ("finding", "kind", "at", "score", "title", "detector", "label", "evidence"),
    ),
)

QUERY_BY_NAME: dict[str, Query] = {q.name: q for q in QUERIES}

# -- checks -----------------------------------------------------------------------------------------

#: ``(x:Label)``, ``x:Label`` in WHERE, ``[r:TYPE|TYPE]``: names after a colon or a bar that start upper-case.
_NAME_AFTER_COLON = re.compile(r"[:|]\s*([A-Z][A-Za-z0-9_]*)")
_PARAM = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


def names_used(cypher: str) -> set[str]:
    """The labels and relationship types a Cypher text names."""
    return set(_NAME_AFTER_COLON.findall(cypher))


def params_used(cypher: str) -> set[str]:
    return set(_PARAM.findall(cypher))


def check_query(query: Query) -> None:
    """Raise ``ValueError`` unless the query names only allow-listed labels and types, declares exactly the
    parameters it uses, and holds no literal strings (values travel as parameters)."""
    unknown = names_used(query.cypher) - set(NODE_SPECS) - set(REL_SPECS)
    if unknown:
        raise ValueError(f"{query.name}: names outside the allow-list: {sorted(unknown)}")
    declared = {p.name for p in query.params}
    used = params_used(query.cypher)
    if declared != used:
        raise ValueError(f"{query.name}: declared {sorted(declared)} but uses {sorted(used)}")
    if any(ch in query.cypher for ch in "'\"`"):
        raise ValueError(f"{query.name}: literal strings or quoted names in the Cypher text")


for _q in QUERIES:
    check_query(_q)


# -- parameters -------------------------------------------------------------------------------------


def utc(value: datetime) -> datetime:
    """The same instant with a fixed UTC offset (a naive time is read as UTC).

    Neo4j orders two DATETIMEs of the same instant by their zone when the zones differ, so
    ``2026-01-05T06:42:06Z >= 2026-01-05T06:42:06Z[UTC]`` is false. Stored times carry the offset ``Z``,
    while datetimes read back through the driver carry the named zone ``UTC``; passing those back as window
    bounds would silently drop the rows at the bound. Every datetime parameter is normalised here.
    """
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def parse_datetime(text: str) -> datetime:
    """ISO 8601 with an offset (``Z`` allowed); a naive time is read as UTC; ``now`` is the current time."""
    if text.strip().lower() == NOW:
        return datetime.now(UTC)
    return utc(datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00")))


def parse_value(param: Param, text: str) -> Any:
    """A command-line value as the parameter's type."""
    try:
        if param.type == "int":
            return int(text)
        if param.type == "float":
            return float(text)
        if param.type == "bool":
            lowered = text.strip().lower()
            if lowered not in {"true", "false", "1", "0", "yes", "no"}:
                raise ValueError("expected true or false")
            return lowered in {"true", "1", "yes"}
        if param.type == "datetime":
            return parse_datetime(text)
        if param.type == "list":
            return [part.strip() for part in text.split(",") if part.strip()]
        return text
    except ValueError as exc:
        raise ValueError(f"--param {param.name}: {exc}") from None


def bind(query: Query, values: Mapping[str, Any]) -> dict[str, Any]:
    """Every parameter of ``query``: the given values (text is parsed), then defaults; unknown or missing
    required parameters raise ``ValueError``."""
    unknown = set(values) - {p.name for p in query.params}
    if unknown:
        raise ValueError(f"{query.name} has no parameter(s) {sorted(unknown)}; "
                         f"it takes {[p.name for p in query.params]}")
    bound: dict[str, Any] = {}
    for p in query.params:
        if p.name in values:
            value = values[p.name]
            value = parse_value(p, value) if isinstance(value, str) and p.type != "str" else value
            bound[p.name] = utc(value) if isinstance(value, datetime) else value
        elif p.required:
            raise ValueError(f"{query.name} needs --param {p.name}=... ({p.description})")
        elif p.type == "datetime" and p.default == NOW:
            bound[p.name] = datetime.now(UTC)
        else:
            bound[p.name] = list(p.default) if isinstance(p.default, tuple) else p.default
    return bound


# -- running ----------------------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """A driver value as plain Python (temporal values become ``datetime``, nodes their properties)."""
    if hasattr(value, "to_native"):
        return value.to_native()
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if hasattr(value, "items") and hasattr(value, "labels"):  # a neo4j Node
        return {k: plain(v) for k, v in value.items()}
    return value


def jsonable(value: Any) -> Any:
    """A plain value as JSON-friendly (datetimes as ISO 8601)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {k: jsonable(v) for k, v in value.items()}
    return value


def run_query(driver: Any, name: str, values: Mapping[str, Any] | None = None,
              database: str | None = None) -> list[dict[str, Any]]:
    """Run a ready query in a read transaction; rows as dicts of plain values, in the query's column order."""
    query = QUERY_BY_NAME.get(name)
    if query is None:
        raise KeyError(f"no query {name!r}; known: {', '.join(QUERY_BY_NAME)}")
    params = bind(query, values or {})

    def work(tx: Any) -> list[dict[str, Any]]:
        return [{k: plain(record[k]) for k in record.keys()} for record in tx.run(query.cypher, params)]

    # Property-key notifications ("merged_into does not exist yet") are noise for a ready query.
    with driver.session(database=database, notifications_min_severity="OFF") as session:
        return session.execute_read(work)
