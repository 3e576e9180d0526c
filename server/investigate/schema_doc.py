"""The generated part of ``docs/graph-schema.md``: label and relationship tables from ``schema.graph``.

The document keeps its prose by hand and its tables between two markers, rewritten from the allow-list::

    python -m server.investigate.schema_doc            # rewrite the tables in docs/graph-schema.md
    python -m server.investigate.schema_doc --check    # exit 1 when the document is stale

A unit test runs the check, so a label or relationship type added to ``schema.graph`` without regenerating
the document fails the tests.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from schema.constraints import STATEMENTS
from schema.graph import NODES, REL_SPECS, RELS, window_basis
from server.investigate.queries import QUERIES

DOC = Path(__file__).resolve().parents[2] / "docs" / "graph-schema.md"
BEGIN = "<!-- BEGIN GENERATED: python -m server.investigate.schema_doc (do not edit by hand) -->"
END = "<!-- END GENERATED -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _codes(names: tuple[str, ...] | list[str]) -> str:
    return ", ".join(f"`{n}`" for n in names) if names else "—"


def _window(rel_type: str) -> str:
    """What a time window filters on (``schema.graph.window_basis``), read from either end."""
    for direction in ("out", "in"):
        basis, prop = window_basis(rel_type, direction)
        if basis == "rel":
            return f"its `{prop}`"
        if basis == "far":
            spec = REL_SPECS[rel_type]
            far = spec.ends if direction == "out" else spec.starts
            return f"the `{'/'.join(far)}` node's `{prop}`"
        if basis == "interval":
            return "`first_seen`..`last_seen` overlap"
    return "untimed"


#: Meanings of the relationship types whose spec has no description (shown in the document's table).
REL_MEANINGS: dict[str, str] = {
    "INSTANCE_OF": "The instance runs this service.",
    "RUNS_ON": "The instance runs on this host.",
    "CHANGED": "The change (deploy, config, scale, restart, rollback, feature flag) touched this entity.",
    "ON": "The anomaly was measured on this entity.",
    "FIRED_ON": "The alert fired on this entity.",
    "GROUPS": "Annotation: the incident groups this alert.",
    "SENT": "The account sent this transaction.",
    "TO": "The transaction paid this account.",
    "VIA": "The transaction went through this device, IP or card.",
    "USES": "The account used this identity (from identity events and from its transactions).",
    "AT": "The transaction paid this merchant.",
    "MEMBER_OF": "Annotation: the account is a member of the ring, with its `role`.",
    "EVIDENCE": "Annotation: the transaction is evidence for the ring.",
    "ABOUT": "Annotation: the finding is about this entity.",
}


def label_table() -> str:
    rows = ["| label | key (unique constraint) | time for windows and retention (range index) | other DATETIME "
            "properties | counters | meaning |",
            "| --- | --- | --- | --- | --- | --- |"]
    for spec in NODES:
        time_prop = f"`{spec.time_prop}`" if spec.time_prop else "none"
        others = tuple(t for t in spec.times if t != spec.time_prop)
        if spec.time_prop == "last_seen":  # an entity: kept as the earliest and latest time it was seen
            others = ("first_seen", *others)
        rows.append(f"| `{spec.label}` | `{spec.key}` | {time_prop} | {_codes(others)} | {_codes(spec.counters)} | "
                    f"{_cell(spec.description)} |")
    return "\n".join(rows)


def rel_table() -> str:
    rows = ["| type | from | to | key (parallel edges) | counters | first_seen / last_seen | time window on | "
            "meaning |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for spec in RELS:
        rows.append(
            f"| `{spec.type}` | {_codes(spec.starts)} | {_codes(spec.ends)} | {_codes(spec.key)} | "
            f"{_codes(spec.counters)} | {'yes' if spec.temporal else 'no'} | {_window(spec.type)} | "
            f"{_cell(spec.description or REL_MEANINGS.get(spec.type, ''))} |")
    return "\n".join(rows)


def query_table() -> str:
    rows = ["| query | parameters | answers |", "| --- | --- | --- |"]
    for q in QUERIES:
        params = ", ".join(f"`{p.name}`" + ("" if p.required else "?") for p in q.params)
        rows.append(f"| `{q.name}` | {params} | {_cell(q.description)} |")
    return "\n".join(rows)


def generated() -> str:
    """The whole generated block, markers included."""
    ddl = ";\n".join(STATEMENTS) + ";"
    return "\n\n".join([
        BEGIN,
        f"### Labels ({len(NODES)})",
        label_table(),
        f"### Relationship types ({len(RELS)})",
        rel_table(),
        f"### Ready queries ({len(QUERIES)})",
        "Run with `sleuth query NAME --param k=v`; `?` marks an optional parameter. The Cypher text is in "
        "`server/investigate/queries.py` (`sleuth query NAME --cypher` prints it).",
        query_table(),
        "### Constraints and indexes (`sleuth schema ddl`)",
        f"```cypher\n{ddl}\n```",
        END,
    ])


def render(document: str) -> str:
    """``document`` with its generated block replaced (appended when it has none)."""
    if BEGIN in document and END in document:
        head, rest = document.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        return head + generated() + tail
    return document.rstrip("\n") + "\n\n" + generated() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the document is stale")
    parser.add_argument("--doc", default=str(DOC))
    args = parser.parse_args(argv)
    path = Path(args.doc)
    current = path.read_text(encoding="utf-8") if path.is_file() else ""
    wanted = render(current)
    if args.check:
        if current != wanted:
            print(f"{path} is stale: run python -m server.investigate.schema_doc", file=sys.stderr)
            return 1
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(wanted, encoding="utf-8")
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
