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


@dataclass(frozen=True)
class MeanAdjacency:
    """One edge type's mean aggregation, as a sparse matrix over the nodes that take part in it.

    Column j stands for node ``src[j]``, or node j when ``src`` is ``None`` (all N nodes). ``matrix[i, j]``
    is ``1 / in-degree`` of node ``dst[i]`` when column j's node has an edge to it (times the number of such
    edges: the mean over an edge list counts duplicates), so ``matrix @ h`` is SAGEConv's mean for the nodes
    with in-edges. Nodes without in-edges of the type aggregate to zero and are left out."""

    dst: torch.Tensor  # [D] nodes with at least one in-edge
    src: torch.Tensor | None  # [S] nodes with out-edges, when the weight is applied before aggregating
    matrix: torch.Tensor  # sparse [D, S or N]

    @staticmethod
    def build(edges: torch.Tensor, n: int) -> MeanAdjacency:
        """From a PyG edge list ``[2, E]`` (row 0: source, row 1: target) over ``n`` nodes."""
        dst, rows = torch.unique(edges[1], return_inverse=True)
        src, cols = torch.unique(edges[0], return_inverse=True)
        # (A h) W^T == A (h W^T): the conv's weight goes on whichever side has fewer nodes (the hosts both for
        # instance -> host and for host -> instance edges).
        if src.numel() >= dst.numel():
            src, cols = None, edges[0]
        degree = torch.bincount(rows, minlength=dst.numel())
        values = 1.0 / degree[rows].to(torch.float32)
        shape = (dst.numel(), n if src is None else src.numel())
        # COO rather than CSR: as fast here, and not a beta layout. Invariants hold by construction.
        matrix = torch.sparse_coo_tensor(torch.stack([rows, cols]), values, shape, check_invariants=False)
        return MeanAdjacency(dst, src, matrix.coalesce())


class TypedConv(nn.Module):
    """One message-passing layer: a SAGEConv per edge type, summed, plus a residual projection.

    Each SAGEConv (mean aggregation, ``root_weight=False``) computes ``lin_l(mean of in-neighbours)``, where
    a node without in-edges of the type aggregates to zero and so gets ``lin_l``'s bias alone. The edges
    are the same in every time slice, so rather than calling the convs on T copies of every edge list (a
    gather and a scatter over T*N rows per type and layer, and ``lin_l`` on all T*N rows), :meth:`forward`
    does one sparse product per type over the node states viewed as ``[N, T*H]`` and applies ``lin_l``'s
    weight only to the nodes the type touches. The convs stay as the parameter holders: checkpoints keep
    their keys, and they document what is computed. (PyG's own sparse path, ``SAGEConv(h, adj_t)``, takes
    one slice's ``[N, H]`` at a time and transforms every node; its ``spmm`` is ``torch.sparse.mm``.)"""

    def __init__(self, hidden: int, edge_types: tuple[str, ...]) -> None:
        super().__init__()
        self.edge_types = edge_types
        # forward() computes exactly this configuration (mean, no root weight): change the two together.
        self.convs = nn.ModuleDict({t: SAGEConv(hidden, hidden, aggr="mean", root_weight=False) for t in edge_types})
        self.self_loop = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden)

    def reset_parameters(self) -> None:
        for conv in self.convs.values():
            conv.reset_parameters()
        self.self_loop.reset_parameters()
        self.norm.reset_parameters()

    def forward(self, h: torch.Tensor, adjacency: dict[str, MeanAdjacency]) -> torch.Tensor:
        """``h``: node states [N, T, H]; ``adjacency``: the edge types that have edges. Returns [N, T, H]."""
        n, t, hidden = h.shape
        present = [name for name in self.edge_types if name in adjacency]
        # Every present type's conv adds its bias to every node: fold them into the residual projection's.
        bias = self.self_loop.bias
        for name in present:
            bias = bias + self.convs[name].lin_l.bias
        out = nn.functional.linear(h, self.self_loop.weight, bias)
        flat = h.reshape(n, t * hidden)
        for name in present:
            adj, weight = adjacency[name], self.convs[name].lin_l.weight
            if adj.src is None:  # aggregate, then transform the (fewer) target nodes
                msg = nn.functional.linear(torch.sparse.mm(adj.matrix, flat).view(-1, t, hidden), weight)
            else:  # transform the (fewer) source nodes, then aggregate
                y = nn.functional.linear(h.index_select(0, adj.src), weight)
                msg = torch.sparse.mm(adj.matrix, y.view(-1, t * hidden)).view(-1, t, hidden)
            out.index_add_(0, adj.dst, msg)
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
        # Node-major [N, T, H]: the layout the sparse products (rows are nodes) and the GRU (batch_first) want.
        h = self.encode(x.transpose(0, 1))
        adjacency = {name: MeanAdjacency.build(e, N) for name, e in edges.items()
                     if name in self.config.edge_types and e.numel()}
        for conv in self.convs:
            h = self.dropout(conv(h, adjacency))
        seq, last = self.gru(h)
        summary = torch.cat([last[0], seq.max(dim=1).values, x.max(dim=0).values], dim=-1)
        return self.head(summary).squeeze(-1)
