"""``sleuth simulate ... --kafka``: a scenario streamed to real Kafka, every event on its topic with its key."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

from ingest.decode import decode_record
from schema.events import partition_key
from tests.support import REPO, make_settings, settings_env, topic_records


def test_simulated_events_are_streamed_to_their_topics_keyed_and_paced(neo4j_uri, kafka_bootstrap, topic_prefix,
                                                                      tmp_path: Path) -> None:
    settings = make_settings(neo4j_uri, kafka_bootstrap, topic_prefix, tmp_path, partitions=2)
    out = tmp_path / "scenario"
    rate = 400.0
    done = subprocess.run(
        [sys.executable, "-m", "server.cli", "simulate", "starter", "--seed", "2", "--kafka", "--out", str(out),
         "--rate", str(rate)],
        cwd=REPO, env=settings_env(settings), capture_output=True, text=True, timeout=120, check=True,
    )
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    lines = [line for line in (out / "events.jsonl").read_text().splitlines() if line]
    assert summary["events"] == len(lines) > 100
    assert summary["kafka"]["sent"] == len(lines) and summary["kafka"]["invalid"] == 0
    # Paced: the stream cannot be faster than --rate (less the last unpaced step of 50).
    assert summary["kafka"]["seconds"] >= (len(lines) - 50) / rate

    topics = settings.kafka.topics
    read: Counter[str] = Counter()
    for topic in dict.fromkeys(topics.inputs()):
        total, records = topic_records(kafka_bootstrap, topic, 2)
        assert len(records) == total
        for record in records:
            [event] = decode_record(record.value)[:1]
            assert topics.for_event_type(event.type) == topic
            assert record.key == partition_key(event).encode()
            read[record.value.decode()] += 1
    assert read == Counter(lines)  # each event exactly once, byte for byte what --out holds


def test_simulate_needs_somewhere_to_put_the_events(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "server.cli", "simulate", "ops", "--seed", "2"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "--out DIR, --kafka, or both" in done.stderr
