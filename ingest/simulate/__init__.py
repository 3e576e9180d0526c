"""Simulators that produce labelled event streams (ground truth included) for demos, training and evaluation."""

from ingest.simulate.ops import OpsScenario, OpsSimConfig, simulate_ops, write_scenario

__all__ = ["OpsScenario", "OpsSimConfig", "simulate_ops", "write_scenario"]
