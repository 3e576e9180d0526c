"""TGN transaction scorer: per-account memory (PyG ``TGNMemory``), time encoding, attention over recent
neighbours (``TransformerConv``), and a classifier over (sender, receiver, transaction).

Streaming contract: every transaction is scored from the memory as it was *before* the transaction,
then the memory and the neighbour lists are updated (score first, then update). External account ids
map to node indices on first sight; when the index outgrows the memory, the memory, its message stores
and the neighbour lists are resized, so accounts never seen in training are scored like any other (from
an empty memory). Neighbour lists are fixed-size rings per node, so attention cost is bounded.

State is bounded too: each account costs about 4 KB (memory, stored messages, neighbour lists), so the
index holds at most ``max_nodes`` accounts. Past that, the least recently seen sixteenth is forgotten
(:meth:`FraudTGN.forget`) and their slots are reused; an account that comes back starts from an empty
memory, as a new one does.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
from torch_geometric.nn import TransformerConv
from torch_geometric.nn.models.tgn import IdentityMessage, LastAggregator, TGNMemory

from schema.events import TransactionEvent

CHANNELS: tuple[str, ...] = ("card", "transfer", "p2p", "ach", "wire", "cash", "online", "pos", "atm")
#: Raw per-transaction features (see :func:`tx_features`).
FEATURE_DIM = len(CHANNELS) + 6


@dataclass(frozen=True)
class TGNConfig:
    """Model sizes and streaming bounds."""

    memory_dim: int = 32
    time_dim: int = 16
    embed_dim: int = 32
    hidden: int = 64
    #: Recent neighbours kept per node for attention.
    neighbours: int = 8
    #: Nodes allocated up front; grows by doubling.
    initial_nodes: int = 4096
    #: Memory timestamps are integers in this unit (seconds are too fine for the time encoder).
    time_unit_s: float = 60.0
    dropout: float = 0.1


def tx_features(tx: TransactionEvent) -> list[float]:
    """Features of one transaction: amount (log), channel, time of day and week, merchant flag."""
    hour = tx.at.hour + tx.at.minute / 60.0
    day = tx.at.weekday() + hour / 24.0
    channel = [1.0 if tx.channel == c else 0.0 for c in CHANNELS]
    return [math.log1p(tx.amount) / 10.0, *channel,
            math.sin(2 * math.pi * hour / 24), math.cos(2 * math.pi * hour / 24),
            math.sin(2 * math.pi * day / 7), math.cos(2 * math.pi * day / 7), 1.0 if tx.merchant else 0.0]


class NeighbourStore:
    """The ``k`` most recent neighbours of every node (fixed-size rings), growable."""

    def __init__(self, num_nodes: int, size: int, feat_dim: int) -> None:
        self.size, self.feat_dim = size, feat_dim
        self.nbr = torch.full((num_nodes, size), -1, dtype=torch.long)
        self.t = torch.zeros((num_nodes, size), dtype=torch.long)
        self.msg = torch.zeros((num_nodes, size, feat_dim))
        self.ptr = torch.zeros(num_nodes, dtype=torch.long)

    def reset_state(self) -> None:
        """Forget all neighbours."""
        self.nbr.fill_(-1)
        self.t.zero_()
        self.msg.zero_()
        self.ptr.zero_()

    def grow(self, num_nodes: int) -> None:
        """Make room for ``num_nodes`` nodes (existing rows kept)."""
        extra = num_nodes - self.nbr.size(0)
        if extra <= 0:
            return
        self.nbr = torch.cat([self.nbr, torch.full((extra, self.size), -1, dtype=torch.long)])
        self.t = torch.cat([self.t, torch.zeros((extra, self.size), dtype=torch.long)])
        self.msg = torch.cat([self.msg, torch.zeros((extra, self.size, self.feat_dim))])
        self.ptr = torch.cat([self.ptr, torch.zeros(extra, dtype=torch.long)])

    def insert(self, src: Tensor, dst: Tensor, t: Tensor, msg: Tensor) -> None:
        """Record each interaction at both ends (overwriting the oldest neighbour), in batch order.

        Vectorised: the k-th occurrence of a node in the batch (sender then receiver of each interaction)
        goes to slot ``ptr + k``; only a node's last ``size`` occurrences are written, so every slot is
        written once and the result equals inserting one interaction at a time.
        """
        if src.numel() == 0:
            return
        nodes = torch.stack([src, dst], dim=1).reshape(-1)
        others = torch.stack([dst, src], dim=1).reshape(-1)
        _, inverse, counts = torch.unique(nodes, return_inverse=True, return_counts=True)
        order = torch.argsort(inverse, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.empty_like(nodes)
        rank[order] = torch.arange(nodes.numel()) - starts.repeat_interleave(counts)
        keep = rank >= counts[inverse] - self.size
        nodes, others, rank = nodes[keep], others[keep], rank[keep]
        pick = torch.arange(src.numel()).repeat_interleave(2)[keep]
        slot = (self.ptr[nodes] + rank) % self.size
        self.nbr[nodes, slot] = others
        self.t[nodes, slot] = t[pick]
        self.msg[nodes, slot] = msg[pick]
        every = torch.stack([src, dst], dim=1).reshape(-1)
        self.ptr.index_add_(0, every, torch.ones(every.numel(), dtype=torch.long))

    def forget(self, nodes: Tensor) -> None:
        """Empty the lists of ``nodes`` and drop every entry of other lists that points at them."""
        self.nbr[nodes] = -1
        self.t[nodes] = 0
        self.msg[nodes] = 0.0
        self.ptr[nodes] = 0
        # A lookup table instead of torch.isin: one gather over the lists rather than a search per entry.
        forgotten = torch.zeros(self.nbr.size(0) + 1, dtype=torch.bool)
        forgotten[nodes] = True
        self.nbr[forgotten[self.nbr]] = -1  # -1 (no neighbour) reads the table's last entry: False

    def subgraph(self, n_id: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Rows (``n_id`` first, then one row per neighbour occurrence), edges neighbour row -> centre row,
        edge times and messages. Duplicated rows are cheaper than deduplicating in Python."""
        nbr, t, msg = self.nbr[n_id], self.t[n_id], self.msg[n_id]
        mask = nbr >= 0
        centre = torch.arange(n_id.numel()).view(-1, 1).expand_as(nbr)[mask]
        neighbours = nbr[mask]
        rows = torch.cat([n_id, neighbours])
        edge_index = torch.stack([torch.arange(neighbours.numel()) + n_id.numel(), centre])
        return rows, edge_index, t[mask], msg[mask]


class FraudTGN(nn.Module):
    """TGN memory + graph attention embedding + transaction classifier."""

    def __init__(self, config: TGNConfig, num_nodes: int | None = None) -> None:
        super().__init__()
        self.config = config
        n = num_nodes or config.initial_nodes
        self.memory = TGNMemory(n, FEATURE_DIM, config.memory_dim, config.time_dim,
                                message_module=IdentityMessage(FEATURE_DIM, config.memory_dim, config.time_dim),
                                aggregator_module=LastAggregator())
        self.conv = TransformerConv(config.memory_dim, config.embed_dim // 2, heads=2, dropout=config.dropout,
                                    edge_dim=config.time_dim + FEATURE_DIM)
        self.head = nn.Sequential(nn.Linear(2 * config.embed_dim + FEATURE_DIM,
                                            config.hidden), nn.ReLU(), nn.Dropout(config.dropout),
                                  nn.Linear(config.hidden, 1))
        self.neighbours = NeighbourStore(n, config.neighbours, FEATURE_DIM)

    @property
    def num_nodes(self) -> int:
        return self.memory.num_nodes

    def reset_parameters(self) -> None:
        """Re-initialise every learnable parameter (and the streaming state)."""
        self.memory.reset_parameters()
        self.conv.reset_parameters()
        for layer in self.head:
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()
        self.reset_state()

    def reset_state(self) -> None:
        """Empty memory, message stores and neighbour lists (parameters stay)."""
        self.memory.reset_state()
        self.neighbours.reset_state()

    def grow(self, num_nodes: int) -> None:
        """Resize memory, message stores and neighbour lists to hold ``num_nodes`` nodes."""
        mem = self.memory
        old = mem.num_nodes
        if num_nodes <= old:
            return
        extra = num_nodes - old
        mem.memory = torch.cat([mem.memory, mem.memory.new_zeros((extra, mem.memory_dim))])
        mem.last_update = torch.cat([mem.last_update, mem.last_update.new_zeros(extra)])
        mem._assoc = torch.cat([mem._assoc, mem._assoc.new_zeros(extra)])  # noqa: SLF001 - PyG internals
        empty = self._no_message()
        for j in range(old, num_nodes):
            mem.msg_s_store[j] = empty
            mem.msg_d_store[j] = empty
        mem.num_nodes = num_nodes
        self.neighbours.grow(num_nodes)

    def _no_message(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """A message-store entry holding no message (source, destination, time, raw message: all empty)."""
        mem = self.memory
        empty_i = mem.memory.new_empty((0,), dtype=torch.long)
        return empty_i, empty_i, empty_i, mem.memory.new_empty((0, mem.raw_msg_dim))

    def forget(self, nodes: Tensor) -> None:
        """Reset ``nodes`` to the state of a node never seen (their slots are about to hold other accounts):
        memory, last update, stored messages and neighbour lists, and every reference other nodes hold to them.

        A stored message names its node's last partner, and the memory update of that node reads the partner's
        memory: a node whose last partner was one of ``nodes`` appears in their neighbour lists (the last
        interaction of both), so only those partners' stored messages are checked."""
        if nodes.numel() == 0:
            return
        mem = self.memory
        forgotten = nodes.tolist()
        gone = set(forgotten)
        partners = self.neighbours.nbr[nodes]
        partners = [p for p in partners[partners >= 0].unique().tolist() if p not in gone]
        empty = self._no_message()
        for store in (mem.msg_s_store, mem.msg_d_store):
            for node in partners:
                if not gone.isdisjoint(store[node][1].tolist()):
                    store[node] = empty
            for node in forgotten:
                store[node] = empty
        mem.memory[nodes] = 0.0
        mem.last_update[nodes] = 0
        self.neighbours.forget(nodes)

    def forward(self, src: Tensor, dst: Tensor, t: Tensor, feat: Tensor) -> Tensor:
        """Logits for a batch of transactions from the current state (does not update it)."""
        n_id = torch.cat([src, dst]).unique()
        rows, edge_index, edge_t, edge_msg = self.neighbours.subgraph(n_id)
        # Fresh memory for the batch's own nodes; neighbours only give context, so their stored memory
        # (at most one batch stale during training) is used as is. This keeps training cost linear in the
        # batch instead of in batch x neighbours.
        centre, _ = self.memory(n_id)
        mem = torch.cat([centre, self.memory.memory[rows[n_id.numel():]].detach()])
        rel = (t.max() - edge_t).clamp(min=0).to(mem.dtype)
        edge_attr = torch.cat([self.memory.time_enc(rel), edge_msg], dim=-1)
        z = self.conv(mem, edge_index, edge_attr)
        position = torch.full((int(n_id.max()) + 1,), -1, dtype=torch.long)
        position[n_id] = torch.arange(n_id.numel())
        zs, zd = z[position[src]], z[position[dst]]
        return self.head(torch.cat([zs, zd, feat], dim=-1)).view(-1)

    def update(self, src: Tensor, dst: Tensor, t: Tensor, feat: Tensor, detach: bool = True) -> None:
        """Feed a batch of transactions into the memory and the neighbour lists.

        Training passes ``detach=False`` and detaches after the optimiser step (PyG's TGN recipe)."""
        self.memory.update_state(src, dst, t, feat)
        self.neighbours.insert(src, dst, t, feat.detach())
        if detach:
            self.memory.detach()


class NodeIndex:
    """External account id -> node slot, assigned on first sight, at most ``capacity`` accounts.

    Past the capacity, the least recently seen ``capacity // 16`` accounts are forgotten at once and their
    slots reused; :attr:`freed` collects those slots until the owner of the model state resets them."""

    def __init__(self, capacity: int | None = None) -> None:
        if capacity is not None and capacity < 16:
            raise ValueError("a node index holds at least 16 accounts")
        self.capacity = capacity
        self.ids: OrderedDict[str, int] = OrderedDict()
        #: Slots handed out so far (the model must hold this many nodes).
        self.slots = 0
        #: Slots of forgotten accounts, not yet reset in the model.
        self.freed: list[int] = []
        self._free: list[int] = []

    def __len__(self) -> int:
        return len(self.ids)

    def get(self, account: str) -> int:
        idx = self.ids.get(account)
        if idx is not None:
            self.ids.move_to_end(account)
            return idx
        if self.capacity is not None and len(self.ids) >= self.capacity:
            for _ in range(self.capacity // 16):
                _, slot = self.ids.popitem(last=False)
                self._free.append(slot)
                self.freed.append(slot)
        if self._free:
            idx = self._free.pop()
        else:
            idx = self.slots
            self.slots += 1
        self.ids[account] = idx
        return idx


class TGNScorer:
    """Streaming wrapper: ids -> indices, growth, and score-then-update on micro-batches."""

    def __init__(self, model: FraudTGN, threads: int | None = 1, max_nodes: int | None = 500_000) -> None:
        self.model = model
        #: Accounts remembered at most (``None``: unbounded); see the module docstring.
        self.max_nodes = max_nodes
        self.index = NodeIndex(max_nodes)
        self._t0: float | None = None
        #: Torch intra-op threads while scoring. The model's tensors are tiny: on a busy machine extra threads
        #: only contend (measured on 2 shared cores: ScoreTransaction p50 51 ms with 2 threads, 6 ms with 1).
        #: Torch's setting is process-wide; ``None`` leaves it alone.
        self.threads = threads
        # Leaving training mode makes PyG's TGNMemory flush its message stores into *every* node's memory
        # (a GRU step even for nodes without messages); do it once here, then start from a clean state.
        model.eval()
        model.reset_state()

    def reset_state(self) -> None:
        """Forget every account (memory, neighbours and the id map)."""
        self.model.reset_state()
        self.index = NodeIndex(self.max_nodes)
        self._t0 = None

    def tensors(self, txs: Sequence[TransactionEvent]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Batch tensors (growing the model when new accounts appear)."""
        index = self.index
        if index.capacity is not None and 2 * len(txs) > index.capacity - index.capacity // 16:
            # Slots freed while this batch is indexed must not be ones it has just handed out.
            raise ValueError(f"a batch of {len(txs)} transactions needs more accounts than the scorer holds "
                             f"({index.capacity}); score_and_update takes it in parts")
        src = [index.get(tx.src) for tx in txs]
        dst = [index.get(tx.dst) for tx in txs]
        if index.slots > self.model.num_nodes:
            size = self.model.num_nodes
            while size < index.slots:
                size *= 2
            self.model.grow(size if index.capacity is None else min(size, index.capacity))
        if index.freed:
            # Reused slots start empty (and a freed slot handed out again in this batch holds a new account).
            self.model.forget(torch.tensor(index.freed, dtype=torch.long))
            index.freed.clear()
        if self._t0 is None:
            self._t0 = txs[0].at.timestamp()
        unit = self.model.config.time_unit_s
        t = [int((tx.at.timestamp() - self._t0) // unit) for tx in txs]
        feat = torch.tensor([tx_features(tx) for tx in txs], dtype=torch.float)
        return torch.tensor(src), torch.tensor(dst), torch.tensor(t, dtype=torch.long), feat

    @torch.no_grad()
    def score_and_update(self, txs: Sequence[TransactionEvent]) -> list[float]:
        """Fraud probability of each transaction from the state before the batch; then update the state.

        A batch with more accounts than the scorer may hold at once (see :meth:`tensors`) is taken in parts, one
        after another, each scored from the state the parts before it left."""
        if not txs:
            return []
        capacity = self.index.capacity
        part = None if capacity is None else max(1, (capacity - capacity // 16) // 2)
        if part is not None and len(txs) > part:
            return [p for start in range(0, len(txs), part) for p in self.score_and_update(txs[start:start + part])]
        if self.model.training:
            self.model.eval()
        if self.threads is not None and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        src, dst, t, feat = self.tensors(txs)
        probs = torch.sigmoid(self.model(src, dst, t, feat)).tolist()
        self.model.update(src, dst, t, feat)
        return [float(p) for p in probs]


def config_dict(config: TGNConfig) -> dict[str, object]:
    """The config as plain data (for checkpoints)."""
    return asdict(config)
