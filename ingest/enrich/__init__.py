"""Enrichment of raw telemetry: metric anomaly scores (log templates live in :mod:`ingest.logs`)."""
