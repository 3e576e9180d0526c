"""Log template mining: grouping accuracy, masking, sibling merge, restart-stable ids, bounds, Loghub-2k."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from ingest.logs.evaluation import evaluate_file, grouping_accuracy
from ingest.logs.templates import (
    FileTemplateState,
    LogTemplateConfig,
    LogTemplateMiner,
    is_error_line,
    mine_template_ids,
)

LOGHUB_2K = Path(__file__).resolve().parents[2].parent / "shared/data/loghub-2k"


# -- grouping accuracy ------------------------------------------------------------------------------


def test_grouping_accuracy_ignores_label_names() -> None:
    assert grouping_accuracy(["a", "a", "b"], [7, 7, 9]) == 1.0


def test_grouping_accuracy_split_group_makes_all_its_lines_wrong() -> None:
    # "a" is split in two: both of its lines are wrong; "b" is right.
    assert grouping_accuracy(["a", "a", "b"], ["x", "y", "z"]) == pytest.approx(1 / 3)


def test_grouping_accuracy_superset_group_is_wrong() -> None:
    # Predicted group x = {0, 1, 2, 3} contains all of "a" = {0, 1}, but is not equal to it: lines 0..3 are
    # all wrong, although every "a" line is in the same predicted group. Only the "c" line is right.
    assert grouping_accuracy(["a", "a", "b", "b", "c"], ["x", "x", "x", "x", "y"]) == pytest.approx(0.2)


def test_grouping_accuracy_everything_merged() -> None:
    assert grouping_accuracy(["a", "b"], ["x", "x"]) == 0.0


def test_grouping_accuracy_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        grouping_accuracy(["a"], ["x", "y"])
    with pytest.raises(ValueError):
        grouping_accuracy([], [])


# -- masking and grouping ---------------------------------------------------------------------------


def _learn(lines: list[str], config: LogTemplateConfig | None = None) -> LogTemplateMiner:
    miner = LogTemplateMiner(config)
    for line in lines:
        miner.add(line)
    return miner


@pytest.mark.parametrize(
    ("lines", "template"),
    [
        (  # IP:port, numbers with units
            ["Connection from 10.0.0.1:5050 closed after 15 ms", "Connection from 192.168.1.20:443 closed after 2.5 s"],
            "Connection from <*> closed after <*>",
        ),
        (  # UUID and paths
            [
                "[instance: b9000564-fe1a-409b-b8cc-1e88b294cd1d] Deleting instance files /var/lib/nova/b9000564_del",
                "[instance: 96abccce-8d1f-4e07-b6d1-4b2ab87e23b4] Deleting instance files /var/lib/nova/96abccce_del",
            ],
            "[instance: <*>] Deleting instance files <*>",
        ),
        (  # block ids and hex values
            [
                "Verification succeeded for blk_-1608999687919862906 at 0x7f3a",
                "Verification succeeded for blk_42 at 0xFF",
            ],
            "Verification succeeded for <*> at <*>",
        ),
        (  # dates and times, key=value values
            [
                "Job started at 2017-05-16 05:00:00 by cron uid=0",
                "Job started at Fri Dec 10 19:02:14 EST 2004 by cron uid=42",
            ],
            "Job started at <*> by cron uid=<*>",
        ),
        (  # a URL, booleans
            ["fetch http://a.example/x?id=1 cached true", "fetch https://b.example/y/z cached false"],
            "fetch <*> cached <*>",
        ),
        (  # a value spanning a varying number of tokens
            ["closed, 0 bytes sent, lifetime <1 sec", "closed, 1190 bytes (1.16 KB) sent, lifetime 00:02"],
            "closed, <*> sent, lifetime <*>",
        ),
        (  # a code location is template text (Logback "%logger{0}#%line"); the trace ids are values
            ["16:42:09.486 INFO  t.s.TravelServiceImpl#532 TraceID: 6f3cbf058c27 SpanID: 576f9c38 [query] done",
             "16:43:10.001 INFO  t.s.TravelServiceImpl#532 TraceID: a1b2c3d4e5f6 SpanID: 9e8d7c6b [query] done"],
            "<*> INFO t.s.TravelServiceImpl#532 TraceID: <*> SpanID: <*> [query] done",
        ),
        (  # a stack frame and a Python source line
            ["at com.shop.Cart.add(Cart.java:118) after 12 ms", "at com.shop.Cart.add(Cart.java:118) after 3 ms"],
            "at com.shop.Cart.add(Cart.java:118) after <*>",
        ),
        (
            ["handlers.py:42 request 981 failed", "handlers.py:42 request 7 failed"],
            "handlers.py:42 request <*> failed",
        ),
        (  # a host and port is still a value
            ["proxy.example.org:5070 refused 3 connections", "cache.internal:6379 refused 12 connections"],
            "<*> refused <*> connections",
        ),
    ],
)
def test_variables_are_masked_into_one_template(lines: list[str], template: str) -> None:
    miner = _learn(lines)
    ids = {miner.match(line).template_id for line in lines}  # type: ignore[union-attr]
    assert len(ids) == 1
    assert miner.templates() == {ids.pop(): template}


def test_statements_at_other_code_locations_are_other_templates() -> None:
    # Same words from two statements of one class: before, both locations were masked as numbers and the two
    # statements were one template.
    lines = [f"10:00:0{i} ERROR c.o.OrderServiceImpl#{line} TraceID: {i}f3a SpanID: {i}b [create] failed"
             for i in range(4) for line in (88, 131)]
    ids = mine_template_ids(lines)
    assert len(set(ids)) == 2 and ids[0] == ids[2] != ids[1]


def test_literal_words_stay_template_constants() -> None:
    lines = [f"[instance: {i}] VM {state} (Lifecycle Event)" for i in range(3) for state in ("Started", "Paused")]
    assert len(set(mine_template_ids(lines))) == 2


def test_a_slot_with_many_words_becomes_a_variable() -> None:
    users = ["admin", "test", "oracle", "guest", "postgres", "admin1"]  # five words and one masked value
    lines = [f"Invalid user {user} from 10.0.0.{n}" for n, user in enumerate(users)]
    miner = _learn(lines)
    assert len(set(mine_template_ids(lines))) == 1
    assert list(miner.templates().values()) == ["Invalid user <*> from <*>"]


def test_a_learned_variable_slot_is_masked_and_survives_a_restart(tmp_path: Path) -> None:
    state = FileTemplateState(tmp_path / "state")
    miner = LogTemplateMiner(persistence=state)
    first = [miner.add(f"Invalid user {u} from 10.0.0.1") for u in ("admin", "test", "oracle", "guest", "pi")]
    assert [m.template_id for m in first] == ["T000001", "T000002", "T000003", "T000004", "T000001"]
    assert {miner.template_id_of_cluster(m.cluster_id) for m in first} == {"T000001"}  # the 5th name links them
    clusters = miner.cluster_count
    assert miner.add("Invalid user mallory from 10.0.0.2").template_id == "T000001"
    assert miner.cluster_count == clusters + 1  # one cluster for every later name: "Invalid user <VAR> from <IP>"
    restarted = LogTemplateMiner(persistence=state)
    later = [restarted.add(f"Invalid user {u} from 10.0.0.3") for u in ("eve", "trent", "peggy")]
    assert {m.template_id for m in later} == {"T000001"}
    assert restarted.cluster_count == clusters + 1
    assert restarted.match("Invalid user victor from 10.0.0.4").template_id == "T000001"  # type: ignore[union-attr]


def test_a_slot_with_few_words_stays_constant() -> None:
    lines = [f"Task moved from {a} to RUNNING" for a in ("NEW", "QUEUED", "PAUSED", "BLOCKED")]
    assert len(set(mine_template_ids(lines))) == 4


def test_add_reports_new_templates_once() -> None:
    miner = LogTemplateMiner()
    first = miner.add("disk sda1 is full")
    again = miner.add("disk sdb2 is full")
    assert first.is_new and not again.is_new
    assert first.template_id == again.template_id
    assert first.template == "disk <*> is full"


def test_match_does_not_learn() -> None:
    miner = LogTemplateMiner()
    assert miner.match("never seen before") is None
    assert miner.cluster_count == 0


def test_params_extraction_is_optional() -> None:
    miner = LogTemplateMiner(replace(LogTemplateConfig(), extract_params=True))
    assert miner.add("took 15 ms on node-7").params == ("15 ms", "node-7")
    assert LogTemplateMiner().add("took 15 ms on node-7").params == ()


def test_explicit_config_ignores_a_drain3_ini_in_the_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "drain3.ini").write_text("[DRAIN]\nsim_th = 0.1\ndepth = 3\n")
    monkeypatch.chdir(tmp_path)
    assert len(set(mine_template_ids(["cupsd startup succeeded now", "cupsd shutdown succeeded now"]))) == 2


# -- persistence and bounds -------------------------------------------------------------------------

_LINES = [
    "Invalid user admin from 10.0.0.1",
    "Accepted password for root from 10.0.0.2 port 22 ssh2",
    "Invalid user test from 10.0.0.3",
    "session opened for user root by (uid=0)",
    "Received disconnect from 10.0.0.4: 11: Bye Bye [preauth]",
]


def test_template_ids_survive_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "templates.state"
    before = [m.template_id for m in map(LogTemplateMiner(persistence=FileTemplateState(state)).add, _LINES)]
    assert state.exists()
    restarted = LogTemplateMiner(persistence=FileTemplateState(state))
    after = [restarted.add(line) for line in _LINES]
    assert [m.template_id for m in after] == before
    assert not any(m.is_new for m in after)
    assert [restarted.match(line).template_id for line in _LINES] == before  # type: ignore[union-attr]
    assert before[0] == "T000001"


def test_file_state_is_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    handler = FileTemplateState(tmp_path / "sub" / "state")
    assert handler.load_state() is None
    handler.save_state(b"first")
    assert handler.load_state() == b"first"

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        handler.save_state(b"second")
    assert handler.load_state() == b"first"  # the old snapshot is intact
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["state"]  # no temporary file left


def test_cluster_count_is_bounded() -> None:
    miner = LogTemplateMiner(replace(LogTemplateConfig(), max_clusters=5))
    for n in range(50):
        miner.add(f"event{chr(97 + n % 26)}{chr(97 + n // 26)} happened quickly here")
    assert miner.cluster_count == 5
    assert len(miner.templates()) == 5


# -- error lines ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "level", "expected"),
    [
        ("all good", "ERROR", True),
        ("all good", "severe", True),
        ("all good", "INFO", False),
        ("java.lang.NullPointerException at Foo.bar", None, True),
        ("Connection refused by 10.0.0.1", "INFO", True),
        ("request timed out after 30s", None, True),
        ("Traceback (most recent call last):", None, True),
        ("Failed password for root", None, True),
        ("user logged in", None, False),
    ],
)
def test_is_error_line(message: str, level: str | None, expected: bool) -> None:
    assert is_error_line(message, level) is expected


# -- Loghub-2k --------------------------------------------------------------------------------------


def test_grouping_accuracy_on_loghub_2k() -> None:
    if not LOGHUB_2K.is_dir():
        pytest.skip(f"Loghub-2k data not found at {LOGHUB_2K}")
    files = sorted(LOGHUB_2K.glob("*/*_2k.log_structured_corrected.csv"))
    assert len(files) == 8, [f.name for f in files]
    results = {f.parent.name: evaluate_file(f) for f in files}
    assert {r["lines"] for r in results.values()} == {2000}
    accuracy = {system: r["grouping_accuracy"] for system, r in results.items()}
    average = sum(accuracy.values()) / len(accuracy)
    assert average >= 0.95, accuracy
