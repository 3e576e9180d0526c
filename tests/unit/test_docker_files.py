"""Static checks of the deployment kit in docker/: no docker engine, no Neo4j, no Kafka.

What is checked against the code, so that the kit cannot drift from it:

- compose: the services, the image versions (Neo4j 5.26, Kafka 4.x in KRaft mode), healthchecks, the
  SLEUTH_* variables (each one is a real Settings field and lands there), secrets (files only, and the
  names pydantic-settings actually reads);
- Prometheus scrapes the port sleuthgraph serves metrics on;
- Grafana: every metric in the dashboard's PromQL is registered by the code (with the suffixes its type
  really exposes, and only labels it has), every panel has the provisioned datasource and targets;
- the Dockerfile: a small parser, non-root user, ports, entrypoint, COPY sources inside the build context,
  torch from the CPU index with the pins of pyproject.toml;
- the container health probe, against an in-process gRPC health service on loopback.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, SecretStr

from server.settings import GrpcSettings, Settings

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "sleuthgraph.json"
PROMETHEUS = DOCKER / "prometheus" / "prometheus.yml"
PROVISIONING = DOCKER / "grafana" / "provisioning"

#: Read at import time by ``Settings.model_config`` rather than a field; checked on its own below.
SECRETS_DIR_VARIABLE = "SLEUTH_SECRETS_DIR"


# -- loading --------------------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def _service(name: str) -> dict[str, Any]:
    return _compose()["services"][name]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as strings (compose accepts a mapping or a list of KEY=VALUE)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def _image(service: dict[str, Any]) -> tuple[str, str]:
    repository, _, tag = service["image"].rpartition(":")
    return repository, tag


def _service_secrets(service: dict[str, Any]) -> dict[str, str]:
    """``{target file name in /run/secrets: top-level secret name}`` of one service."""
    mounted = {}
    for entry in service.get("secrets") or []:
        if isinstance(entry, str):
            mounted[entry] = entry
        else:
            mounted[entry.get("target", entry["source"])] = entry["source"]
    return mounted


def _volumes(service: dict[str, Any]) -> dict[str, str]:
    """``{container path: host source}`` of a service's short-syntax volumes."""
    found = {}
    for entry in service.get("volumes") or []:
        source, target, *_ = entry.split(":")
        found[target] = source
    return found


# -- a small Dockerfile parser ----------------------------------------------------------------------

INSTRUCTIONS = {"ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
                "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR"}


@dataclass
class Instruction:
    name: str
    args: str
    line: int


@dataclass
class Stage:
    image: str
    alias: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, name: str) -> list[Instruction]:
        return [i for i in self.instructions if i.name == name]


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with their line continuations joined; comments and blank lines dropped."""
    found: list[Instruction] = []
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # also inside a continuation, as docker does
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        pending += line
        name, _, args = pending.partition(" ")
        if name.upper() not in INSTRUCTIONS:
            raise ValueError(f"line {start}: unknown instruction {name!r}")
        found.append(Instruction(name.upper(), args.strip(), start))
        pending = ""
    if pending:
        raise ValueError(f"line {start}: the file ends inside a line continuation")
    return found


def stages(instructions: list[Instruction]) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the build stages."""
    global_args: dict[str, str] = {}
    built: list[Stage] = []
    for instruction in instructions:
        if instruction.name == "FROM":
            words = [w for w in instruction.args.split() if not w.startswith("--")]
            alias = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            built.append(Stage(substitute(words[0], global_args), alias))
        elif not built:
            if instruction.name != "ARG":
                raise ValueError(f"line {instruction.line}: only ARG may come before the first FROM")
            name, _, default = instruction.args.partition("=")
            global_args[name] = default
        else:
            built[-1].instructions.append(instruction)
    return global_args, built


def substitute(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values.get(m.group(1) or m.group(2), m.group(0)), text)


def stage_args(stage: Stage) -> dict[str, str]:
    found = {}
    for instruction in stage.all("ARG"):
        name, _, default = instruction.args.partition("=")
        found[name] = default
    return found


def stage_env(stage: Stage) -> dict[str, str]:
    found = {}
    for instruction in stage.all("ENV"):
        for word in shlex.split(instruction.args):
            name, _, value = word.partition("=")
            found[name] = value
    return found


def copies(stage: Stage) -> list[tuple[dict[str, str], list[str], str]]:
    """``(flags, sources, destination)`` of each COPY/ADD."""
    found = []
    for instruction in stage.instructions:
        if instruction.name not in {"COPY", "ADD"}:
            continue
        words = json.loads(instruction.args) if instruction.args.startswith("[") else instruction.args.split()
        flags = dict(w[2:].partition("=")[::2] for w in words if w.startswith("--"))
        paths = [w for w in words if not w.startswith("--")]
        found.append((flags, paths[:-1], paths[-1]))
    return found


def _dockerfile() -> tuple[dict[str, str], list[Stage]]:
    return stages(parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8")))


# -- .dockerignore --------------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's patterns: Go's filepath.Match (``*`` and ``?`` stop at ``/``) plus ``**``."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignore(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        line = line.removeprefix("!").strip().strip("/")
        rules.append((negated, _pattern_regex(line)))
    return rules


def excluded(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether a context path is left out: the last rule matching it or one of its parents decides."""
    parts = PurePosixPath(path).parts
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    decision = False
    for negated, regex in rules:
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            decision = not negated
    return decision


def _context_rules() -> list[tuple[bool, re.Pattern[str]]]:
    return dockerignore((REPO / ".dockerignore").read_text(encoding="utf-8"))


# -- PromQL and the metrics registry ---------------------------------------------------------------

_PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
                    "unless", "offset", "inf", "nan"}
_GROUPING = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)"
#: Series Prometheus makes itself for every target, with the target labels.
PROMETHEUS_SERIES = {"up": {"job", "instance"}}
TARGET_LABELS = {"job", "instance"}
#: The sample names a family of each type exposes (text format).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}


def promql(expr: str) -> tuple[set[str], set[str]]:
    """The metric names and the label names an expression uses."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # strings
    labels: set[str] = set()
    for body in re.findall(r"\{([^}]*)\}", text):
        labels |= set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", body))
    text = re.sub(r"\{[^}]*\}", " ", text)
    for body in re.findall(_GROUPING, text):
        labels |= {name.strip() for name in body.split(",") if name.strip()}
    text = re.sub(_GROUPING, " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables
    names = set()
    for match in re.finditer(r"(?<![\w:.])([A-Za-z_:][\w:]*)", text):
        if text[match.end():].lstrip().startswith("("):
            continue  # a function or an aggregation
        if match.group(1).lower() not in _PROMQL_KEYWORDS:
            names.add(match.group(1))
    return names, labels


def registered_series() -> dict[str, tuple[str, set[str]]]:
    """``{sample name: (family, label names)}`` of the default registry, which ``sleuth serve`` exposes,
    after importing what registers on it."""
    import gnn.rca.engine  # noqa: F401  (root-cause analysis time)
    import ingest.detectors  # noqa: F401  (fraud scoring)
    import rules.engine  # noqa: F401  (rule facts, firings, evaluation time)
    import server.app  # noqa: F401  (gRPC request metrics)
    import server.hub  # noqa: F401  (Watch drops)
    from ingest.metrics import default_metrics

    default_metrics()  # the pipeline's metrics, on the default registry as in `sleuth serve`
    from prometheus_client import REGISTRY

    from server.pipeline_process import CHILD_PROCESS_PREFIX

    series: dict[str, tuple[str, set[str]]] = {}
    for family in REGISTRY.collect():
        collector = REGISTRY._names_to_collectors.get(family.name)  # noqa: SLF001 - label names are not public
        labels = set(getattr(collector, "_labelnames", ())) | {k for s in family.samples for k in s.labels}
        # The pipeline process's own process families are served renamed (server.pipeline_process.MergedMetrics).
        names = [family.name]
        if family.name.startswith("process_"):
            names.append(CHILD_PROCESS_PREFIX + family.name)
        for name in names:
            for suffix in SUFFIXES[family.type]:
                series[name + suffix] = (name, labels)
    return series


# -- compose ----------------------------------------------------------------------------------------


def test_compose_has_the_services() -> None:
    services = _compose()["services"]
    assert {"neo4j", "kafka", "sleuthgraph", "prometheus", "grafana"} <= set(services)
    for name in ("neo4j", "kafka", "prometheus", "grafana"):
        assert services[name].get("image"), f"{name} has no image"
    for name in ("neo4j", "kafka"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_neo4j_is_5_26_with_auth_from_a_secret() -> None:
    neo4j = _service("neo4j")
    repository, tag = _image(neo4j)
    assert repository == "neo4j"
    assert tag.split("-")[0].split(".")[:2] == ["5", "26"], tag
    env = _environment(neo4j)
    assert "NEO4J_AUTH" not in env, "the password belongs in a secret file, not the environment"
    auth_file = PurePosixPath(env["NEO4J_AUTH_FILE"])
    assert auth_file.parent == PurePosixPath("/run/secrets")
    assert auth_file.name in _service_secrets(neo4j)
    assert auth_file.as_posix() in " ".join(neo4j["healthcheck"]["test"]), "the healthcheck logs in with it"


def test_kafka_is_4x_in_kraft_mode() -> None:
    kafka = _service("kafka")
    repository, tag = _image(kafka)
    assert repository == "apache/kafka"
    assert tag.split(".")[0] == "4", tag
    env = _environment(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "KAFKA_ZOOKEEPER_CONNECT" not in env
    listeners = dict(item.split("://") for item in env["KAFKA_LISTENERS"].split(","))  # {name: host:port}
    protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) <= set(protocols), "every listener needs a security protocol"
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert controller in listeners
    # The single voter is this node, at its controller listener.
    node, _, address = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].partition("@")
    assert node == env["KAFKA_NODE_ID"]
    host, _, port = address.rpartition(":")
    assert port == listeners[controller].rpartition(":")[2]
    assert host in {kafka.get("hostname"), "kafka"}
    assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16, "a cluster id is a base64 UUID"
    # sleuthgraph bootstraps from the listener advertised to containers.
    advertised = dict(item.split("://") for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert set(advertised) <= set(listeners)
    assert _environment(_service("sleuthgraph"))["SLEUTH_KAFKA_BOOTSTRAP"] == advertised["PLAINTEXT"]
    assert "kafka-broker-api-versions" in " ".join(kafka["healthcheck"]["test"])


def test_sleuthgraph_is_built_here_and_waits_for_healthy_servers() -> None:
    sleuth = _service("sleuthgraph")
    context = (COMPOSE.parent / sleuth["build"]["context"]).resolve()
    assert context == REPO
    assert (context / sleuth["build"]["dockerfile"]).resolve() == DOCKERFILE
    for dependency in ("neo4j", "kafka"):
        assert sleuth["depends_on"][dependency]["condition"] == "service_healthy"
    env = _environment(sleuth)
    assert env["SLEUTH_GRPC__HOST"] == "0.0.0.0"
    assert env["SLEUTH_NEO4J_URI"] == "bolt://neo4j:7687"
    published = {entry.rsplit(":", 1)[1] for entry in sleuth["ports"]}
    assert {str(GrpcSettings.model_fields["port"].default), str(Settings.model_fields["metrics_port"].default)} \
        <= published


def _sleuth_variables() -> dict[str, str]:
    """SLEUTH_* from the image (Dockerfile ENV) overridden by compose, as the container sees them."""
    _, built = _dockerfile()
    variables = {k: v for k, v in stage_env(built[-1]).items() if k.startswith("SLEUTH_")}
    variables.update({k: v for k, v in _environment(_service("sleuthgraph")).items() if k.startswith("SLEUTH_")})
    return variables


def _field(settings: BaseModel, variable: str) -> Any:
    value: Any = settings
    for part in variable.removeprefix("SLEUTH_").lower().split("__"):
        assert part in type(value).model_fields, f"{variable}: {type(value).__name__} has no field {part!r}"
        value = getattr(value, part)
    return value


def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SLEUTH_"):
            monkeypatch.delenv(name)


def test_every_sleuth_variable_is_a_settings_field_and_lands(monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    variables = _sleuth_variables()
    assert {"SLEUTH_NEO4J_URI", "SLEUTH_KAFKA_BOOTSTRAP", "SLEUTH_GRPC__HOST", SECRETS_DIR_VARIABLE} <= set(variables)
    _clean_environment(monkeypatch)
    for name, value in variables.items():
        if name != SECRETS_DIR_VARIABLE:
            monkeypatch.setenv(name, value)
    settings = Settings(_secrets_dir=str(tmp_path))  # type: ignore[call-arg]
    for name, value in variables.items():
        if name == SECRETS_DIR_VARIABLE:
            continue
        landed = _field(settings, name)
        assert str(landed) == value or landed == type(landed)(value), f"{name}={value!r} gave {landed!r}"


def test_an_unknown_variable_would_be_caught() -> None:
    with pytest.raises(AssertionError, match="no field 'hots'"):
        _field(Settings(), "SLEUTH_GRPC__HOTS")


def test_no_secret_in_plain_environment() -> None:
    for name, service in _compose()["services"].items():
        for variable in _environment(service):
            if re.search(r"PASSWORD|TOKEN|SECRET|_AUTH$", variable) and not variable.endswith("_FILE") \
                    and variable != SECRETS_DIR_VARIABLE:
                pytest.fail(f"{name}: {variable} puts a secret in the environment; mount a secret file")


def _make_secrets(directory: Path) -> dict[str, str]:
    result = subprocess.run(["bash", str(DOCKER / "make-secrets"), str(directory)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return {path.name: path.read_text(encoding="utf-8") for path in directory.iterdir()}


def _mount(service: str, written: Path, run: Path) -> Path:
    """Lay the service's secrets out as compose mounts them in /run/secrets."""
    declared = _compose()["secrets"]
    run.mkdir(parents=True, exist_ok=True)
    for target, source in _service_secrets(_service(service)).items():
        shutil.copy(written / PurePosixPath(declared[source]["file"]).name, run / target)
    return run


def test_make_secrets_writes_every_declared_secret_consistently(tmp_path: Path) -> None:
    written = _make_secrets(tmp_path / "secrets")
    declared = _compose()["secrets"]
    assert {PurePosixPath(entry["file"]).name for entry in declared.values()} == set(written)
    for entry in declared.values():
        assert PurePosixPath(entry["file"]).parent == PurePosixPath("secrets"), "all under docker/secrets"
    assert written["neo4j_auth"] == "neo4j/" + written["neo4j_password"]
    assert len(written["neo4j_password"]) >= 8, "Neo4j refuses passwords shorter than 8 characters"
    assert json.loads(written["grpc.json"])["token"]
    for name, service in _compose()["services"].items():
        assert set(_service_secrets(service).values()) <= set(declared), name
    # Running it again keeps what is there.
    assert _make_secrets(tmp_path / "secrets") == written
    assert "secrets/" in (DOCKER / ".gitignore").read_text(encoding="utf-8").split()


def test_secret_files_reach_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    written = _make_secrets(tmp_path / "secrets")
    run = _mount("sleuthgraph", tmp_path / "secrets", tmp_path / "run")
    _clean_environment(monkeypatch)
    monkeypatch.setenv("SLEUTH_GRPC__HOST", "0.0.0.0")
    settings = Settings(_secrets_dir=str(run))  # type: ignore[call-arg]
    token = json.loads(written["grpc.json"])["token"]
    assert isinstance(settings.neo4j_password, SecretStr) and isinstance(settings.grpc.token, SecretStr)
    assert settings.neo4j_password.get_secret_value() == written["neo4j_password"]
    assert settings.grpc.token.get_secret_value() == token
    assert settings.grpc.host == "0.0.0.0", "the secret file and the variables merge"
    assert token not in repr(settings) and written["neo4j_password"] not in repr(settings)


def test_secrets_dir_variable_is_read_at_startup(tmp_path: Path) -> None:
    """SLEUTH_SECRETS_DIR is read when server.settings is imported, so this needs a fresh process."""
    written = _make_secrets(tmp_path / "secrets")
    run = _mount("sleuthgraph", tmp_path / "secrets", tmp_path / "run")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLEUTH_")}
    env.update(_sleuth_variables())
    assert env[SECRETS_DIR_VARIABLE] == "/run/secrets"
    env[SECRETS_DIR_VARIABLE] = str(run)
    code = ("import json; from server.settings import Settings; s = Settings(); "
            "print(json.dumps([s.neo4j_password.get_secret_value(), s.grpc.token.get_secret_value(), s.grpc.host]))")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [
        written["neo4j_password"], json.loads(written["grpc.json"])["token"], "0.0.0.0"]


# -- Prometheus and Grafana -------------------------------------------------------------------------


def test_prometheus_scrapes_the_metrics_port() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    targets = [target for job in config["scrape_configs"] if job["job_name"] == "sleuthgraph"
               for group in job["static_configs"] for target in group["targets"]]
    assert targets, "no sleuthgraph scrape job"
    default_port = Settings.model_fields["metrics_port"].default
    for target in targets:
        host, _, port = target.rpartition(":")
        assert host in _compose()["services"]
        assert int(port) == default_port == int(_sleuth_variables().get("SLEUTH_METRICS_PORT", default_port))
    prometheus = _service("prometheus")
    config_flag = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    source = _volumes(prometheus)[config_flag.partition("=")[2]]
    assert (COMPOSE.parent / source).resolve() == PROMETHEUS


def _dashboard_panels() -> Iterator[dict[str, Any]]:
    for panel in json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows keep their panels inside


def _expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    found = [t["expr"] for p in _dashboard_panels() for t in p.get("targets", [])]
    found += [v["query"] if isinstance(v["query"], str) else v["query"]["query"]
              for v in dashboard.get("templating", {}).get("list", []) if v.get("type") == "query"]
    return found


def test_helpers_find_metric_names_and_labels() -> None:
    names, labels = promql('histogram_quantile(0.99, sum by (le, method) (rate(x_bucket{code!="OK"}[5m]))) '
                           "/ on (job) group_left up offset 5m")
    assert names == {"x_bucket", "up"}
    assert labels == {"le", "method", "code", "job"}
    series = registered_series()
    assert series["sleuth_grpc_requests_total"] == ("sleuth_grpc_requests", {"method", "code"})
    assert "sleuth_grpc_requests" not in series, "a counter is only queryable with _total"
    assert "sleuth_ingest_consumer_lag_total" not in series, "a gauge has no _total"
    assert "sleuth_ingest_write_seconds_bucket" in series and "sleuth_ingest_write_seconds" not in series


def test_dashboard_uses_only_registered_metrics_and_their_labels() -> None:
    series = registered_series()
    expressions = _expressions()
    assert expressions
    for expr in expressions:
        names, labels = promql(expr)
        assert names, f"no metric in {expr!r}"
        allowed = set(TARGET_LABELS)
        for name in names:
            if name in PROMETHEUS_SERIES:
                allowed |= PROMETHEUS_SERIES[name]
                continue
            assert name in series, f"{name} (in {expr!r}) is not registered by the code"
            allowed |= series[name][1] | ({"le"} if name.endswith("_bucket") else set())
        assert labels <= allowed, f"{expr!r} uses labels {sorted(labels - allowed)} its metrics do not have"


def test_dashboard_charts_ingest_and_grpc() -> None:
    series = registered_series()
    charted = {series[name][0] for expr in _expressions() for name in promql(expr)[0] if name in series}
    assert {
        "sleuth_ingest_consumed", "sleuth_ingest_written", "sleuth_ingest_rejected", "sleuth_ingest_batch_rows",
        "sleuth_ingest_write_seconds", "sleuth_ingest_consumer_lag", "sleuth_ingest_store_retries",
        "sleuth_findings", "sleuth_grpc_requests", "sleuth_grpc_request_seconds",
    } <= charted


def _provisioned_datasources() -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted((PROVISIONING / "datasources").glob("*.y*ml")):
        for source in yaml.safe_load(path.read_text(encoding="utf-8"))["datasources"]:
            found[source["uid"]] = source
    return found


def test_dashboard_panels_have_a_datasource_and_targets() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] and dashboard["title"]
    datasources = _provisioned_datasources()
    panels = list(_dashboard_panels())
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    charts = [p for p in panels if p["type"] != "row"]
    assert charts
    for panel in charts:
        assert panel.get("datasource", {}).get("uid") in datasources, panel["title"]
        assert datasources[panel["datasource"]["uid"]]["type"] == panel["datasource"]["type"]
        targets = panel.get("targets") or []
        assert targets, f"{panel['title']} has no targets"
        assert len({t["refId"] for t in targets}) == len(targets), f"{panel['title']}: refIds repeat"
        for target in targets:
            assert target.get("expr", "").strip(), f"{panel['title']}: empty query"
            assert target.get("datasource", panel["datasource"]) == panel["datasource"]
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])


def test_grafana_provisioning_matches_the_compose_mounts() -> None:
    grafana = _service("grafana")
    mounts = {(COMPOSE.parent / source).resolve(): target for target, source in _volumes(grafana).items()
              if source.startswith(".")}
    assert mounts[PROVISIONING] == "/etc/grafana/provisioning"
    dashboards_dir = mounts[DASHBOARD.parent]
    providers = [p for path in sorted((PROVISIONING / "dashboards").glob("*.y*ml"))
                 for p in yaml.safe_load(path.read_text(encoding="utf-8"))["providers"]]
    assert any(p["type"] == "file" and p["options"]["path"] == dashboards_dir for p in providers)
    home = PurePosixPath(_environment(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert home.parent == PurePosixPath(dashboards_dir) and (DASHBOARD.parent / home.name).is_file()
    for source in _provisioned_datasources().values():
        host = re.match(r"https?://([^:/]+)", source["url"]).group(1)  # type: ignore[union-attr]
        assert host in _compose()["services"], source["url"]
    password_file = PurePosixPath(_environment(grafana)["GF_SECURITY_ADMIN_PASSWORD__FILE"])
    assert password_file.name in _service_secrets(grafana)


# -- Dockerfile -------------------------------------------------------------------------------------


def test_the_parser_joins_continuations_and_rejects_nonsense() -> None:
    parsed = parse_dockerfile("# c\nFROM a AS b\nRUN one \\\n  # inside\n    two\nUSER 1\n")
    assert [(i.name, i.args, i.line) for i in parsed] == [("FROM", "a AS b", 2), ("RUN", "one two", 3),
                                                          ("USER", "1", 6)]
    with pytest.raises(ValueError, match="unknown instruction"):
        parse_dockerfile("FROM a\nRUNN x\n")
    with pytest.raises(ValueError, match="continuation"):
        parse_dockerfile("FROM a\nRUN x \\\n")


def test_dockerfile_builds_on_python_311_slim_in_stages() -> None:
    _, built = _dockerfile()
    assert built, "no FROM"
    aliases = {stage.alias for stage in built}
    for stage in built:
        assert stage.image == "python:3.11-slim" or stage.image in aliases, stage.image
    assert built[-1].image == "python:3.11-slim"
    for flags, _, _ in copies(built[-1]):
        assert flags.get("from", built[0].alias) in aliases, "COPY --from names a stage of this file"


def test_dockerfile_runs_sleuth_serve_as_non_root() -> None:
    _, built = _dockerfile()
    runtime = built[-1]
    users = runtime.all("USER")
    assert users, "the runtime stage has no USER: it would run as root"
    user = users[-1].args.split(":")[0]
    assert user not in {"root", "0"}
    assert json.loads(runtime.all("ENTRYPOINT")[-1].args) == ["sleuth"], "exec form: SIGTERM reaches sleuth"
    assert json.loads(runtime.all("CMD")[-1].args) == ["serve"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert "sleuth" in scripts
    assert stage_env(runtime)["PATH"].startswith("/opt/sleuth/bin:")
    assert ("build", ["/opt/sleuth"], "/opt/sleuth") in [(f.get("from"), s, d) for f, s, d in copies(runtime)]


def test_dockerfile_exposes_the_grpc_and_metrics_ports() -> None:
    _, built = _dockerfile()
    exposed = {int(word.split("/")[0]) for i in built[-1].all("EXPOSE") for word in i.args.split()}
    assert {GrpcSettings.model_fields["port"].default, Settings.model_fields["metrics_port"].default} <= exposed
    assert {50051, 9464, 9095} <= exposed


def test_dockerfile_healthcheck_runs_the_shipped_probe() -> None:
    _, built = _dockerfile()
    runtime = built[-1]
    check = runtime.all("HEALTHCHECK")
    assert check, "no HEALTHCHECK"
    options, _, command = check[-1].args.partition("CMD ")
    assert "--start-period=" in options, "the server needs time to start (imports, Neo4j schema)"
    probe = json.loads(command)
    shipped = {dest: sources for flags, sources, dest in copies(runtime) if "from" not in flags}
    assert probe[-1] in shipped, f"{probe[-1]} is not copied into the image"
    assert shipped[probe[-1]] == ["docker/healthcheck.py"]


def test_dockerfile_copies_exist_inside_the_build_context() -> None:
    _, built = _dockerfile()
    rules = _context_rules()
    copied = set()
    for stage in built:
        for flags, sources, _ in copies(stage):
            if "from" in flags:
                continue
            for source in sources:
                path = REPO / source
                assert path.exists(), f"COPY {source}: not in the repository"
                assert not excluded(source, rules), f"COPY {source}: left out by .dockerignore"
                if path.is_dir():
                    kept = [p for p in path.rglob("*.py") if not excluded(p.relative_to(REPO).as_posix(), rules)]
                    assert kept, f"COPY {source}: .dockerignore leaves nothing of it"
                copied.add(source.rstrip("/"))
    packages = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"][
        "packages"]["find"]["include"]
    assert {p.rstrip("*").rstrip(".") for p in packages} <= copied, "every package of pyproject.toml is copied"
    assert {"pyproject.toml", "README.md"} <= copied, "pip install . reads both"


def test_dockerignore_keeps_local_state_and_secrets_out() -> None:
    rules = _context_rules()
    for path in (".git/HEAD", ".venv/bin/python", ".services/env", ".sleuth-state/templates.bin",
                 "docker/secrets/neo4j_password", "server/__pycache__/app.cpython-311.pyc",
                 "sleuthgraph.egg-info/PKG-INFO", "tests/unit/test_docker_files.py"):
        assert excluded(path, rules), path
    for path in ("server/app.py", "gnn/checkpoints/rca.pt", "schema/proto/sleuth/v1/sleuth.proto", "pyproject.toml"):
        assert not excluded(path, rules), path


def _requirements() -> dict[str, str]:
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    return {re.match(r"[A-Za-z0-9_.-]+", d).group(0).lower(): d.replace(" ", "") for d in dependencies}  # type: ignore[union-attr]


def test_dockerfile_installs_cpu_torch_with_the_pins_of_pyproject() -> None:
    global_args, built = _dockerfile()
    requirements = _requirements()
    commands = [substitute(c.strip(), {**global_args, **stage_args(stage)})
                for stage in built for i in stage.all("RUN") for c in i.args.split("&&")]
    torch = [c for c in commands if re.search(r'["\s]torch[<>=!~]', c)]
    assert torch, "torch is not installed explicitly"
    for command in torch:
        assert "--index-url https://download.pytorch.org/whl/cpu" in command.replace('"', ""), command
        assert f'"{requirements["torch"]}"' in command, f"torch pin differs from pyproject.toml: {command}"
    geometric = [c for c in commands if "torch-geometric" in c]
    assert geometric and all(f'"{requirements["torch-geometric"]}"' in c for c in geometric)
    assert any(re.search(r'pip install \(?"?\.(\[[\w,]+\])?"?(\s|\)|$)', c) for c in commands), "no pip install ."
    assert any("torch.version.cuda is None" in c for c in commands), "the build checks torch is the CPU build"


# -- the health probe -------------------------------------------------------------------------------


def _probe(env_extra: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLEUTH_")}
    env.update(env_extra)
    return subprocess.run([sys.executable, str(DOCKER / "healthcheck.py"), *args], env=env, capture_output=True,
                          text=True, timeout=60)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_health_probe_follows_the_grpc_health_service() -> None:
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        serving = _probe({"SLEUTH_GRPC__PORT": str(port)})
        assert serving.returncode == 0, serving.stderr
        servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        draining = _probe({"SLEUTH_GRPC__PORT": str(port)})
        assert draining.returncode == 1 and "NOT_SERVING" in draining.stderr
        tls = _probe({"SLEUTH_GRPC__TLS_CERT": "/run/secrets/cert.pem"}, f"127.0.0.1:{port}")
        assert tls.returncode == 0, tls.stderr
    finally:
        server.stop(0)
    closed = _free_port()
    assert _probe({}, f"127.0.0.1:{closed}").returncode == 1
    assert _probe({"SLEUTH_GRPC__TLS_CERT": "/run/secrets/cert.pem"}, f"127.0.0.1:{closed}").returncode == 1
