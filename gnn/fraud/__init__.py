"""Fraud detection: typologies, temporal matcher, TGN scorer, rings, training and evaluation."""
