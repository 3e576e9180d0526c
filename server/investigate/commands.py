"""The investigator subcommands of ``sleuth``: ``queries``, ``query``, ``explain`` and ``rca``.

They read the configured Neo4j (``SLEUTH_NEO4J_URI``, ``.services/env`` or ``--neo4j-uri``); the embedded
store only lives inside ``sleuth demo``. ``server.cli.build_parser`` registers them through
:func:`add_investigator_commands`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from server.investigate.queries import QUERIES, QUERY_BY_NAME, bind, jsonable, parse_datetime, run_query

CommandFactory = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]


def _fail(message: str) -> int:
    print(f"sleuth: {message}", file=sys.stderr)
    return 2


@contextmanager
def _neo4j(args: argparse.Namespace) -> Iterator[tuple[Any, Any, Any]]:
    """(settings, driver, store) for the configured Neo4j; the driver is closed afterwards."""
    from ingest.errors import StoreUnavailable
    from ingest.store.neo4j import Neo4jGraphStore, connect
    from server.settings import load_settings

    settings = load_settings(neo4j_uri=getattr(args, "neo4j_uri", None))
    if not settings.neo4j_uri:
        raise SystemExit("sleuth: no Neo4j configured: set SLEUTH_NEO4J_URI or run scripts/services up")
    password = settings.neo4j_password.get_secret_value() if settings.neo4j_password else None
    try:
        driver = connect(settings.neo4j_uri, settings.neo4j_user, password, connection_timeout=10)
    except StoreUnavailable as exc:
        raise SystemExit(f"sleuth: {exc}") from None
    try:
        yield settings, driver, Neo4jGraphStore(driver, settings.neo4j_database)
    finally:
        driver.close()


def _format(value: Any, width: int = 60) -> str:
    value = jsonable(value)
    if value is None:
        text = ""
    elif isinstance(value, float):
        text = f"{value:.4f}".rstrip("0").rstrip(".")
    elif isinstance(value, list | dict):
        text = json.dumps(value, separators=(",", ":"))
    else:
        text = str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def print_table(columns: list[str], rows: list[dict[str, Any]]) -> None:
    cells = [[_format(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


# -- queries / query --------------------------------------------------------------------------------


def cmd_queries(args: argparse.Namespace) -> int:
    """List the ready queries with their parameters."""
    if args.json:
        print(json.dumps([{"name": q.name, "description": q.description, "columns": list(q.columns),
                           "params": [{"name": p.name, "type": p.type, "required": p.required,
                                       "default": jsonable(list(p.default) if isinstance(p.default, tuple)
                                                           else p.default),
                                       "description": p.description} for p in q.params]}
                          for q in QUERIES], indent=2))
        return 0
    for q in QUERIES:
        print(q.name)
        print(f"    {q.description}")
        for p in q.params:
            extra = "required" if p.required else f"default {p.default!r}" if p.default is not None else "optional"
            print(f"    --param {p.name}=<{p.type}>  {p.description} ({extra})")
    return 0


def _param_values(pairs: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"--param {pair!r}: expected NAME=VALUE")
        values[name.strip()] = value
    return values


def cmd_query(args: argparse.Namespace) -> int:
    """Run one ready query against the configured Neo4j."""
    query = QUERY_BY_NAME.get(args.name)
    if query is None:
        return _fail(f"no query {args.name!r}; `sleuth queries` lists them")
    if args.cypher:
        print(query.cypher.strip())
        return 0
    try:
        values = _param_values(args.param or [])
        bound = bind(query, values)
    except ValueError as exc:
        return _fail(str(exc))
    with _neo4j(args) as (settings, driver, _):
        rows = run_query(driver, query.name, bound, settings.neo4j_database)
    if args.json:
        print(json.dumps({"query": query.name, "params": jsonable(bound), "count": len(rows),
                          "rows": jsonable(rows)}, default=str))
    else:
        print_table(list(query.columns), rows)
        print(f"({len(rows)} rows)")
    return 0


# -- explain ----------------------------------------------------------------------------------------


def explain_incident(driver: Any, store: Any, incident: str, database: str | None = None) -> dict[str, Any] | None:
    """Everything the incident picture needs (None when there is no such incident)."""
    from schema.store import NodeRef

    node = store.get_node(NodeRef("Incident", incident))
    if node is None:
        return None
    return {"incident": {"id": incident, **node.props},
            "causes": run_query(driver, "incident_root_cause", {"incident": incident}, database),
            "alerts": run_query(driver, "incident_alerts", {"incident": incident}, database)}


def explain_ring(driver: Any, store: Any, ring: str, database: str | None = None) -> dict[str, Any] | None:
    """Everything the ring picture needs (None when there is no such ring)."""
    from schema.store import NodeRef

    node = store.get_node(NodeRef("FraudRing", ring))
    if node is None:
        return None
    return {"ring": {"id": ring, **node.props},
            "members": run_query(driver, "ring_members", {"ring": ring}, database),
            "trail": run_query(driver, "ring_money_trail", {"ring": ring}, database)}


def cmd_explain(args: argparse.Namespace) -> int:
    """Explain an incident (root causes, path, alerts) or a fraud ring (members, identities, money trail)."""
    from server.investigate.pictures import incident_diagram, ring_diagram
    from server.investigate.svg import render_svg

    with _neo4j(args) as (settings, driver, store):
        if args.what == "incident":
            data = explain_incident(driver, store, args.id, settings.neo4j_database)
        else:
            data = explain_ring(driver, store, args.id, settings.neo4j_database)
    if data is None:
        return _fail(f"no {args.what} {args.id!r} in the graph")
    if args.what == "incident":
        diagram = incident_diagram(data["incident"], data["causes"], data["alerts"])
    else:
        diagram = ring_diagram(data["ring"], data["members"], data["trail"])
    if args.svg:
        Path(args.svg).write_text(render_svg(diagram), encoding="utf-8")
    if args.json:
        print(json.dumps(jsonable(data), default=str))
    else:
        print(diagram.title)
        print(f"  {diagram.subtitle}")
        if args.what == "incident":
            for c in data["causes"]:
                print(f"  {c['rank']}. {c['kind']} {c['name']}  score {_format(c['score'])}  path "
                      + " -> ".join(c.get("path") or []))
        else:
            for m in data["members"]:
                print(f"  {m['account']}  {m['role']}  risk {_format(m['risk_score']) or '-'}  shares "
                      + _format([i["id"] for i in m["shared_identities"]]))
        for line in diagram.notes:
            print(f"  {line}")
        if args.svg:
            print(f"  picture: {args.svg}")
    return 0


# -- rca ------------------------------------------------------------------------------------------


def cmd_rca(args: argparse.Namespace) -> int:
    """Run the RCA engine against the configured Neo4j and print (and draw) the ranked causes."""
    from gnn.rca.engine import METHODS
    from schema.store import NodeRef, TimeWindow
    from server.host import build_rca_engine
    from server.investigate.pictures import rca_diagram
    from server.investigate.svg import render_svg

    try:
        since = parse_datetime(args.since) if args.since else None
        until = parse_datetime(args.until) if args.until else None
    except ValueError as exc:
        return _fail(f"--since/--until: {exc}")
    if args.service and (since is None or until is None):
        return _fail("--service needs --since and --until")
    if since and until and since >= until:
        return _fail("--since must be before --until")
    if not 1 <= args.top_k <= 50:
        return _fail("--top-k must be between 1 and 50")
    if args.method and args.method not in METHODS:
        return _fail(f"--method must be one of {', '.join(METHODS)}")
    window = TimeWindow(since, until) if since or until else None
    with _neo4j(args) as (settings, _, store):
        if args.alert:
            anchor, label = NodeRef("Alert", args.alert), f"alert {args.alert}"
        elif args.incident:
            alerts = store.expand([NodeRef("Incident", args.incident)], "GROUPS", "out", limit=10_000)
            if not alerts:
                return _fail(f"no incident {args.incident!r} with alerts in the graph")
            # The incident's first alert anchors the analysis, as the incident detector does.
            never = datetime.max.replace(tzinfo=UTC)
            first = min(alerts, key=lambda h: (h.node.props.get("at") or never, h.node.key))
            anchor, label = first.node.ref, f"incident {args.incident}"
        else:
            anchor, label = NodeRef("Service", args.service), f"service {args.service}"
        if store.get_node(anchor) is None:
            return _fail(f"no {anchor.label} {anchor.key!r} in the graph")
        engine = build_rca_engine(store, settings)
        result = engine.analyze(anchor, window, args.top_k, method=args.method or None)
    if args.svg:
        Path(args.svg).write_text(render_svg(rca_diagram(label, result)), encoding="utf-8")
    if args.json:
        print(json.dumps({"anchor": label, "method": result.method, "symptom": result.symptom,
                          "explanation": result.reason, "latency_ms": round(result.latency_ms, 1),
                          "candidates": [{"rank": c.rank, "kind": c.kind, "name": c.name, "score": c.score,
                                          "path": list(c.path), "evidence": c.evidence} for c in result.candidates]},
                         default=str))
    else:
        print(f"root causes for {label} (method {result.method}, symptom {result.symptom or '?'})")
        if not result.candidates:
            print(f"  none: {result.reason}")
        for c in result.candidates:
            print(f"  {c.rank}. {c.kind} {c.name}  score {c.score:.4f}  path {' -> '.join(c.path)}")
        if args.svg:
            print(f"  picture: {args.svg}")
    return 0


# -- registration ---------------------------------------------------------------------------------


def add_investigator_commands(command: CommandFactory) -> None:
    """Register the subcommands with ``sleuth``'s parser (``command`` is ``build_parser``'s factory)."""
    p = command("queries", cmd_queries, "list the ready investigator queries and their parameters")
    p.add_argument("--json", action="store_true")

    p = command("query", cmd_query, "run a ready investigator query against the configured Neo4j")
    p.add_argument("name", help="a query name (see `sleuth queries`)")
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="a parameter (repeat); times are ISO 8601, lists comma-separated")
    p.add_argument("--json", action="store_true", help="print one JSON object with the rows")
    p.add_argument("--cypher", action="store_true", help="print the Cypher text instead of running it")

    p = command("explain", cmd_explain, "explain an incident or a fraud ring from the graph (optionally as SVG)")
    p.add_argument("what", choices=["incident", "ring"])
    p.add_argument("id", help="Incident.id or FraudRing.id")
    p.add_argument("--svg", metavar="FILE", help="draw the picture into FILE")
    p.add_argument("--json", action="store_true", help="print the data behind the picture as JSON")

    p = command("rca", cmd_rca, "rank root causes with the RCA engine over the configured Neo4j")
    anchor = p.add_mutually_exclusive_group(required=True)
    anchor.add_argument("--alert", help="an Alert fingerprint")
    anchor.add_argument("--incident", help="an Incident id (analysed from its first alert)")
    anchor.add_argument("--service", help="a service (needs --since and --until)")
    p.add_argument("--since", help="window start, ISO 8601")
    p.add_argument("--until", help="window end, ISO 8601")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--method", default="", help="gnn (default), rules, baro, pagerank, earliest or logshift")
    p.add_argument("--svg", metavar="FILE", help="draw the ranked causes and the propagation path into FILE")
    p.add_argument("--json", action="store_true")
