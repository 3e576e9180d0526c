"""Workflows that join the layers: simulate, replay into a store, train and evaluate the models."""
