"""Cypher constraints and indexes for every natural key and time property (idempotent DDL).

Applied by ``sleuth schema apply`` and by the Neo4j store before its first write: a MERGE on a key without
a uniqueness constraint is both slow (label scan) and racy (two writers can create duplicates).
"""

from __future__ import annotations

from schema.graph import EXTRA_TIME_INDEXES, NODES, RELS


def _snake(name: str) -> str:
    """``LogTemplate`` -> ``log_template``; all-caps names (``IP``, ``RUNS_ON``) are just lowered."""
    if name.isupper() or "_" in name:
        return name.lower()
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(name))


def statements() -> list[str]:
    """Every constraint and index statement, in the order to apply them."""
    ddl = [
        f"CREATE CONSTRAINT {_snake(spec.label)}_{spec.key}_unique IF NOT EXISTS "
        f"FOR (n:{spec.label}) REQUIRE n.{spec.key} IS UNIQUE"
        for spec in NODES
    ]
    ddl += [
        f"CREATE RANGE INDEX {_snake(spec.label)}_{spec.time_prop} IF NOT EXISTS "
        f"FOR (n:{spec.label}) ON (n.{spec.time_prop})"
        for spec in NODES
        if spec.time_prop
    ]
    ddl += [
        f"CREATE RANGE INDEX {_snake(label)}_{prop} IF NOT EXISTS FOR (n:{label}) ON (n.{prop})"
        for label, prop in EXTRA_TIME_INDEXES
    ]
    ddl += [
        f"CREATE RANGE INDEX {_snake(spec.type)}_last_seen IF NOT EXISTS "
        f"FOR ()-[r:{spec.type}]-() ON (r.last_seen)"
        for spec in RELS
    ]
    return ddl


#: The statements as a constant for documentation and tests.
STATEMENTS: tuple[str, ...] = tuple(statements())
