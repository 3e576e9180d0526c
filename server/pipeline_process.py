"""``sleuth serve``'s pipeline in a process of its own, so that gRPC calls never wait for its GIL.

The pipeline thread spends most of its time in Python (decoding, mapping, the Neo4j driver's packing, the
detectors). In one process with the gRPC server, every step of an inline ``ScoreTransaction`` (the event
loop waking, the handler thread, each of the TGN's ~180 torch operations, which release and retake the GIL)
waits for the pipeline thread to let go of the GIL, up to the 5 ms switch interval each time. So here:

* the **child** process consumes Kafka, decodes, maps, writes to Neo4j, runs the basic rules and the
  incident detector, commits, and publishes findings to Kafka, as the in-thread pipeline does;
* the **parent** (the gRPC process) keeps the fraud detector, whose state ``ScoreTransaction`` shares with
  the pipeline. The child sends each batch's transactions and identity events to it (one request per batch)
  and writes the :class:`~ingest.pipeline.Detection` it gets back with the batch, so rings are still written
  in the batch that closes them and offsets are still committed only after the write and its annotations.

Two pipes join them. On the *detect* pipe the child asks and the parent answers: ``("detect", [(event,
replayed), ...])`` is answered ``("ok", Detection)`` or ``("error", reason)``; ``("findings", [...])``
(what the child published, for the parent's gRPC ``Watch`` subscribers) needs no answer. On the *control*
pipe the parent asks: ``"metrics"`` (the child's Prometheus families, served on the parent's ``/metrics``)
and ``"stop"`` (finish the batch in hand, commit, close). Either side ends when the other one's pipe closes.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

from ingest.detectors import fraud_events
from ingest.pipeline import Detection, Observed
from schema.findings import Finding
from schema.store import GraphStore

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    from prometheus_client import CollectorRegistry

    from ingest.detectors import FraudRingDetector
    from ingest.pipeline import FindingSink
    from server.settings import Settings

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1

#: The child's process families (CPU, memory, ...) are served under this prefix, beside the parent's own.
CHILD_PROCESS_PREFIX = "sleuth_pipeline_"


class PipelineProcessError(Exception):
    """The pipeline process or its link to the parent failed (broken infrastructure: the process exits)."""


class ParentUnreachable(PipelineProcessError):
    """The child lost the parent's detect pipe (the parent is gone)."""


class RemoteDetectionFailed(PipelineProcessError):
    """The parent's fraud detector raised on a batch."""


class Link:
    """The child's end of the detect pipe; its pipeline thread and its sinks share it under a lock."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = threading.RLock()

    def ask(self, message: tuple[str, Any]) -> Any:
        """Send a request and wait for its answer."""
        with self._lock:
            self.tell(message)
            return self.answer()

    def tell(self, message: tuple[str, Any]) -> None:
        """Send a message (a request whose answer :meth:`answer` reads later, or one that has none)."""
        try:
            with self._lock:
                self._conn.send(message)
        except (EOFError, OSError) as exc:
            raise ParentUnreachable("the gRPC process closed the detect pipe") from exc

    def answer(self) -> Any:
        """The answer to the oldest request not answered yet."""
        try:
            with self._lock:
                status, body = self._conn.recv()
        except (EOFError, OSError) as exc:
            raise ParentUnreachable("the gRPC process closed the detect pipe") from exc
        if status != "ok":
            raise RemoteDetectionFailed(f"fraud detection failed in the gRPC process: {body}")
        return body


class RemoteFraudDetector:
    """The child's fraud :class:`~ingest.pipeline.EarlyDetector`: the parent's detector does the work, while
    the child writes the batch (the request goes out in :meth:`begin`, the answer is read in :meth:`detect`)."""

    name = "fraud"

    def __init__(self, link: Link) -> None:
        self._link = link
        #: The events of the request in flight (sent by :meth:`begin`, not answered yet).
        self._in_flight: Sequence[Observed] | None = None

    def begin(self, events: Sequence[Observed]) -> None:
        self._settle()
        pairs = fraud_events(events)
        if pairs:
            self._link.tell(("detect", pairs))
            self._in_flight = events

    def _settle(self) -> None:
        """Read (and drop) the answer to a request whose batch never reached :meth:`detect` (its write failed;
        the parent remembers the verdicts, so the retried batch gets the same ones)."""
        if self._in_flight is not None:
            self._in_flight = None
            self._link.answer()

    def detect(self, events: Sequence[Observed], store: GraphStore) -> Detection:
        if self._in_flight is not None and self._in_flight is events:
            self._in_flight = None
            detection = self._link.answer()
        else:
            self._settle()
            pairs = fraud_events(events)
            if not pairs:
                return Detection()
            detection = self._link.ask(("detect", pairs))
        assert isinstance(detection, Detection)
        return detection


class ForwardedFindings:
    """The child's :class:`~ingest.pipeline.FindingSink` towards the parent's hub (``Watch`` subscribers)."""

    def __init__(self, link: Link) -> None:
        self._link = link

    def publish(self, findings: Sequence[Finding]) -> None:
        if findings:
            self._link.tell(("findings", list(findings)))


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel kill this process when its parent dies (Linux ``PR_SET_PDEATHSIG``): a ``sleuth
    serve`` killed outright takes its pipeline with it, uncommitted, as when the pipeline was a thread."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the closed pipes still end the child, more slowly
        return
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)


def child_main(settings: Settings, detect_conn: Connection, control_conn: Connection, log_level: int,
               parent_pid: int) -> None:
    """The pipeline process: build the Kafka pipeline with the remote fraud detector and run it until the
    parent says stop or goes away. Exits non-zero when the pipeline fails (broken infrastructure)."""
    from prometheus_client import REGISTRY

    from server.host import build_kafka_host

    # The parent decides when to stop: Ctrl-C reaches the whole process group, but only the parent acts on it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent_pid)
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s [pipeline]: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    logging.getLogger("neo4j").setLevel(logging.WARNING)
    link = Link(detect_conn)
    host = build_kafka_host(settings, fraud=RemoteFraudDetector(link), hub=ForwardedFindings(link))

    def control() -> None:
        while True:
            try:
                request = control_conn.recv()
            except (EOFError, OSError):
                host.runner.stop()  # the parent is gone: finish the batch in hand and leave
                return
            if request == "metrics":
                control_conn.send(list(REGISTRY.collect()))
            elif request == "stop":
                host.runner.stop()
                control_conn.send("stopping")
                return

    # A SIGTERM sent to the child itself (a supervisor signalling the whole group) stops it as the parent would.
    signal.signal(signal.SIGTERM, lambda *_: host.runner.stop())
    threading.Thread(target=control, name="pipeline-control", daemon=True).start()
    code = 0
    try:
        host.runner.run()
    except BaseException:
        log.exception("the pipeline stopped")
        code = 1
    finally:
        host.close()
    sys.exit(code)


class PipelineProcess:
    """The parent's handle on the pipeline process: starts it, answers its detect requests with the shared
    fraud detector, forwards its findings to ``hub``, collects its metrics, and stops it."""

    def __init__(self, settings: Settings, fraud: FraudRingDetector, hub: FindingSink,
                 log_level: int = logging.INFO, target: Callable[..., None] = child_main,
                 target_args: tuple[Any, ...] = ()) -> None:
        """``target``: what the child runs, called as ``target(settings, detect_conn, control_conn, log_level,
        parent_pid, *target_args)`` (:func:`child_main` by default; the fraud benchmark runs its timed
        pipeline this way)."""
        self._settings = settings
        self._target, self._target_args = target, target_args
        self._fraud = fraud
        self._hub = hub
        self._log_level = log_level
        self._process: BaseProcess | None = None
        self._control: Connection | None = None
        self._control_lock = threading.Lock()
        self._server: threading.Thread | None = None
        self._stopping = False

    def start(self) -> None:
        """Spawn the child (a fresh interpreter: no driver or torch thread is forked) and serve its requests."""
        context = multiprocessing.get_context("spawn")
        detect_parent, detect_child = context.Pipe()
        control_parent, control_child = context.Pipe()
        self._process = context.Process(target=self._target, name="sleuth-pipeline", daemon=True,
                                        args=(self._settings, detect_child, control_child, self._log_level,
                                              os.getpid(), *self._target_args))
        self._process.start()
        detect_child.close()
        control_child.close()
        self._control = control_parent
        self._server = threading.Thread(target=self._serve, args=(detect_parent,), name="pipeline-detect",
                                        daemon=True)
        self._server.start()

    def _serve(self, conn: Connection) -> None:
        while True:
            try:
                kind, body = conn.recv()
            except (EOFError, OSError):
                return  # the child exited
            if kind == "findings":
                self._hub.publish(body)
                continue
            try:
                reply: tuple[str, Any] = ("ok", self._fraud.detect_events(body))
            except Exception as exc:  # the child fails the batch and exits; the parent keeps serving gRPC
                log.exception("fraud detection failed on a batch of the pipeline process")
                reply = ("error", f"{type(exc).__name__}: {exc}")
            try:
                conn.send(reply)
            except (EOFError, OSError):
                return

    @property
    def exitcode(self) -> int | None:
        """The child's exit code (None while it runs or before it started)."""
        return None if self._process is None else self._process.exitcode

    def failed(self) -> bool:
        """Whether the child ended without being asked to stop, or ended on an error."""
        code = self.exitcode
        return code is not None and (code != 0 or not self._stopping)

    def metrics(self, timeout_s: float = 2.0) -> list[Metric]:
        """The child's Prometheus families (none when it does not answer within ``timeout_s``)."""
        conn = self._control
        if conn is None or self.exitcode is not None:
            return []
        with self._control_lock:
            try:
                conn.send("metrics")
                if not conn.poll(timeout_s):
                    return []
                families = conn.recv()
            except (EOFError, OSError):
                return []
        return families if isinstance(families, list) else []

    def stop(self, timeout_s: float = 30.0) -> None:
        """Ask the child to finish the batch in hand, commit and close; wait for it (kill it past the timeout)."""
        process, conn = self._process, self._control
        if process is None or conn is None:
            return
        self._stopping = True
        if process.exitcode is None:
            with self._control_lock:
                try:
                    conn.send("stop")
                except (EOFError, OSError):
                    pass
            process.join(timeout_s)
            if process.exitcode is None:
                log.error("the pipeline process did not stop within %.0f s: killing it", timeout_s)
                process.kill()
                process.join(5)
        conn.close()
        if self._server is not None:
            self._server.join(5)


class MergedMetrics:
    """A Prometheus collector of this process's registry together with the pipeline process's families, for
    the parent's ``/metrics``.

    - A family only the child has (the ingest metrics) is served as it is.
    - A family both have (rule firings, analysis time, the fraud counters) is served once, the child's
      samples labelled ``process="pipeline"``.
    - The child's ``process_*`` families (its CPU, memory, open files) are renamed
      ``sleuth_pipeline_process_*``; its ``python_*`` families are left out.
    """

    def __init__(self, own: CollectorRegistry, process: PipelineProcess) -> None:
        self._own = own
        self._process = process

    def describe(self) -> list[Metric]:
        # No description: a registry then skips its duplicate check, which would call collect() (and the
        # child) at registration time.
        return []

    def collect(self) -> Iterator[Metric]:
        child = {family.name: family for family in self._process.metrics()}
        for family in self._own.collect():
            theirs = None if family.name.startswith(("process_", "python_")) else child.pop(family.name, None)
            if theirs is not None:
                family.samples = family.samples + [
                    Sample(s.name, {**s.labels, "process": "pipeline"}, s.value, s.timestamp, s.exemplar)
                    for s in theirs.samples]
            yield family
        for family in child.values():
            if family.name.startswith("process_"):
                yield _renamed(family, CHILD_PROCESS_PREFIX + family.name)
            elif not family.name.startswith("python_"):
                yield family


def _renamed(family: Metric, name: str) -> Metric:
    """``family`` under another name (its samples' names follow)."""
    renamed = Metric(name, family.documentation, family.type, family.unit)
    renamed.samples = [Sample(name + s.name[len(family.name):], s.labels, s.value, s.timestamp, s.exemplar)
                       for s in family.samples]
    return renamed
