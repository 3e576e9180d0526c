"""The AMLSim converter on a hand-built miniature sample."""

from __future__ import annotations

import json
import tarfile
from datetime import UTC, datetime

from bench.datasets.amlsim import DEFAULT_START, convert, main
from schema.events import EVENT_ADAPTER, TransactionEvent

NODES = """nodeid,isFraud,init_balance,fraudStep
0,0,184.44,-1
1,0,175.80,-1
2,1,120.00,3
3,1,130.00,3
4,0,150.00,-1
"""
TRANSACTIONS = """sourceNodeId,targetNodeId,value,time
0,1,150.00,1
1,4,450.00,1
2,3,3.10,3
2,3,4.20,3
4,4,200.00,2
4,0,300.00,2
"""


def sample(tmp_path):
    src = tmp_path / "20K_tiny"
    src.mkdir()
    (src / "nodes.csv").write_text(NODES)
    (src / "transactions.csv").write_text(TRANSACTIONS)
    return src


def read(out):
    events = [EVENT_ADAPTER.validate_json(x) for x in (out / "events.jsonl").read_text().splitlines()]
    labels = [json.loads(x) for x in (out / "labels.jsonl").read_text().splitlines()]
    return events, labels


def test_convert_maps_steps_to_days_and_labels_accounts(tmp_path) -> None:
    stats = convert(sample(tmp_path), tmp_path / "out")
    events, labels = read(tmp_path / "out")
    assert (stats.accounts, stats.fraud_accounts, stats.transactions, stats.skipped_self_transfers) == (5, 2, 5, 1)
    assert all(isinstance(e, TransactionEvent) for e in events)
    assert [(e.src, e.dst, e.amount) for e in events] == [
        ("aml-0", "aml-1", 150.0), ("aml-1", "aml-4", 450.0), ("aml-4", "aml-0", 300.0),
        ("aml-2", "aml-3", 3.1), ("aml-2", "aml-3", 4.2)]
    # Step 1 is the start day; inside a step the file order is kept, spread evenly over the day (the dropped
    # self-transfer keeps its place in step 2).
    assert [e.at for e in events[:3]] == [datetime(2026, 1, 1, 6, tzinfo=UTC), datetime(2026, 1, 1, 18, tzinfo=UTC),
                                          datetime(2026, 1, 2, 18, tzinfo=UTC)]
    assert events[0].at.date() == DEFAULT_START.date() and events[3].at.date().isoformat() == "2026-01-03"
    assert len({e.id for e in events}) == 5
    assert labels == [{"account": f"aml-{i}", "fraud": i in (2, 3)} for i in range(5)]
    # fraudStep (a label leak) and init_balance never reach the output.
    text = (tmp_path / "out" / "events.jsonl").read_text() + (tmp_path / "out" / "labels.jsonl").read_text()
    assert "fraudStep" not in text and "init_balance" not in text and "184.44" not in text


def test_blind_amounts_draw_from_the_normal_range_reproducibly(tmp_path) -> None:
    src = sample(tmp_path)
    stats = convert(src, tmp_path / "a", blind_seed=7)
    again = convert(src, tmp_path / "b", blind_seed=7)
    convert(src, tmp_path / "c", blind_seed=8)
    lo, hi = stats.amount_range
    # Normal-to-normal transfers are 150, 450, 300 (the 200 self-transfer is dropped).
    assert (lo, hi) == (150.0, 300.0) and again.amount_range == stats.amount_range
    a, _ = read(tmp_path / "a")
    b, _ = read(tmp_path / "b")
    c, _ = read(tmp_path / "c")
    assert all(lo <= e.amount <= hi for e in a)
    assert [e.amount for e in a] == [e.amount for e in b] and [e.amount for e in a] != [e.amount for e in c]
    assert all(e.amount > 100 for e in a if e.src == "aml-2")  # the laundering give-away is gone


def test_cli_and_tgz_input(tmp_path, capsys) -> None:
    src = sample(tmp_path)
    archive = tmp_path / "tiny.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="20K_tiny")
    assert main([str(archive), "--out", str(tmp_path / "cli"), "--blind-amounts", "3"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["transactions"] == 5 and printed["blinded"] is True
    events, labels = read(tmp_path / "cli")
    assert len(events) == 5 and len(labels) == 5
