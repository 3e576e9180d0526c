"""AMLSim converter: ``nodes.csv`` + ``transactions.csv`` -> ``events.jsonl`` + ``labels.jsonl``.

Usage: ``python -m bench.datasets.amlsim SRC_DIR --out DIR [--blind-amounts SEED]``. ``SRC_DIR`` is the
extracted sample folder (the one holding ``nodes.csv``), a folder above it, or the ``.tgz`` itself.

* A time step is one day (step 1 = the start date). AMLSim gives no time inside a step, so transfers of
  one step keep their file order, spread evenly over the day (the k-th of n at ``(k + 0.5) / n`` of it).
  Packing a day's transfers into its first minutes instead would make every account look like it moves
  money within seconds at midnight, which time-aware detectors (pass-through, velocity, time of day)
  would read as signal.
* Labels are per account only (``isFraud``); there are no transaction or pattern labels.
* ``fraudStep`` is a label leak (it is >= 0 for fraud accounts only) and ``init_balance`` carries no
  signal: neither is converted.
* ``--blind-amounts SEED`` replaces every amount by a uniform draw from the normal range (5th..95th
  percentile of the amounts of transfers between two normal accounts), so that only temporal structure
  is left to learn from (the generator gives laundering transfers amounts no normal transfer uses).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from schema.events import TransactionEvent

DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ConvertStats:
    """What the conversion did."""

    accounts: int
    fraud_accounts: int
    transactions: int
    skipped_self_transfers: int
    blinded: bool
    amount_range: tuple[float, float] | None


def find_source(src: str | Path, scratch: Path | None = None) -> Path:
    """The folder that holds ``nodes.csv`` (extracting a ``.tgz`` into ``scratch`` when given one)."""
    path = Path(src)
    if path.is_file() and path.name.endswith((".tgz", ".tar.gz")):
        target = scratch or Path(tempfile.mkdtemp(prefix="amlsim-"))
        with tarfile.open(path) as tar:
            tar.extractall(target, filter="data")
        path = target
    if (path / "nodes.csv").exists():
        return path
    found = sorted(path.rglob("nodes.csv"))
    if not found:
        raise FileNotFoundError(f"no nodes.csv under {src}")
    return found[0].parent


def account_id(node: str) -> str:
    """The account id of an AMLSim node."""
    return f"aml-{node}"


def normal_amount_range(nodes: dict[str, bool], rows: list[dict[str, str]]) -> tuple[float, float]:
    """5th and 95th percentile of amounts between two normal accounts."""
    amounts = sorted(float(r["value"]) for r in rows
                     if not nodes.get(r["sourceNodeId"], False) and not nodes.get(r["targetNodeId"], False))
    if not amounts:
        raise ValueError("no transfer between normal accounts to take the normal range from")
    return amounts[int(0.05 * (len(amounts) - 1))], amounts[int(0.95 * (len(amounts) - 1))]


def convert(src: str | Path, out: str | Path, blind_seed: int | None = None,
            start: datetime = DEFAULT_START) -> ConvertStats:
    """Convert one AMLSim sample into ``events.jsonl`` + ``labels.jsonl`` under ``out``."""
    with tempfile.TemporaryDirectory(prefix="amlsim-") as scratch:
        folder = find_source(src, Path(scratch))
        with (folder / "nodes.csv").open(newline="") as fh:
            nodes = {r["nodeid"]: r["isFraud"].strip() == "1" for r in csv.DictReader(fh)}
        with (folder / "transactions.csv").open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    amount_range = normal_amount_range(nodes, rows) if blind_seed is not None else None
    rng = random.Random(blind_seed)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Stable sort by step keeps the file order inside a step.
    rows.sort(key=lambda r: int(r["time"]))
    per_day: dict[int, int] = {}
    for r in rows:
        per_day[int(r["time"])] = per_day.get(int(r["time"]), 0) + 1
    skipped, written, per_step = 0, 0, 0
    last_step = None
    with (out_dir / "events.jsonl").open("w", encoding="utf-8") as fh:
        for i, r in enumerate(rows):
            step = int(r["time"])
            per_step = per_step + 1 if step == last_step else 0
            last_step = step
            if r["sourceNodeId"] == r["targetNodeId"]:
                skipped += 1
                continue
            amount = float(r["value"])
            if amount_range is not None:
                amount = round(rng.uniform(*amount_range), 2)
            event = TransactionEvent(
                id=f"aml-tx-{i}",
                at=start + timedelta(days=step - 1, microseconds=round((per_step + 0.5) / per_day[step] * 86_400e6)),
                src=account_id(r["sourceNodeId"]), dst=account_id(r["targetNodeId"]), amount=amount,
                currency="USD", channel="transfer")
            fh.write(event.model_dump_json() + "\n")
            written += 1
    with (out_dir / "labels.jsonl").open("w", encoding="utf-8") as fh:
        for node, fraud in sorted(nodes.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else kv[0]):
            fh.write(json.dumps({"account": account_id(node), "fraud": fraud}) + "\n")
    return ConvertStats(len(nodes), sum(nodes.values()), written, skipped, blind_seed is not None, amount_range)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", metavar="SRC_DIR", help="AMLSim sample folder (with nodes.csv) or its .tgz")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--blind-amounts", type=int, metavar="SEED", default=None,
                        help="replace every amount by a draw from the normal range (seeded)")
    args = parser.parse_args(argv)
    stats = convert(args.src, args.out, args.blind_amounts)
    print(json.dumps(stats.__dict__))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
