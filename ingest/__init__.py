"""Events into the graph: decoding, enrichment, mapping, batched idempotent writes, sources and sinks."""
