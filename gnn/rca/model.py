"""The temporal GNN root-cause ranker.

Per time slice, node features are encoded and passed along the dependency edges in both directions, with
one graph convolution per edge type (caller->callee, callee->caller, instance<->service, instance<->host,
change<->target): a cause's signal reaches its callers and the symptom's context reaches the candidates.
A GRU runs over the slices per node (order and onset matter: causes go wrong first), and a head scores
every node. The model has no node-id embeddings, so it applies to topologies it never saw.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch_geometric.nn import SAGEConv

from gnn.rca.features import EDGE_TYPES, N_FEATURES


@dataclass(frozen=True)
class RcaModelConfig:
    """Sizes of the model."""

    in_features: int = N_FEATURES
    hidden: int = 48
    layers: int = 2
    dropout: float = 0.1
    edge_types: tuple[str, ...] = EDGE_TYPES

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["edge_types"] = list(self.edge_types)
        return data


class TypedConv(nn.Module):
    """One message-passing layer: a SAGEConv per edge type, summed, plus a residual projection."""

    def __init__(self, hidden: int, edge_types: tuple[str, ...]) -> None:
        super().__init__()
        self.edge_types = edge_types
        self.convs = nn.ModuleDict({t: SAGEConv(hidden, hidden, aggr="mean", root_weight=False) for t in edge_types})
        self.self_loop = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden)

    def reset_parameters(self) -> None:
        for conv in self.convs.values():
            conv.reset_parameters()
        self.self_loop.reset_parameters()
        self.norm.reset_parameters()

    def forward(self, h: torch.Tensor, edges: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.self_loop(h)
        for name in self.edge_types:
            e = edges.get(name)
            if e is not None and e.numel():
                out = out + self.convs[name](h, e)
        return self.norm(torch.relu(out) + h)


class RcaGnn(nn.Module):
    """Scores every node of an incident graph; higher means more likely the root cause."""

    def __init__(self, config: RcaModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or RcaModelConfig()
        c = self.config
        self.encode = nn.Sequential(nn.Linear(c.in_features, c.hidden), nn.ReLU(), nn.Linear(c.hidden, c.hidden))
        self.convs = nn.ModuleList([TypedConv(c.hidden, c.edge_types) for _ in range(c.layers)])
        self.gru = nn.GRU(c.hidden, c.hidden, batch_first=True)
        self.dropout = nn.Dropout(c.dropout)
        # The head sees the temporal summary and the last slice's graph context.
        self.head = nn.Sequential(nn.Linear(2 * c.hidden + c.in_features, c.hidden), nn.ReLU(), nn.Linear(c.hidden, 1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialise every weight (deterministic under ``torch.manual_seed``)."""
        for module in (*self.encode, *self.head):
            if isinstance(module, nn.Linear):
                module.reset_parameters()
        for conv in self.convs:
            conv.reset_parameters()
        self.gru.reset_parameters()

    def forward(self, x: torch.Tensor, edges: dict[str, torch.Tensor]) -> torch.Tensor:
        """``x``: [T, N, F] per-slice features; ``edges``: type -> [2, E]. Returns scores [N]."""
        T, N, F = x.shape
        if F > self.config.in_features:  # a model trained before features were appended uses the first ones
            x = x[..., : self.config.in_features]
        h = self.encode(x).reshape(T * N, -1)
        # All slices at once: slice t's copy of node i is node t*N+i (the same edges in every slice).
        offsets = torch.arange(T, dtype=torch.long).repeat_interleave(1) * N
        batched = {}
        for name, e in edges.items():
            if e.numel():
                batched[name] = (e.unsqueeze(0) + offsets.view(T, 1, 1)).permute(1, 0, 2).reshape(2, -1)
        for conv in self.convs:
            h = self.dropout(conv(h, batched))
        h = h.reshape(T, N, -1).transpose(0, 1)  # [N, T, H]
        seq, last = self.gru(h)
        summary = torch.cat([last[0], seq.max(dim=1).values, x.max(dim=0).values], dim=-1)
        return self.head(summary).squeeze(-1)
