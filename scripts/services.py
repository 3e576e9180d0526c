#!/usr/bin/env python3
"""Run a real Neo4j 5.26 and a real Kafka 4.1 on loopback, without docker.

Both servers run from jars that Maven resolves into a cache folder, each on its own classpath (their netty,
jackson and log4j versions differ). The servers are detached processes in their own process groups, so they
outlive this script; what runs where is recorded in ``<state dir>/state.json`` and ``<state dir>/env``.

Verbs::

    fetch  [neo4j|kafka]          resolve the pinned jars (skipped when the cache already has them)
    up     [neo4j|kafka]          fetch if needed, start, wait until ready; idempotent
    down   [neo4j|kafka] [--wipe] stop (SIGTERM to the group, SIGKILL after 30 s); --wipe deletes data too
    status                        exit 0 when both run and answer, 3 otherwise
    env                           print the env file (``export SLEUTH_NEO4J_URI=...`` lines)

Environment: ``SLEUTH_CACHE`` (default ``~/.cache/sleuthgraph``; jars go under ``jars/``) and
``SLEUTH_SERVICES_DIR`` (default ``<repo>/.services``). Ports are picked free once and then kept in
``state.json``, so a restarted server comes back on the same port with the same data.

Standard library only: this runs before any project virtual environment exists.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple, TypedDict

SCRIPT_DIR = Path(__file__).resolve().parent
REPO_ROOT = SCRIPT_DIR.parent
MAVEN_DIR = SCRIPT_DIR / "maven"
POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}

SERVICE_NAMES = ("neo4j", "kafka")
HOST = "127.0.0.1"
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0
POLL_S = 0.25
LOG_TAIL_LINES = 40
MARKER_NAME = ".pinned"  # lists the pom's coordinates; a cache folder without a matching one is refetched
EXIT_NOT_RUNNING = 3
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # a 10 MB poison record must still reach the dead-letter topic

# Neo4j 5 on Java 17 reflects into these JDK packages, as its own launcher script does. Tried here
# without them, 5.26.30 still starts but runs degraded: the page cache logs "Reflection access to
# java.nio.DirectByteBuffer is not available, using fallback mode" and every transaction-log file logs
# "Incorrect file descriptor" from its native accessor (java.io / sun.nio.ch closed).
NEO4J_JVM_FLAGS = (
    "-Xms512m",
    "-Xmx1g",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Djdk.nio.maxCachedBufferSize=1024",
    "-XX:+ExitOnOutOfMemoryError",
)
KAFKA_JVM_FLAGS = (
    "-Xms256m",
    "-Xmx1g",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-Djava.awt.headless=true",
    "-XX:+ExitOnOutOfMemoryError",
)

KAFKA_LOG4J2 = """\
# Written by scripts/services.py. The broker logs to stdout, which goes to console.log next to this file.
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.stdout.ref = STDOUT
logger.statechange.name = state.change.logger
logger.statechange.level = warn
logger.request.name = kafka.request.logger
logger.request.level = warn
"""


class ServiceError(RuntimeError):
    """A server could not be fetched, started or stopped; the message says why and what the log said."""


class Record(TypedDict, total=False):
    """One server's entry in ``state.json``; kept after ``down`` so a restart reuses ports and data."""

    uri: str  # neo4j only
    bootstrap: str  # kafka only
    port: int
    controller_port: int  # kafka only
    pid: int | None  # None while stopped
    log: str
    home: str
    cluster_id: str  # kafka only


State = dict[str, Record]


class Service(NamedTuple):
    """What differs between the two servers: how to configure, launch and probe one.

    A NamedTuple rather than a dataclass so the module also loads through
    ``importlib.util.spec_from_file_location`` without being registered in ``sys.modules`` first.
    """

    name: str
    main_class: str
    ready_marker: str  # a line fragment the server logs once it serves clients
    new_record: Callable[[Path], Record]
    prepare: Callable[[Record, Path, Path], list[str]]  # (record, home, jars) -> java argv
    probe: Callable[[int], bool]


# ----------------------------------------------------------------------------------------------- paths


def cache_root() -> Path:
    """Folder for resolved jars; shared by all checkouts on the machine."""
    return Path(os.environ.get("SLEUTH_CACHE") or Path.home() / ".cache" / "sleuthgraph")


def jars_dir(name: str) -> Path:
    """Folder holding one server's classpath."""
    return cache_root() / "jars" / name


def state_root() -> Path:
    """Folder for configs, data, logs, ``state.json`` and ``env``."""
    return Path(os.environ.get("SLEUTH_SERVICES_DIR") or REPO_ROOT / ".services")


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder``, so parallel callers (pytest workers) do not both fetch into
    the same cache or start two servers on the same state."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


# ----------------------------------------------------------------------------------------------- fetch


def pinned_coordinates(pom: Path) -> list[str]:
    """``group:artifact:version`` of every dependency the pom pins, in order."""
    root = ET.parse(pom).getroot()
    found = []
    for dep in root.findall("m:dependencies/m:dependency", POM_NS):
        parts = [
            dep.findtext(f"m:{tag}", default="", namespaces=POM_NS) for tag in ("groupId", "artifactId", "version")
        ]
        found.append(":".join(parts))
    return found


def jars_are_current(name: str) -> bool:
    """True when the cache holds jars resolved from the pom's current pins."""
    marker = jars_dir(name) / MARKER_NAME
    wanted = "\n".join(pinned_coordinates(MAVEN_DIR / name / "pom.xml"))
    return marker.is_file() and marker.read_text().strip() == wanted


def resolve_jars(name: str) -> float:
    """Copy one server's dependency tree into the cache; returns the seconds it took.

    Maven writes into a temporary sibling folder that replaces the old one only when complete, so an
    interrupted fetch never leaves a half-filled classpath that a marker claims is whole.
    """
    if shutil.which("mvn") is None:
        raise ServiceError("mvn not found on PATH; install Maven 3.8+ (and Java 17) first")
    pom = MAVEN_DIR / name / "pom.xml"
    target = jars_dir(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{name}.", dir=target.parent))
    started = time.monotonic()
    cmd = [
        "mvn",
        "-q",
        "-B",
        "-Dstyle.color=never",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={staging}",
        "-DincludeScope=runtime",
        # Two artifacts may share artifactId-version.jar; the group prefix keeps both on the classpath.
        "-Dmdep.prependGroupId=true",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise ServiceError(f"maven could not resolve {name} jars:\n{result.stdout}{result.stderr}")
    (staging / MARKER_NAME).write_text("\n".join(pinned_coordinates(pom)) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return time.monotonic() - started


def fetch(names: tuple[str, ...]) -> None:
    """Make sure each named server's jars are cached, printing what was done and how long it took."""
    with folder_lock(cache_root()):
        for name in names:
            fetch_one(name)


def fetch_one(name: str) -> None:
    """Resolve one server's jars unless the cache already has them for the pinned versions."""
    pins = ", ".join(pinned_coordinates(MAVEN_DIR / name / "pom.xml"))
    if jars_are_current(name):
        print(f"fetch {name}: cached in {jars_dir(name)} ({pins})")
        return
    print(f"fetch {name}: resolving {pins} with maven ...", flush=True)
    seconds = resolve_jars(name)
    count = len(list(jars_dir(name).glob("*.jar")))
    print(f"fetch {name}: {count} jars in {seconds:.1f} s -> {jars_dir(name)}")


# ----------------------------------------------------------------------------------------------- probes


def free_port() -> int:
    """A loopback port nobody listens on right now (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """True when a server could bind ``port``.

    SO_REUSEADDR mirrors what the JVM servers set, so connections lingering in TIME_WAIT after a
    restart do not count as taken; only a live listener does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def _exchange(port: int, request: bytes, reply_size: int) -> bytes:
    """Send ``request`` and read up to ``reply_size`` bytes; empty on any socket error."""
    try:
        with socket.create_connection((HOST, port), timeout=2.0) as sock:
            sock.sendall(request)
            reply = b""
            while len(reply) < reply_size:
                chunk = sock.recv(reply_size - len(reply))
                if not chunk:
                    break
                reply += chunk
            return reply
    except OSError:
        return b""


def bolt_answers(port: int) -> bool:
    """Bolt handshake: the server picks one of the offered versions (5.0-5.8 or 4.4), zero means none."""
    offer = b"\x60\x60\xb0\x17" + bytes([0, 8, 8, 5]) + bytes([0, 0, 4, 4]) + bytes(8)
    reply = _exchange(port, offer, 4)
    return len(reply) == 4 and reply != bytes(4)


def kafka_answers(port: int) -> bool:
    """Kafka ApiVersions v0 request; a broker that serves requests answers with error code 0."""
    client_id = b"sleuth-services"
    body = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id  # api key 18, v0, correlation id 7
    reply = _exchange(port, struct.pack(">i", len(body)) + body, 10)
    if len(reply) < 10:
        return False
    correlation_id, error_code = struct.unpack(">ih", reply[4:10])
    return bool(correlation_id == 7 and error_code == 0)


# ----------------------------------------------------------------------------------------------- processes


def process_is_running(pid: int | None, *cmdline_parts: str) -> bool:
    """True when ``pid`` is a live (not zombie) process whose command line contains every part.

    Checking the command line guards against a recycled pid (or another checkout's server); checking
    the state guards against zombies that a container's init never reaps.
    """
    if not pid:
        return False
    proc = Path(f"/proc/{pid}")
    try:
        stat = (proc / "stat").read_text()
        cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X") and all(part in cmdline for part in cmdline_parts)


def java_binary() -> str:
    """The JVM to use: ``$JAVA_HOME/bin/java`` when set, else ``java`` on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise ServiceError("java not found; install Java 17 or set JAVA_HOME")
    return found


def spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Start a detached server in its own session, appending its output to ``log``.

    A new session makes the server its own process-group leader: it survives this script and the
    shell that ran it, and ``down`` can signal the whole group (pgid == pid).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(argv)}\n".encode())
        out.flush()
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def log_tail(log: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a server log, for error messages."""
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log written)"


def log_since(log: Path, offset: int) -> str:
    """What the server logged after ``offset`` bytes (i.e. during this start)."""
    try:
        with open(log, "rb") as handle:
            handle.seek(offset)
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


def stop_process_group(pid: int, main_class: str) -> None:
    """SIGTERM the group so the server shuts down cleanly; SIGKILL it if it takes over 30 s."""
    for sig, grace in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not process_is_running(pid, main_class):
                return
            time.sleep(POLL_S)
    raise ServiceError(f"process {pid} ({main_class}) survived SIGKILL")


# ----------------------------------------------------------------------------------------------- neo4j


def neo4j_record(home: Path) -> Record:
    """A fresh state entry for Neo4j on a newly picked port."""
    port = free_port()
    return {
        "uri": f"bolt://{HOST}:{port}",
        "port": port,
        "pid": None,
        "log": str(home / "console.log"),
        "home": str(home),
    }


def neo4j_prepare(record: Record, home: Path, jars: Path) -> list[str]:
    """Write ``conf/neo4j.conf`` and return the command that starts the community server.

    Neo4j 5 rejects unknown keys, so only settings that exist in 5.26 appear here. Every directory is
    pinned inside ``home`` because there is no unpacked distribution to default to.
    """
    port = record["port"]
    settings = {
        "dbms.security.auth_enabled": "false",
        "dbms.usage_report.enabled": "false",
        "server.bolt.enabled": "true",
        "server.bolt.listen_address": f"{HOST}:{port}",
        "server.bolt.advertised_address": f"{HOST}:{port}",
        "server.http.enabled": "false",
        "server.https.enabled": "false",
        "server.memory.pagecache.size": "128m",
        # Netty waits a 5 s quiet period on each of its two Bolt event-loop groups during shutdown, which
        # made every stop take 11 s. The databases are already checkpointed and closed by then, so
        # skipping the quiet period loses nothing and makes the stop/restart tests fast.
        "internal.dbms.bolt.netty_server_shutdown_quiet_period": "0",
        "server.directories.data": str(home / "data"),
        "server.directories.logs": str(home / "logs"),
        "server.directories.run": str(home / "run"),
        "server.directories.plugins": str(home / "plugins"),
        "server.directories.import": str(home / "import"),
        "server.directories.lib": str(jars),
    }
    conf = home / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    lines = ["# Written by scripts/services.py on every start; edits are overwritten."]
    lines += [f"{key}={value}" for key, value in settings.items()]
    (conf / "neo4j.conf").write_text("\n".join(lines) + "\n")
    return [
        java_binary(),
        *NEO4J_JVM_FLAGS,
        "-cp",
        f"{jars}/*",
        "org.neo4j.server.CommunityEntryPoint",
        f"--home-dir={home}",
        f"--config-dir={conf}",
        "--console-mode",
    ]


# ----------------------------------------------------------------------------------------------- kafka


def new_cluster_id() -> str:
    """16 random bytes as URL-safe base64 without padding (22 characters), as the storage tool wants.

    Like Kafka's own ``Uuid.randomUuid()`` it never starts with "-": the storage tool's argument parser
    would read such an id as an option ("argument --cluster-id/-t: expected one argument").
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def kafka_record(home: Path) -> Record:
    """A fresh state entry for Kafka on two newly picked ports; the cluster id comes with formatting."""
    port, controller_port = free_port(), free_port()
    while controller_port == port:
        controller_port = free_port()
    return {
        "bootstrap": f"{HOST}:{port}",
        "port": port,
        "controller_port": controller_port,
        "pid": None,
        "log": str(home / "console.log"),
        "home": str(home),
    }


def kafka_properties(record: Record, home: Path) -> dict[str, str]:
    """server.properties for one combined broker+controller node on loopback.

    Every internal topic gets replication factor 1 (there is one node) and one partition (the default
    of 50 for consumer offsets makes the first group join slow). Topics are created by the clients,
    because auto-creation races with the first produce.
    """
    port, cport = record["port"], record["controller_port"]
    return {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{HOST}:{cport}",
        "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{cport}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(home / "data"),
        "num.partitions": "1",
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "message.max.bytes": str(MAX_MESSAGE_BYTES),
        "replica.fetch.max.bytes": str(MAX_MESSAGE_BYTES),
    }


def kafka_format_storage(record: Record, home: Path, jars: Path, properties: Path) -> None:
    """Format the KRaft log dir once; a formatted dir is kept so topics survive restarts.

    The cluster id is drawn here and recorded, so the record always names the id the dir carries.
    """
    if (home / "data" / "meta.properties").is_file():
        return
    record["cluster_id"] = new_cluster_id()
    cmd = [
        java_binary(),
        f"-Dlog4j2.configurationFile={home / 'log4j2.properties'}",
        "-cp",
        f"{jars}/*",
        "kafka.tools.StorageTool",
        "format",
        "-t",
        record["cluster_id"],
        "-c",
        str(properties),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise ServiceError(f"kafka storage format failed:\n{result.stdout}{result.stderr}")


def kafka_prepare(record: Record, home: Path, jars: Path) -> list[str]:
    """Write server.properties and the log4j2 config, format storage, return the broker command."""
    home.mkdir(parents=True, exist_ok=True)
    properties = home / "server.properties"
    lines = ["# Written by scripts/services.py on every start; edits are overwritten."]
    lines += [f"{key}={value}" for key, value in kafka_properties(record, home).items()]
    properties.write_text("\n".join(lines) + "\n")
    (home / "log4j2.properties").write_text(KAFKA_LOG4J2)
    kafka_format_storage(record, home, jars, properties)
    return [
        java_binary(),
        *KAFKA_JVM_FLAGS,
        f"-Dlog4j2.configurationFile={home / 'log4j2.properties'}",
        "-cp",
        f"{jars}/*",
        "kafka.Kafka",
        str(properties),
    ]


SERVICES = {
    "neo4j": Service(
        "neo4j", "org.neo4j.server.CommunityEntryPoint", "Started.", neo4j_record, neo4j_prepare, bolt_answers
    ),
    "kafka": Service("kafka", "kafka.Kafka", "Kafka Server started", kafka_record, kafka_prepare, kafka_answers),
}


# ----------------------------------------------------------------------------------------------- state


def load_state() -> State:
    """The recorded servers, or an empty mapping before the first ``up``."""
    path = state_root() / "state.json"
    if not path.is_file():
        return {}
    return dict(json.loads(path.read_text()))


def save_state(state: State) -> None:
    """Write ``state.json`` and ``env`` atomically (readers never see half a file)."""
    root = state_root()
    root.mkdir(parents=True, exist_ok=True)
    lines = ["# Written by scripts/services.py; source it to reach the local servers."]
    if "neo4j" in state:
        lines.append(f"export SLEUTH_NEO4J_URI={state['neo4j']['uri']}")
    if "kafka" in state:
        lines.append(f"export SLEUTH_KAFKA_BOOTSTRAP={state['kafka']['bootstrap']}")
    for name, text in (("state.json", json.dumps(state, indent=2) + "\n"), ("env", "\n".join(lines) + "\n")):
        tmp = root / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(root / name)


def live_pid(service: Service, record: Record | None) -> int | None:
    """The recorded pid when that process is still this server (its main class, its home), else None."""
    if not record or not record.get("pid"):
        return None
    pid = record["pid"]
    return pid if process_is_running(pid, service.main_class, record["home"]) else None


def is_up(service: Service, record: Record | None) -> bool:
    """True when the recorded process is alive and answers its protocol."""
    return record is not None and live_pid(service, record) is not None and service.probe(record["port"])


# ----------------------------------------------------------------------------------------------- up / down


def ensure_ports(service: Service, record: Record) -> Record:
    """Keep the recorded ports when free (clients keep their URI); otherwise pick new ones and say so."""
    ports = [record["port"]] + ([record["controller_port"]] if "controller_port" in record else [])
    if all(port_is_free(port) for port in ports):
        return record
    print(f"up {service.name}: recorded port(s) {ports} are taken by another process; using new ones", file=sys.stderr)
    fresh = service.new_record(Path(record["home"]))
    if "cluster_id" in record:
        fresh["cluster_id"] = record["cluster_id"]  # the formatted Kafka log dir carries this id
    return fresh


def start(service: Service, record: Record) -> tuple[subprocess.Popen[bytes], int]:
    """Configure and launch one server; returns the process and where its log was when it started."""
    argv = service.prepare(record, Path(record["home"]), jars_dir(service.name))
    log = Path(record["log"])
    offset = log.stat().st_size if log.is_file() else 0
    return spawn(argv, log), offset


def wait_ready(service: Service, record: Record, proc: subprocess.Popen[bytes], offset: int) -> float:
    """Block until the server logged its ready line and answers; returns seconds waited.

    Raises with the log tail when the JVM exits or the timeout passes; the server is then stopped so
    no half-started process lingers.
    """
    started = time.monotonic()
    log = Path(record["log"])
    while time.monotonic() - started < READY_TIMEOUT_S:
        if proc.poll() is not None:
            raise ServiceError(f"{service.name} exited with code {proc.returncode}; log {log}:\n{log_tail(log)}")
        if service.ready_marker in log_since(log, offset) and service.probe(record["port"]):
            return time.monotonic() - started
        time.sleep(POLL_S)
    stop_process_group(proc.pid, service.main_class)
    raise ServiceError(f"{service.name} not ready after {READY_TIMEOUT_S:.0f} s; log {log}:\n{log_tail(log)}")


def describe(name: str, record: Record) -> str:
    """One line saying where a server listens."""
    where = record.get("uri") or record.get("bootstrap")
    return f"{name}: {where} (pid {record.get('pid')}, log {record.get('log')})"


def wait_answering(service: Service, record: Record) -> bool:
    """True once the recorded server answers; False at once when it is not running.

    A server that runs but does not answer yet is most likely still starting (an earlier ``up`` was
    interrupted, or start-up is slow on a loaded 2-core machine: 30 s were seen), so it gets the
    normal start-up timeout instead of being killed and started over.
    """
    deadline = time.monotonic() + READY_TIMEOUT_S
    while live_pid(service, record) is not None:
        if service.probe(record["port"]):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    return False


def launch(name: str, state: State) -> tuple[subprocess.Popen[bytes], int]:
    """Start one server that is not up, reusing its recorded ports and data when there are any."""
    service, record = SERVICES[name], state.get(name)
    stale = live_pid(service, record)
    if stale:
        # Still running yet never answered within the start-up timeout: it is stuck, start it afresh.
        stop_process_group(stale, service.main_class)
    record = ensure_ports(service, record) if record else service.new_record(state_root() / name)
    proc, offset = start(service, record)
    record["pid"] = proc.pid
    state[name] = record
    save_state(state)  # record the pid at once, so `down` can stop it even if waiting fails
    return proc, offset


def up(names: tuple[str, ...]) -> None:
    """Start the named servers unless they already run; all start first, then all are awaited."""
    fetch(names)
    state = load_state()
    launched: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    # One server failing must not leave the other starting unobserved: collect errors, await the rest.
    failures = []
    for name in names:
        record = state.get(name)
        if record is not None and wait_answering(SERVICES[name], record):
            print(f"up {describe(name, record)} already running")
            continue
        try:
            launched[name] = launch(name, state)
        except ServiceError as error:
            failures.append(str(error))
    for name, (proc, offset) in launched.items():
        try:
            seconds = wait_ready(SERVICES[name], state[name], proc, offset)
        except ServiceError as error:
            failures.append(str(error))
            state[name]["pid"] = None
            save_state(state)
            continue
        print(f"up {describe(name, state[name])} ready in {seconds:.1f} s")
    if failures:
        raise ServiceError("\n\n".join(failures))
    print(f"env: {state_root() / 'env'}")


def down(names: tuple[str, ...], wipe: bool) -> None:
    """Stop the named servers; with ``wipe`` also delete their data (everything when both are named)."""
    state = load_state()
    for name in names:
        service, record = SERVICES[name], state.get(name)
        pid = live_pid(service, record)
        if pid:
            started = time.monotonic()
            stop_process_group(pid, service.main_class)
            print(f"down {name}: stopped pid {pid} in {time.monotonic() - started:.1f} s")
        else:
            print(f"down {name}: not running")
        if record:
            record["pid"] = None
        if wipe:
            shutil.rmtree(state_root() / name, ignore_errors=True)
            state.pop(name, None)
    if wipe and not state:
        # Removing the folder also drops the lock file; the caller's lock handle stays valid until closed.
        shutil.rmtree(state_root(), ignore_errors=True)
        print(f"down: wiped {state_root()}")
    elif state_root().is_dir():
        save_state(state)


def status() -> int:
    """Print each server's state; 0 when both run and answer, 3 otherwise."""
    state = load_state()
    all_up = True
    for name in SERVICE_NAMES:
        service, record = SERVICES[name], state.get(name)
        if record is None:
            print(f"{name}: never started (state dir {state_root()})")
            all_up = False
        elif is_up(service, record):
            print(f"{describe(name, record)} up")
        else:
            print(f"{describe(name, record)} {'not answering' if live_pid(service, record) else 'down'}")
            all_up = False
    return 0 if all_up else EXIT_NOT_RUNNING


def print_env() -> int:
    """Print the env file written by ``up``; 3 when there is none yet."""
    path = state_root() / "env"
    if not path.is_file():
        print(f"no env file at {path}; run scripts/services up", file=sys.stderr)
        return EXIT_NOT_RUNNING
    print(path.read_text(), end="")
    return 0


# ----------------------------------------------------------------------------------------------- CLI


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command line: a verb, optionally one server name, and ``--wipe`` for down."""
    parser = argparse.ArgumentParser(prog="scripts/services", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    for verb in ("fetch", "up", "down"):
        cmd = sub.add_parser(verb)
        cmd.add_argument("service", nargs="?", choices=SERVICE_NAMES, help="only this server (default: both)")
        if verb == "down":
            cmd.add_argument("--wipe", action="store_true", help="also delete data, configs and logs")
    sub.add_parser("status")
    sub.add_parser("env")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run one verb; errors are printed without a traceback and exit 1."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    names = (args.service,) if getattr(args, "service", None) else SERVICE_NAMES
    started = time.monotonic()
    try:
        if args.verb == "status":
            return status()
        if args.verb == "env":
            return print_env()
        if args.verb == "fetch":
            fetch(names)
        elif args.verb == "down" and not state_root().is_dir():
            print(f"down: nothing runs (no state dir {state_root()})")
        else:
            with folder_lock(state_root()):
                if args.verb == "up":
                    up(names)
                else:
                    down(names, args.wipe)
    except ServiceError as error:
        print(f"services {args.verb}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Servers already launched keep starting in their own sessions; a later `up` waits for them.
        print(f"services {args.verb}: interrupted; see {state_root() / 'state.json'}", file=sys.stderr)
        return 130
    print(f"{args.verb}: done in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
