"""What every benchmark on real servers starts with: the servers' addresses and a wiped, constrained store."""

from __future__ import annotations

from ingest.store.neo4j import Neo4jGraphStore, connect
from server.settings import Settings, load_settings


def server_settings(kafka: bool = True) -> Settings:
    """Settings naming the running servers (``scripts/services up``); exits with a clear message if not."""
    settings = load_settings()
    if not settings.neo4j_uri or (kafka and not settings.kafka_bootstrap):
        raise SystemExit(f"needs Neo4j{' and Kafka' if kafka else ''}: run scripts/services up")
    return settings


def wiped_store(settings: Settings) -> Neo4jGraphStore:
    """A Neo4j store with the schema applied and no data (benchmarks own the database while they run)."""
    store = Neo4jGraphStore(connect(str(settings.neo4j_uri)))
    store.apply_schema()
    store.clear()
    return store
