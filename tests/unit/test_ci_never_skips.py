"""Under CI=true a test that needs a server fails when the server is missing; elsewhere it is skipped."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TARGET = "tests/conformance/test_store_conformance.py::test_cursor_is_the_highest_offset_written[neo4j]"


@pytest.mark.parametrize(("ci", "expected_code", "expected_text"), [
    ("true", 1, "CI=true: tests that need servers never skip"),
    ("", 0, "1 skipped"),
])
def test_a_missing_server(tmp_path: Path, ci: str, expected_code: int, expected_text: str) -> None:
    env = {**os.environ, "CI": ci, "SLEUTH_NEO4J_URI": "bolt://127.0.0.1:9", "SLEUTH_SERVICES_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", TARGET],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == expected_code, result.stdout[-2000:]
    assert expected_text in result.stdout
