"""Settings, read once at the process edge and passed down as typed objects.

Sources, highest priority first: command-line flags (applied by the CLI), environment variables
(``SLEUTH_...``; nested groups with ``__``, e.g. ``SLEUTH_RULES__LARGE_AMOUNT=5000``), secret files
(``SLEUTH_SECRETS_DIR``, one file per secret named like the variable, e.g. ``sleuth_neo4j_password``; a
nested group is one JSON file such as ``sleuth_grpc``), the services file written by ``scripts/services up``
(``.services/env``), defaults.

Secrets are ``SecretStr``: they print as ``**********`` and are never logged.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gnn.rca.metric_groups import check_rules
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
    #: Names this worker's Kafka clients (shown in group descriptions and broker logs).
    client_id: str = "sleuth"
    topics: Topics = Field(default_factory=Topics)
    partitions: int = 4
    #: A micro-batch per partition closes at this many records or this age, whichever comes first.
    batch_max_records: int = 5000
    batch_max_ms: int = 250
    #: Records a single record may be; larger ones go to the dead-letter topic.
    max_record_bytes: int = 1_048_576
    #: Pause fetching when this many decoded records wait for the store.
    max_buffered_records: int = 50_000
    #: A worker that stops heartbeating for this long leaves the group and its partitions move to the
    #: others (the client's default; lower it for faster failover, the broker allows 6000 or more).
    session_timeout_ms: int = 45_000


class RulesSettings(BaseModel):
    """Thresholds of the built-in rules (the rulesets read them; no literals in rule bodies)."""

    large_amount: float = 10_000.0
    anomaly_score: float = 6.0


class IncidentSettings(BaseModel):
    """Incidents from streaming alerts (``ingest.incidents``)."""

    #: First analysis once event time is this many seconds past an incident's first alert (negative: none
    #: before the storm settles).
    first_analysis_s: float = 0.0
    #: Analyse an incident (again) once event time is this many seconds past its newest alert.
    settle_s: float = 60.0
    #: Root-cause candidates written back per incident.
    top_k: int = 5
    #: A partition that delivered nothing for this many wall-clock seconds stops holding event time back.
    idle_partition_s: float = 30.0
    #: Event time (the slowest partition's) stays at most this many seconds behind the newest event seen.
    max_partition_lag_s: float = 600.0


class RcaSettings(BaseModel):
    """Root-cause ranking knobs that are not part of the model (``gnn.rca``)."""

    #: Weight of the deepest log template mix shift added to the model's scores (``RcaConfig.shift_weight``).
    #: (Literal defaults: this module does not import torch; a unit test keeps them equal to the engine's.)
    shift_weight: float = Field(default=64.0, ge=0)
    #: Minutes of a node's own log history its template mix is compared with (0: no shift read).
    shift_history_minutes: int = Field(default=120, ge=0)
    #: The compared period starts this many minutes before the alert or reference time.
    shift_lead_minutes: int = Field(default=1, ge=0)
    #: Leave earlier incidents' periods out of that history (``FeatureConfig.shift_skip_incidents``).
    shift_skip_incidents: bool = True
    #: Add the share of new error-template lines to the shift (``FeatureConfig.shift_novel_errors``).
    shift_novel_errors: bool = True
    #: Read what a metric measures from its name (``FeatureConfig.read_metric_names``, see
    #: ``gnn.rca.metric_groups``).
    read_metric_names: bool = True
    #: Metric group rules of one's own, tried before the words of the name: ``[["regex", "group"], ...]`` (JSON in
    #: the environment), a group being latency, error, cpu, memory, up, other or none.
    metric_groups: list[tuple[str, str]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _metric_groups_valid(self) -> RcaSettings:
        check_rules(self.metric_groups)
        return self


class GrpcSettings(BaseModel):
    """The gRPC server."""

    host: str = "127.0.0.1"
    port: int = 50051
    token: SecretStr | None = None
    max_message_bytes: int = 4 * 1024 * 1024
    #: TLS: PEM certificate chain and private key; both set means the port speaks TLS only.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: mTLS: PEM bundle of the CAs that sign client certificates; set means a client certificate is required.
    tls_client_ca: Path | None = None

    @model_validator(mode="after")
    def _tls_complete(self) -> GrpcSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("grpc.tls_cert and grpc.tls_key go together: set both or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("grpc.tls_client_ca needs grpc.tls_cert and grpc.tls_key (mTLS is TLS first)")
        return self


class WebhookSettings(BaseModel):
    """The Alertmanager-compatible HTTP endpoint (webhook_config v4 payloads) of ``sleuth serve`` and ``demo``."""

    host: str = "127.0.0.1"
    #: 0 turns the endpoint off.
    port: int = 9095
    path: str = "/api/v1/alerts/alertmanager"
    #: Required as ``Authorization: Bearer <token>``; when unset, the gRPC token (if any) is required instead.
    token: SecretStr | None = None
    #: Larger request bodies are refused with 413 before they are read.
    max_body_bytes: int = 4 * 1024 * 1024
    #: How long a request waits for the broker to acknowledge its alerts before answering 503.
    ack_timeout_s: float = 30.0


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
    #: ``sleuth serve`` runs its pipeline in a process of its own, so inline ``ScoreTransaction`` calls do not
    #: wait for the pipeline thread's GIL (see server/pipeline_process.py); false: a thread of the gRPC process.
    pipeline_process: bool = True
    #: Retention: graph data last seen longer ago than this is deleted, checked every interval.
    retention_days: float = 30.0
    retention_interval_s: float = 3600.0
    #: Root-cause model checkpoint (the shipped one by default).
    rca_checkpoint: Path = Path(__file__).resolve().parents[1] / "gnn" / "checkpoints" / "rca.pt"
    #: Threads torch may use per process. One by default: the models are small, and on a shared machine
    #: more threads contend (a 948-node RCA forward took 600-2000 ms with 2 threads, 85-180 ms with 1).
    torch_threads: int = 1
    #: Young-generation threshold of Python's garbage collector (0: Python's default of 700). An RCA analysis
    #: allocates many short-lived objects: with the defaults, collections took about 95 ms of a 480 ms analysis
    #: (300 services, bench/rca.py's data), 3 ms with this threshold and the start-up objects frozen.
    gc_threshold: int = 50_000
    #: Transaction scoring model checkpoint (the shipped one by default).
    fraud_checkpoint: Path = Path(__file__).resolve().parents[1] / "gnn" / "checkpoints" / "fraud.pt"
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    rules: RulesSettings = Field(default_factory=RulesSettings)
    incidents: IncidentSettings = Field(default_factory=IncidentSettings)
    rca: RcaSettings = Field(default_factory=RcaSettings)
    grpc: GrpcSettings = Field(default_factory=GrpcSettings)
    webhook: WebhookSettings = Field(default_factory=WebhookSettings)
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
