"""Saving and loading the fraud TGN: parameters + config + metrics, never the streaming state.

The memory buffers (``memory.memory``, ``memory.last_update``, ``memory._assoc``) are per-account stream
state sized by the node count, not learned parameters, so they are left out: a loaded model starts with an
empty memory sized by its config and grows as accounts appear.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from gnn.fraud.tgn import FraudTGN, TGNConfig, TGNScorer

if TYPE_CHECKING:
    from gnn.fraud.rings import DetectorConfig, FraudDetector

#: Where the shipped checkpoint lives (relative to the repository root).
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "fraud.pt"
_STATE_KEYS = ("memory.memory", "memory.last_update", "memory._assoc")


def save_checkpoint(model: FraudTGN, path: str | Path, metrics: dict[str, Any], train_config: dict[str, Any]
                    ) -> tuple[Path, Path]:
    """Write ``<path>`` (torch) and ``<path>.json`` beside it (config + metrics, human-readable)."""
    pt = Path(path)
    pt.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v for k, v in model.state_dict().items() if k not in _STATE_KEYS}
    payload = {"model_config": asdict(model.config), "train_config": train_config, "metrics": metrics,
               "state_dict": state}
    torch.save(payload, pt)
    meta = pt.with_suffix(".json")
    meta.write_text(json.dumps({k: v for k, v in payload.items() if k != "state_dict"}, indent=2, default=str)
                    + "\n", encoding="utf-8")
    return pt, meta


def load_model(path: str | Path = DEFAULT_CHECKPOINT) -> tuple[FraudTGN, dict[str, Any]]:
    """The model in a checkpoint (empty memory) and the checkpoint's metadata."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    model = FraudTGN(TGNConfig(**payload["model_config"]))
    missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
    if set(missing) - set(_STATE_KEYS) or unexpected:
        raise ValueError(f"checkpoint {path} does not fit the model: missing={missing} unexpected={unexpected}")
    model.reset_state()
    model.eval()
    return model, {k: v for k, v in payload.items() if k != "state_dict"}


def load_scorer(path: str | Path = DEFAULT_CHECKPOINT, max_nodes: int | None = 500_000) -> TGNScorer:
    """A streaming scorer with the checkpoint's parameters and an empty memory, remembering at most
    ``max_nodes`` accounts."""
    model, _ = load_model(path)
    return TGNScorer(model, max_nodes=max_nodes)


def load_detector(path: str | Path | None = DEFAULT_CHECKPOINT, config: DetectorConfig | None = None
                  ) -> FraudDetector:
    """A :class:`FraudDetector` with the checkpoint's TGN (``path=None``: rules and matcher only); the TGN
    remembers as many accounts as the rest of the detector (``DetectorConfig.max_accounts``)."""
    from gnn.fraud.rings import DetectorConfig, FraudDetector

    config = config or DetectorConfig()
    return FraudDetector(config, scorer=load_scorer(path, config.max_accounts) if path is not None else None)
