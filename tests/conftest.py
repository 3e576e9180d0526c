"""Shared fixtures: real Neo4j and Kafka from ``scripts/services up``, wiped between tests.

Servers are found through ``SLEUTH_SERVICES_DIR`` / ``.services/state.json`` (written by the services
script) or ``SLEUTH_NEO4J_URI`` / ``SLEUTH_KAFKA_BOOTSTRAP``. Under ``CI=true`` a test that needs a server
*fails* when it is missing; elsewhere it is skipped with the reason shown.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _recorded() -> dict[str, dict[str, object]]:
    directory = Path(os.environ.get("SLEUTH_SERVICES_DIR") or REPO / ".services")
    path = directory / "state.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _missing(what: str) -> None:
    message = f"{what} is not running: start it with `scripts/services up`"
    if IN_CI:
        pytest.fail(message + " (CI=true: tests that need servers never skip)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def neo4j_uri() -> str:
    uri = os.environ.get("SLEUTH_NEO4J_URI") or _recorded().get("neo4j", {}).get("uri")
    if not uri:
        _missing("Neo4j")
    return str(uri)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    bootstrap = os.environ.get("SLEUTH_KAFKA_BOOTSTRAP") or _recorded().get("kafka", {}).get("bootstrap")
    if not bootstrap:
        _missing("Kafka")
    host, _, port = str(bootstrap).rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        _missing(f"Kafka at {bootstrap} ({exc})")
    return str(bootstrap)


@pytest.fixture(scope="session")
def neo4j_driver(neo4j_uri: str) -> Iterator[object]:
    from ingest.errors import StoreUnavailable
    from ingest.store.neo4j import connect

    try:
        driver = connect(neo4j_uri, connection_timeout=5)
    except StoreUnavailable as exc:
        _missing(f"Neo4j at {neo4j_uri} ({exc})")
    yield driver
    driver.close()


@pytest.fixture
def neo4j_store(neo4j_driver: object) -> Iterator[object]:
    """A Neo4j store with the schema applied and no data (community edition has one database: wipe it)."""
    from ingest.store.neo4j import Neo4jGraphStore

    store = Neo4jGraphStore(neo4j_driver)  # type: ignore[arg-type]
    store.apply_schema()
    store.clear()
    yield store
    store.clear()


@pytest.fixture
def topic_prefix() -> str:
    """A unique topic prefix per test, so tests never see each other's records."""
    return f"t{uuid.uuid4().hex[:10]}"
