"""Root-cause analysis: incident subgraph features, the temporal GNN ranker, baselines, engine, training, evaluation.

Entry points: :class:`gnn.rca.engine.RcaEngine`, :func:`server.workflows.rca.train_rca` (training and
replay-based evaluation live there, above ingest),
:func:`gnn.rca.checkpoint.load_checkpoint`.
"""
