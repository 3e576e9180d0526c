"""Settings, read once at the process edge and passed down as typed objects.

Sources, highest priority first: command-line flags (applied by the CLI), environment variables
(``SLEUTH_...``; nested groups with ``__``, e.g. ``SLEUTH_RULES__LARGE_AMOUNT=5000``), secret files
(``SLEUTH_SECRETS_DIR``, one file per secret named like the variable, e.g. ``neo4j_password``), the
services file written by ``scripts/services up`` (``.services/env``), defaults.

Secrets are ``SecretStr``: they print as ``**********`` and are never logged.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from ingest.enrich.metrics import MetricScorerConfig
from ingest.mapping import MappingConfig


class Topics(BaseModel):
    """Kafka topic names."""

    logs: str = "sleuth.logs"
    metrics: str = "sleuth.metrics"
    spans: str = "sleuth.spans"
    changes: str = "sleuth.changes"
    alerts: str = "sleuth.alerts"
    transactions: str = "sleuth.transactions"
    identities: str = "sleuth.identities"
    dlq: str = "sleuth.dlq"
    findings: str = "sleuth.findings"

    def inputs(self) -> list[str]:
        """The topics the pipeline consumes."""
        return [self.logs, self.metrics, self.spans, self.changes, self.alerts, self.transactions, self.identities]

    def for_event_type(self, event_type: str) -> str:
        """The topic an event of a type is produced to."""
        mapping = {
            "log": self.logs,
            "metric": self.metrics,
            "span": self.spans,
            "topology": self.spans,
            "change": self.changes,
            "alert": self.alerts,
            "transaction": self.transactions,
            "identity": self.identities,
        }
        return mapping[event_type]


class KafkaSettings(BaseModel):
    """Consumer and producer tuning."""

    group_id: str = "sleuthgraph"
    topics: Topics = Field(default_factory=Topics)
    partitions: int = 4
    #: A micro-batch per partition closes at this many records or this age, whichever comes first.
    batch_max_records: int = 5000
    batch_max_ms: int = 250
    #: Records a single record may be; larger ones go to the dead-letter topic.
    max_record_bytes: int = 1_048_576
    #: Pause fetching when this many decoded records wait for the store.
    max_buffered_records: int = 50_000


class RulesSettings(BaseModel):
    """Thresholds of the built-in rules (the rulesets read them; no literals in rule bodies)."""

    large_amount: float = 10_000.0
    anomaly_score: float = 6.0


class GrpcSettings(BaseModel):
    """The gRPC server."""

    host: str = "127.0.0.1"
    port: int = 50051
    token: SecretStr | None = None
    max_message_bytes: int = 4 * 1024 * 1024


class Settings(BaseSettings):
    """Everything sleuthgraph reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="SLEUTH_",
        env_nested_delimiter="__",
        extra="ignore",
        secrets_dir=os.environ.get("SLEUTH_SECRETS_DIR") or None,
    )

    neo4j_uri: str | None = None
    neo4j_user: str | None = None
    neo4j_password: SecretStr | None = None
    neo4j_database: str | None = None
    #: How long the driver retries a transaction itself; longer outages go to the pipeline's
    #: pause-and-retry loop, which keeps the consumer in its group.
    neo4j_retry_s: float = 5.0
    kafka_bootstrap: str | None = None
    state_dir: Path = Path(".sleuth-state")
    #: Seconds of tolerated clock skew: events further in the future are rejected.
    max_future_seconds: float = 300.0
    #: Prometheus metrics endpoint of ``sleuth serve`` (0 disables it).
    metrics_port: int = 9464
    #: Retention: graph data last seen longer ago than this is deleted, checked every interval.
    retention_days: float = 30.0
    retention_interval_s: float = 3600.0
    #: Root-cause model checkpoint (the shipped one by default).
    rca_checkpoint: Path = Path(__file__).resolve().parents[1] / "gnn" / "checkpoints" / "rca.pt"
    #: Transaction scoring model checkpoint (the shipped one by default).
    fraud_checkpoint: Path = Path(__file__).resolve().parents[1] / "gnn" / "checkpoints" / "fraud.pt"
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    rules: RulesSettings = Field(default_factory=RulesSettings)
    grpc: GrpcSettings = Field(default_factory=GrpcSettings)
    mapping: MappingConfig = Field(default_factory=MappingConfig)
    metrics_scorer: MetricScorerConfig = Field(default_factory=MetricScorerConfig)


def services_env(repo_root: Path | None = None) -> dict[str, str]:
    """Addresses recorded by ``scripts/services up`` (``SLEUTH_SERVICES_DIR`` or ``.services/env``)."""
    directory = os.environ.get("SLEUTH_SERVICES_DIR")
    path = Path(directory) / "env" if directory else (repo_root or Path.cwd()) / ".services" / "env"
    found: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.removeprefix("export ").strip()
            if "=" in line and not line.startswith("#"):
                name, value = line.split("=", 1)
                found[name.strip()] = value.strip().strip("'\"")
    return found


def load_settings(**overrides: object) -> Settings:
    """Read settings: environment first, then the services file for addresses not set, then overrides."""
    settings = Settings()
    recorded = services_env()
    updates: dict[str, object] = {}
    if settings.neo4j_uri is None and "SLEUTH_NEO4J_URI" in recorded:
        updates["neo4j_uri"] = recorded["SLEUTH_NEO4J_URI"]
    if settings.kafka_bootstrap is None and "SLEUTH_KAFKA_BOOTSTRAP" in recorded:
        updates["kafka_bootstrap"] = recorded["SLEUTH_KAFKA_BOOTSTRAP"]
    updates.update({k: v for k, v in overrides.items() if v is not None})
    return settings.model_copy(update=updates)
