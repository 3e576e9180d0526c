"""JSON Schemas of the event contract and findings, exported for producers and consumers.

``sleuth schema export DIR`` writes them; a test checks that the committed files in ``schema/json/`` are
current, so a model change that is not re-exported fails CI.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import TypeAdapter

from schema.events import EVENT_ADAPTER, AlertmanagerWebhook
from schema.findings import Finding

JSON_DIR = Path(__file__).with_name("json")


def documents() -> dict[str, str]:
    """File name -> JSON Schema text, deterministic."""
    schemas = {
        "event.schema.json": EVENT_ADAPTER.json_schema(),
        "alertmanager-webhook.schema.json": TypeAdapter(AlertmanagerWebhook).json_schema(),
        "finding.schema.json": TypeAdapter(Finding).json_schema(),
    }
    return {name: json.dumps(schema, indent=2, sort_keys=True) + "\n" for name, schema in schemas.items()}


def export(directory: Path = JSON_DIR) -> list[Path]:
    """Write every schema into ``directory``; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in documents().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
