"""Temporal graph models: root-cause ranking and transaction scoring, with training and evaluation."""
