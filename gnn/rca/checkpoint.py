"""Saving and loading the RCA model with its configuration and metrics (``.pt`` weights + ``.json`` card)."""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch

from gnn.rca.features import FeatureConfig
from gnn.rca.model import RcaGnn, RcaModelConfig


def save_checkpoint(path: str | Path, model: RcaGnn, feature_config: FeatureConfig, rules_weight: float,
                    card: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``path`` (weights + configs) and ``path.with_suffix('.json')`` (configs, metrics, history)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": "sleuthgraph.rca/1",
        "model_config": model.config.to_dict(),
        "feature_config": asdict(feature_config),
        "rules_weight": rules_weight,
        # Half precision keeps the shipped file small; weights are cast back to float32 on load.
        "state_dict": {k: v.detach().to(torch.float16) if v.is_floating_point() else v
                       for k, v in model.state_dict().items()},
    }
    torch.save(payload, path)
    card_path = path.with_suffix(".json")
    card_path.write_text(json.dumps({**card, "model_config": payload["model_config"],
                                     "feature_config": payload["feature_config"], "rules_weight": rules_weight},
                                    indent=2, sort_keys=True, default=str) + "\n")
    return path, card_path


def load_checkpoint(path: str | Path) -> tuple[RcaGnn, FeatureConfig, float]:
    """Load a model saved by :func:`save_checkpoint`: the model (eval mode), its feature config, rules weight."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if payload.get("format") != "sleuthgraph.rca/1":
        raise ValueError(f"{path}: not an RCA checkpoint")
    mc = dict(payload["model_config"])
    mc["edge_types"] = tuple(mc["edge_types"])
    model = RcaGnn(RcaModelConfig(**mc))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()})
    model.eval()
    known = {f.name for f in fields(FeatureConfig)}
    saved = {k: v for k, v in payload["feature_config"].items() if k in known}
    if "metric_groups" in saved:  # JSON-like lists in the payload; the config is frozen and hashable
        saved["metric_groups"] = tuple((str(p), str(g)) for p, g in saved["metric_groups"])
    fc = FeatureConfig(**saved)
    return model, fc, float(payload.get("rules_weight", 0.0))
