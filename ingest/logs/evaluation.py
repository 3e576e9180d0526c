"""How well template mining groups real log lines: grouping accuracy on labelled (Loghub-style) files.

Grouping accuracy (Zhu et al., "Tools and Benchmarks for Automated Log Parsing"): a line is correct when the
set of lines the parser put in its group is exactly the set of lines that share its true template; the
accuracy is the share of correct lines. Splitting a true template in two, or merging two, makes every line
of the affected groups wrong.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections import Counter
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

from ingest.logs.templates import LogTemplateConfig, mine_template_ids

CONTENT_COLUMN = "Content"
TRUTH_COLUMN = "EventId"


def grouping_accuracy(truth: Sequence[Hashable], predicted: Sequence[Hashable]) -> float:
    """Share of lines whose predicted group is exactly the set of lines with their true label."""
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} true labels but {len(predicted)} predicted labels")
    if not truth:
        raise ValueError("no lines to score")
    true_size = Counter(truth)
    pred_size = Counter(predicted)
    pair_size = Counter(zip(truth, predicted, strict=True))
    # The two groups of a line are the same set iff all three counts agree: every line with its true label
    # got its predicted label, and no other line did.
    correct = sum(n for (t, p), n in pair_size.items() if n == true_size[t] and n == pred_size[p])
    return correct / len(truth)


def read_labelled(csv_path: str | os.PathLike[str]) -> tuple[list[str], list[str]]:
    """The ``Content`` and ``EventId`` columns of a labelled CSV file."""
    contents: list[str] = []
    truth: list[str] = []
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = {CONTENT_COLUMN, TRUTH_COLUMN} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{csv_path}: missing column(s) {sorted(missing)}")
        for row in reader:
            contents.append(row[CONTENT_COLUMN] or "")
            truth.append(row[TRUTH_COLUMN] or "")
    return contents, truth


def evaluate_file(csv_path: str | os.PathLike[str], config: LogTemplateConfig | None = None) -> dict[str, Any]:
    """Mine the ``Content`` column of a labelled CSV and score it against ``EventId``.

    Lines are learned in file order; each line is then labelled with the template its Drain cluster
    belongs to in the final state (templates keep evolving while lines stream in).
    """
    contents, truth = read_labelled(csv_path)
    predicted = mine_template_ids(contents, config)
    return {"file": str(csv_path), "lines": len(contents), "grouping_accuracy": grouping_accuracy(truth, predicted)}


def _main(argv: Sequence[str] | None = None) -> int:
    """Evaluate labelled CSV files (or folders searched for ``*_structured_corrected.csv``)."""
    parser = argparse.ArgumentParser(description=_main.__doc__)
    parser.add_argument("paths", nargs="+", type=Path)
    args = parser.parse_args(argv)
    files: list[Path] = []
    for path in args.paths:
        files.extend(sorted(path.rglob("*_structured_corrected.csv")) if path.is_dir() else [path])
    results = [evaluate_file(f) for f in files]
    for result in results:
        print(json.dumps(result))
    if results:
        mean = sum(r["grouping_accuracy"] for r in results) / len(results)
        print(json.dumps({"files": len(results), "average_grouping_accuracy": mean}))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
