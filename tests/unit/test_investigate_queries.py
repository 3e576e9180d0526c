"""The ready queries and the schema document: allow-list only, values as parameters, parameter binding, and a
schema document that lists every label and relationship type and is regenerated from ``schema.graph``."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from schema.graph import NODE_SPECS, NODES, REL_SPECS, RELS
from server.cli import build_parser
from server.cli import main as sleuth
from server.investigate import schema_doc
from server.investigate.queries import (
    QUERIES,
    QUERY_BY_NAME,
    Param,
    Query,
    bind,
    check_query,
    jsonable,
    names_used,
    params_used,
    parse_datetime,
)

REPO = Path(__file__).resolve().parents[2]


def test_there_are_at_least_twelve_queries_with_unique_names() -> None:
    assert len(QUERIES) >= 12
    assert len(QUERY_BY_NAME) == len(QUERIES)
    for wanted in ("ring_members", "ring_money_trail", "incident_root_cause", "changes_before_incident",
                   "riskiest_accounts", "incident_alerts", "service_anomalies", "new_log_templates", "service_calls",
                   "accounts_sharing_identity", "account_transactions", "entity_findings", "top_incidents"):
        assert wanted in QUERY_BY_NAME


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: q.name)
def test_each_query_uses_the_allow_list_and_parameters_only(query: Query) -> None:
    check_query(query)  # raises on a foreign name, an undeclared parameter or a literal string
    used = names_used(query.cypher)
    assert used, "a query names at least one label"
    assert used <= set(NODE_SPECS) | set(REL_SPECS)
    assert params_used(query.cypher) == {p.name for p in query.params}
    assert query.description and query.columns
    for column in query.columns:  # every declared column is returned under that name
        assert re.search(rf"\b{column}\b", query.cypher), column


def test_the_checker_catches_what_it_should() -> None:
    good = QUERY_BY_NAME["ring_members"]
    with pytest.raises(ValueError, match="allow-list"):
        check_query(Query("x", "d", good.params, good.cypher.replace("FraudRing", "Ring"), good.columns))
    with pytest.raises(ValueError, match="declared"):
        check_query(Query("x", "d", (), good.cypher, good.columns))
    with pytest.raises(ValueError, match="literal"):
        check_query(Query("x", "d", good.params, good.cypher.replace("$ring", "$ring + 'x'"), good.columns))
    with pytest.raises(ValueError, match="allow-list"):
        check_query(Query("x", "d", good.params, good.cypher.replace("[:USES]", "[:KNOWS]"), good.columns))


def test_names_used_sees_labels_types_and_label_predicates() -> None:
    text = "MATCH (a:Account)-[:SENT|TO]-(t:Transaction) WHERE x:Service AND {k: $v} RETURN a"
    assert names_used(text) == {"Account", "SENT", "TO", "Transaction", "Service"}


def test_bind_parses_text_applies_defaults_and_rejects_unknowns() -> None:
    q = QUERY_BY_NAME["riskiest_accounts"]
    bound = bind(q, {"now": "2026-03-05T10:00:00Z", "minutes": "30"})
    assert bound == {"now": datetime(2026, 3, 5, 10, tzinfo=UTC), "minutes": 30, "limit": 20}
    before = datetime.now(UTC)
    assert bind(q, {})["now"] >= before  # the default is the current time
    with pytest.raises(ValueError, match="no parameter"):
        bind(q, {"hours": "1"})
    with pytest.raises(ValueError, match="needs --param ring"):
        bind(QUERY_BY_NAME["ring_members"], {})
    with pytest.raises(ValueError, match="minutes"):
        bind(q, {"minutes": "an hour"})
    kinds = bind(QUERY_BY_NAME["accounts_sharing_identity"], {"account": "a1", "kinds": "Device, IP"})
    assert kinds["kinds"] == ["Device", "IP"]
    assert bind(QUERY_BY_NAME["accounts_sharing_identity"], {"account": "a1"})["kinds"] == ["Device", "Phone"]
    assert bind(QUERY_BY_NAME["incident_root_cause"], {"incident": "i", "history": "yes"})["history"] is True


def test_datetime_parameters_are_normalised_to_a_fixed_utc_offset() -> None:
    # Neo4j orders equal instants by zone, so a named zone (what the driver hands back) must not leak in.
    import pytz  # installed with the neo4j driver

    named = datetime(2026, 1, 5, 6, 42, tzinfo=pytz.UTC)
    bound = bind(QUERY_BY_NAME["top_incidents"], {"since": named})["since"]
    assert bound == named and bound.tzinfo is UTC
    east = datetime(2026, 1, 5, 8, 42, tzinfo=timezone(timedelta(hours=2)))
    assert bind(QUERY_BY_NAME["top_incidents"], {"since": east})["since"].hour == 6
    assert parse_datetime("2026-01-05T06:42:00") == datetime(2026, 1, 5, 6, 42, tzinfo=UTC)
    assert parse_datetime("2026-01-05T06:42:00+01:00").tzinfo is UTC


def test_param_declarations_are_checked() -> None:
    with pytest.raises(ValueError):
        Param("x", "blob", "d")
    with pytest.raises(ValueError):
        Param("x", "int", "d", required=True, default=3)


def test_jsonable_turns_times_into_text() -> None:
    at = datetime(2026, 1, 5, tzinfo=UTC)
    assert jsonable({"a": [at, {"b": at}], "c": 1}) == {"a": [at.isoformat(), {"b": at.isoformat()}], "c": 1}


# -- the schema document ------------------------------------------------------------------------------


def test_the_schema_document_lists_every_label_and_relationship_type() -> None:
    doc = (REPO / "docs" / "graph-schema.md").read_text(encoding="utf-8")
    for spec in NODES:
        assert f"| `{spec.label}` | `{spec.key}` |" in doc, spec.label
    for rel in RELS:
        assert f"| `{rel.type}` |" in doc, rel.type
    for q in QUERIES:
        assert f"`{q.name}`" in doc


def test_the_schema_document_is_regenerated_from_the_allow_list() -> None:
    doc = (REPO / "docs" / "graph-schema.md").read_text(encoding="utf-8")
    assert schema_doc.render(doc) == doc, "stale: run python -m server.investigate.schema_doc"
    assert schema_doc.main(["--check", "--doc", str(REPO / "docs" / "graph-schema.md")]) == 0


def test_the_generator_replaces_only_its_block(tmp_path: Path) -> None:
    path = tmp_path / "doc.md"
    path.write_text("# Title\n\nprose before\n", encoding="utf-8")
    assert schema_doc.main(["--check", "--doc", str(path)]) == 1
    assert schema_doc.main(["--doc", str(path)]) == 0
    first = path.read_text(encoding="utf-8")
    assert first.startswith("# Title\n\nprose before\n") and schema_doc.BEGIN in first
    stale = first.replace("| `Service` |", "| `Svc` |") + "\nprose after\n"
    path.write_text(stale, encoding="utf-8")
    assert schema_doc.main(["--check", "--doc", str(path)]) == 1
    assert schema_doc.main(["--doc", str(path)]) == 0
    again = path.read_text(encoding="utf-8")
    assert again == first + "\nprose after\n"


# -- the commands (no database needed) ------------------------------------------------------------------


def test_sleuth_queries_lists_every_query(capsys: pytest.CaptureFixture[str]) -> None:
    assert sleuth(["queries"]) == 0
    out = capsys.readouterr().out
    for q in QUERIES:
        assert q.name in out
    assert sleuth(["queries", "--json"]) == 0
    import json

    listed = json.loads(capsys.readouterr().out)
    assert [q["name"] for q in listed] == [q.name for q in QUERIES]
    assert {p["name"] for p in listed[0]["params"]} == {p.name for p in QUERIES[0].params}


def test_sleuth_query_prints_cypher_and_rejects_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert sleuth(["query", "ring_money_trail", "--cypher"]) == 0
    assert capsys.readouterr().out.strip() == QUERY_BY_NAME["ring_money_trail"].cypher.strip()
    assert sleuth(["query", "no_such_query"]) == 2
    assert "no query" in capsys.readouterr().err
    assert sleuth(["query", "ring_members", "--param", "ring"]) == 2
    assert "NAME=VALUE" in capsys.readouterr().err


def test_the_parser_has_the_investigator_commands() -> None:
    parser = build_parser()
    args = parser.parse_args(["rca", "--incident", "inc-1", "--top-k", "3", "--svg", "x.svg", "--json"])
    assert (args.incident, args.top_k, args.svg, args.json) == ("inc-1", 3, "x.svg", True)
    args = parser.parse_args(["explain", "ring", "ring-1", "--svg", "r.svg"])
    assert (args.what, args.id, args.svg) == ("ring", "ring-1", "r.svg")
    with pytest.raises(SystemExit):
        parser.parse_args(["rca", "--alert", "a", "--incident", "i"])  # one anchor only
