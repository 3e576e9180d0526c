"""Replay a JSONL file of events end to end: produce to real Kafka, consume into real Neo4j, report.

Prints one JSON line: records, seconds to produce, seconds to ingest (first poll to last commit), events/s,
and the graph's node counts per label afterwards. The Neo4j database is wiped first.

    python bench/replay.py FILE [--batch 5000]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder would shadow the ``ingest`` package with bench/ingest.py: put the repository
# root there instead (it also makes ``bench`` importable).
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import time
import uuid

from bench.common import server_settings, wiped_store
from bench.ingest import _drain, _settings
from ingest.decode import Rejection, decode_record
from ingest.kafka import ensure_topics, make_producer
from schema.events import partition_key
from schema.graph import NODES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("file")
    parser.add_argument("--batch", type=int, default=5000)
    args = parser.parse_args()
    base = server_settings()
    store = wiped_store(base)
    settings = _settings(base, f"replay{uuid.uuid4().hex[:8]}", args.batch)
    topics = settings.kafka.topics
    ensure_topics(str(settings.kafka_bootstrap), [*topics.inputs(), topics.dlq], settings.kafka.partitions)
    producer = make_producer(str(settings.kafka_bootstrap), linger_ms=20, batch_size=256 * 1024)
    started, records, invalid = time.perf_counter(), 0, 0
    with Path(args.file).open("rb") as handle:
        for line in handle:
            decoded = decode_record(line.strip(), now=None)
            if isinstance(decoded, Rejection):
                invalid += 1
                continue
            event = decoded[0]
            producer.send(topics.for_event_type(event.type), value=line.strip(),  # type: ignore[attr-defined]
                          key=partition_key(event).encode())
            records += 1
    producer.flush()
    producer.close()
    produce_s = time.perf_counter() - started
    elapsed, timed = _drain(settings, store, records)
    counts = {spec.label: store.count(spec.label) for spec in NODES if store.count(spec.label)}
    store.close()
    print(json.dumps({"records": records, "invalid": invalid, "produce_s": round(produce_s, 1),
                      "ingest_s": round(elapsed, 1), "events_per_s": round(timed / elapsed, 1) if elapsed else 0,
                      "graph": counts}))


if __name__ == "__main__":
    main()
