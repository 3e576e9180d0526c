"""Incremental temporal typology matcher: runs on every transaction with bounded work.

Every account keeps its most recent inbound and outbound transfers in fixed-size deques
(``neighbour_cap``), and the matcher only ever looks at edges inside a typology's time window. A search
therefore touches at most ``neighbour_cap`` edges per account per hop, the hop count is bounded by the
typology, and cycle search has a global ``search_budget``: however many counterparties a hub account has,
scoring a transaction of anybody else costs the same. The number of accounts held is bounded too (least
recently active accounts are forgotten first).

A match is reported when the transaction that *closes* the pattern arrives (the last edge of a cycle,
the forwarding transfer of a fan-in, the k-th payment of a fan-out...); the closing transaction must itself
count for the typology (channel, new relationship), and every occurrence it closes is reported (each cycle,
each scatter-gather source). :mod:`gnn.fraud.cypher` generates queries that report the same occurrences
from the stored graph.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from gnn.fraud.typologies import TYPOLOGIES, Typology


@dataclass(frozen=True)
class MatcherConfig:
    """Bounds of the matcher (all hard limits: no search exceeds them whatever the data)."""

    #: Recent transfers kept per account and direction.
    neighbour_cap: int = 48
    #: Accounts held; the least recently active are dropped beyond this.
    max_accounts: int = 500_000
    #: Nodes a cycle search may expand for one transaction.
    search_budget: int = 2_000
    #: Counterparties remembered per account to tell new relationships from old ones.
    known_cap: int = 128
    #: Burn-in: a new relationship means something only once the stream has history. Typologies that
    #: rely on new relationships report nothing during the first ``warmup_s`` seconds of the stream.
    warmup_s: float = 3 * 86_400.0


@dataclass(frozen=True)
class Edge:
    """One transfer as the matcher sees it (time in seconds since the epoch)."""

    tx: str
    src: str
    dst: str
    at: float
    amount: float
    channel: str = "transfer"
    #: When ``src`` first paid ``dst`` (as far as the bounded memory knows); equals ``at`` for a new pair.
    first_at: float | None = None

    def novel(self, window: float) -> bool:
        """Whether the pair is a new relationship: first seen no longer than ``window`` seconds ago."""
        return self.first_at is None or self.at - self.first_at <= window


@dataclass(frozen=True)
class Match:
    """A closed typology: member accounts with roles and the transactions that prove it."""

    typology: str
    members: dict[str, str]
    evidence: tuple[str, ...]
    at: float
    score: float
    #: The transaction that closed the pattern.
    closing: str = ""


@dataclass
class _Account:
    out: deque[Edge]
    inn: deque[Edge]
    known: OrderedDict[str, float]
    first_at: float = 0.0
    #: Transfers ever seen (both directions), for the account's own activity baseline.
    total: int = 0


@dataclass
class TemporalMatcher:
    """Finds declared typologies as transactions stream in (see the module docstring for the bounds)."""

    config: MatcherConfig = field(default_factory=MatcherConfig)
    typologies: tuple[Typology, ...] = TYPOLOGIES
    _accounts: OrderedDict[str, _Account] = field(default_factory=OrderedDict, init=False, repr=False)
    _max_window: float = field(default=0.0, init=False, repr=False)
    _first_at: float | None = field(default=None, init=False, repr=False)
    #: Stored edges read so far (every search reads only bounded deques): the work done, for tests and
    #: profiling. Never reset by the matcher.
    edges_read: int = field(default=0, init=False, repr=False)
    #: Degrees computed while handling the current transfer (the state does not change meanwhile).
    _degrees: dict[tuple[str, float, float], int] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self._max_window = max((t.window.total_seconds() for t in self.typologies), default=0.0)

    def reset_state(self) -> None:
        """Forget every account."""
        self._accounts.clear()
        self._first_at = None

    def __len__(self) -> int:
        return len(self._accounts)

    def _account(self, account: str, at: float = 0.0) -> _Account:
        state = self._accounts.get(account)
        if state is None:
            cap = self.config.neighbour_cap
            state = _Account(deque(maxlen=cap), deque(maxlen=cap), OrderedDict(), at)
            self._accounts[account] = state
            if len(self._accounts) > self.config.max_accounts:
                self._accounts.popitem(last=False)
        else:
            self._accounts.move_to_end(account)
        return state

    def add(self, edge: Edge) -> list[Match]:
        """Record one transfer and return the typologies it closes."""
        src = self._account(edge.src, edge.at)
        src.total += 1
        first = src.known.get(edge.dst)
        if first is None:
            first = edge.at
            src.known[edge.dst] = first
            if len(src.known) > self.config.known_cap:
                src.known.popitem(last=False)
        else:
            src.known.move_to_end(edge.dst)
        edge = Edge(edge.tx, edge.src, edge.dst, edge.at, edge.amount, edge.channel, first)
        src.out.append(edge)
        dst = self._account(edge.dst, edge.at)
        dst.total += 1
        dst.inn.append(edge)
        matches: list[Match] = []
        self._degrees.clear()
        if self._first_at is None:
            self._first_at = edge.at
        warm = edge.at - self._first_at >= self.config.warmup_s
        for typ in self.typologies:
            if typ.novel_only and not warm:
                continue
            # The closing transaction is part of the pattern: it must count for the typology itself.
            if not _counts(typ, edge):
                continue
            for found in _SHAPES[typ.shape](self, typ, edge):
                matches.append(found if found.closing else replace(found, closing=edge.tx))
        return matches

    # -- bounded views ---------------------------------------------------------------------------

    def outs(self, account: str, since: float, until: float) -> list[Edge]:
        """Outbound transfers of ``account`` with ``since <= at <= until`` (bounded by the cap)."""
        state = self._accounts.get(account)
        if state is None:
            return []
        self.edges_read += len(state.out)
        return [e for e in state.out if since <= e.at <= until]

    def ins(self, account: str, since: float, until: float) -> list[Edge]:
        """Inbound transfers of ``account`` with ``since <= at <= until`` (bounded by the cap)."""
        state = self._accounts.get(account)
        if state is None:
            return []
        self.edges_read += len(state.inn)
        return [e for e in state.inn if since <= e.at <= until]

    def burst(self, account: str, since: float, until: float) -> float:
        """Transfers in ``[since, until]`` divided by what the account's earlier rate predicts for that span.

        An account with no history before ``since`` has nothing to compare with: its ratio is infinite.
        """
        state = self._accounts.get(account)
        if state is None:
            return 0.0
        self.edges_read += len(state.out) + len(state.inn)
        recent = sum(1 for e in state.out if since <= e.at <= until)
        recent += sum(1 for e in state.inn if since <= e.at <= until)
        before, age = state.total - recent, since - state.first_at
        if before <= 0 or age <= 0:
            return float("inf")
        expected = before / age * (until - since)
        return recent / max(expected, 1e-9)

    def degree(self, account: str, since: float, until: float) -> int:
        """Distinct counterparties in the window (saturates at twice the cap)."""
        key = (account, since, until)
        known = self._degrees.get(key)
        if known is not None:
            return known
        peers = {e.dst for e in self.outs(account, since, until)}
        peers.update(e.src for e in self.ins(account, since, until))
        self._degrees[key] = len(peers)
        return len(peers)


# -- shapes -------------------------------------------------------------------------------------


def _win(typ: Typology, edge: Edge) -> float:
    return edge.at - typ.window.total_seconds()


def _counts(typ: Typology, edge: Edge) -> bool:
    """Whether a transfer counts for ``typ``: an allowed channel and, when it asks, a new relationship."""
    return edge.channel in typ.channels and (not typ.novel_only or edge.novel(typ.window.total_seconds()))


def _outs(m: TemporalMatcher, typ: Typology, account: str, since: float, until: float) -> list[Edge]:
    """Outbound edges in the window that count for ``typ`` (new relationships only, when it asks)."""
    return [e for e in m.outs(account, since, until) if _counts(typ, e)]


def _ins(m: TemporalMatcher, typ: Typology, account: str, since: float, until: float) -> list[Edge]:
    """Inbound edges in the window that count for ``typ``."""
    return [e for e in m.ins(account, since, until) if _counts(typ, e)]


def _quiet(m: TemporalMatcher, typ: Typology, accounts: Iterable[str], since: float, until: float) -> set[str]:
    """The accounts that are not too busy to be participants."""
    return {a for a in accounts if m.degree(a, since, until) <= typ.max_degree}


def _hub(m: TemporalMatcher, typ: Typology, edge: Edge) -> list[Match]:
    # The closing edge is an outbound transfer of the hub.
    hub, since = edge.src, _win(typ, edge)
    ins = _ins(m, typ, hub, since, edge.at)
    if not ins:
        return []
    first_in = min(e.at for e in ins)
    outs = [e for e in _outs(m, typ, hub, first_in, edge.at)]
    senders = _quiet(m, typ, {e.src for e in ins}, since, edge.at)
    receivers = _quiet(m, typ, {e.dst for e in outs}, since, edge.at)
    if len(senders) < typ.min_in or len(receivers) < typ.min_out:
        return []
    if len({e.src for e in ins}) > typ.max_degree or len({e.dst for e in outs}) > typ.max_degree:
        return []
    # Money flows one way through a hub: somebody both paying and being paid is a friend, not a smurf.
    both = senders & receivers
    senders, receivers = senders - both, receivers - both
    if len(senders) < typ.min_in or len(receivers) < typ.min_out:
        return []
    if typ.burst_factor > 0 and m.burst(hub, since, edge.at) < typ.burst_factor:
        return []
    ins = [e for e in ins if e.src in senders]
    outs = [e for e in outs if e.dst in receivers]
    inflow, outflow = sum(e.amount for e in ins), sum(e.amount for e in outs)
    if typ.lump and max(e.amount for e in outs) < typ.min_flow_ratio * inflow:
        return []
    # Money passes through: the hub forwards (most of) what it received and adds none of its own.
    if outflow < typ.min_flow_ratio * inflow or outflow > typ.max_out_over_in * inflow:
        return []
    # Only report when this edge is the one that reaches the widths (not on every later edge too),
    # unless it widens the pattern: the ring assembly merges repeated matches anyway.
    members = {a: "source" for a in senders}
    members.update({a: "sink" for a in receivers})
    members[hub] = "hub"
    evidence = tuple(e.tx for e in (*ins, *outs))
    return [Match(typ.name, members, evidence, edge.at, typ.score)]


def _cycle(m: TemporalMatcher, typ: Typology, edge: Edge) -> list[Match]:
    # The closing edge u -> v ends a path v -> ... -> u with non-decreasing times inside the window. Every
    # such cycle found within the search budget is reported (the generated Cypher returns them all too).
    start, goal, since = edge.dst, edge.src, _win(typ, edge)
    budget = m.config.search_budget
    stack: list[tuple[str, float, tuple[Edge, ...]]] = [(start, since, ())]
    found: dict[tuple[str, ...], Match] = {}
    while stack and budget > 0:
        node, after, path = stack.pop()
        for nxt in _outs(m, typ, node, after, edge.at):
            budget -= 1
            if nxt.tx == edge.tx:
                continue
            if nxt.dst == goal:
                cycle = (*path, nxt, edge)
                if typ.min_length <= len(cycle) <= typ.max_length and _conserved(typ, cycle):
                    members = {e.src: "member" for e in cycle}
                    if len(members) == len(cycle) and len(_quiet(m, typ, members, since, edge.at)) == len(members):
                        evidence = tuple(e.tx for e in cycle)
                        found[evidence] = Match(typ.name, members, evidence, edge.at, typ.score)
                continue
            visited = {e.src for e in path} | {start, goal}
            if len(path) + 2 < typ.max_length and nxt.dst not in visited:
                stack.append((nxt.dst, nxt.at, (*path, nxt)))
            if budget <= 0:
                break
    return list(found.values())


def _conserved(typ: Typology, path: tuple[Edge, ...]) -> bool:
    """Whether every hop carries a plausible share of the previous one (always, without ``hop_ratio``)."""
    if typ.hop_ratio is None:
        return True
    lo, hi = typ.hop_ratio
    return all(lo * a.amount <= b.amount <= hi * a.amount for a, b in zip(path, path[1:], strict=False))


def _scatter_gather(m: TemporalMatcher, typ: Typology, edge: Edge) -> list[Match]:
    # The closing edge is an intermediate forwarding to the sink. Every source that paid (at least
    # ``min_in``) intermediates which forwarded to the sink after their *first* payment from it is reported.
    mid, sink, since = edge.src, edge.dst, _win(typ, edge)
    into_sink = _ins(m, typ, sink, since, edge.at)
    out: list[Match] = []
    sources = dict.fromkeys(feed.src for feed in _ins(m, typ, mid, since, edge.at) if feed.src != sink)
    for source in sources:
        legs: dict[str, tuple[Edge, Edge]] = {}
        sent: dict[str, Edge] = {}
        for e in _outs(m, typ, source, since, edge.at):
            if e.dst not in (source, sink):
                sent.setdefault(e.dst, e)  # the first payment to each intermediate
        for fwd in into_sink:
            first = sent.get(fwd.src)
            if first is not None and first.at <= fwd.at:
                legs[fwd.src] = (first, fwd)
        if len(legs) >= typ.min_in:
            quiet = _quiet(m, typ, [source, sink, *legs], since, edge.at)
            mids = [a for a in legs if a in quiet]
            if len(mids) >= typ.min_in and {source, sink} <= quiet:
                members = {a: "intermediate" for a in mids}
                members.update({source: "source", sink: "sink"})
                evidence = tuple(e.tx for a in mids for e in legs[a])
                out.append(Match(typ.name, members, evidence, edge.at, typ.score))
    return out


def _dense_layer(m: TemporalMatcher, typ: Typology, senders: set[str], since: float, until: float,
                 need_a: int, need_b: int) -> tuple[set[str], set[str], list[Edge]]:
    """Prune senders x receivers to the part where each sender pays >= need_b receivers and vice versa."""
    edges = [e for a in senders for e in _outs(m, typ, a, since, until)]
    left, right = set(senders), {e.dst for e in edges}
    for _ in range(3):
        # Counting with dictionaries keeps this linear in the (bounded) number of edges.
        into: dict[str, set[str]] = {}
        for e in edges:
            if e.src in left and e.dst in right:
                into.setdefault(e.dst, set()).add(e.src)
        right = {b for b, srcs in into.items() if len(srcs) >= need_a}
        out_of: dict[str, set[str]] = {}
        for e in edges:
            if e.src in left and e.dst in right:
                out_of.setdefault(e.src, set()).add(e.dst)
        left = {a for a, dsts in out_of.items() if len(dsts) >= need_b}
    used = [e for e in edges if e.src in left and e.dst in right]
    return left, right, used


def _bipartite(m: TemporalMatcher, typ: Typology, edge: Edge) -> list[Match]:
    since = _win(typ, edge)
    need_a, need_b = max(2, typ.min_in - 1), max(2, typ.min_out - 1)
    # Candidate senders: everybody who paid one of the receivers the closing sender paid.
    receivers = {e.dst for e in _outs(m, typ, edge.src, since, edge.at)}
    # Necessary conditions first (cheap): the closing sender and receiver must be wide enough themselves.
    if len(receivers) < need_b or len({e.src for e in _ins(m, typ, edge.dst, since, edge.at)}) < need_a:
        return []
    receivers = _quiet(m, typ, receivers, since, edge.at)
    senders = {e.src for r in receivers for e in _ins(m, typ, r, since, edge.at)}
    senders = _quiet(m, typ, senders, since, edge.at)
    left, right, used = _dense_layer(m, typ, senders, since, edge.at, need_a, need_b)
    if len(left) < typ.min_in or len(right) < typ.min_out or edge.src not in left or edge.dst not in right:
        return []
    if left & right:
        return []
    pairs = {(e.src, e.dst) for e in used}
    if len(pairs) < typ.min_density * len(left) * len(right):
        return []
    members = {a: "layer1" for a in left}
    members.update({b: "layer2" for b in right})
    return [Match(typ.name, members, tuple(e.tx for e in used), edge.at, typ.score)]


def _stack(m: TemporalMatcher, typ: Typology, edge: Edge) -> list[Match]:
    # The closing edge goes from the middle layer to the bottom layer.
    since = _win(typ, edge)
    top = {e.src for e in _ins(m, typ, edge.src, since, edge.at)}
    if len(top) < typ.min_in:  # necessary: the top layer is a subset of these payers
        return []
    top = _quiet(m, typ, top, since, edge.at)
    top_l, mid, upper = _dense_layer(m, typ, top, since, edge.at, typ.min_in, typ.min_out)
    if edge.src not in mid or len(top_l) < typ.min_in or len(mid) < typ.min_out:
        return []
    mid_l, bottom, lower = _dense_layer(m, typ, _quiet(m, typ, mid, since, edge.at), since, edge.at,
                                        typ.min_in, typ.min_out)
    if edge.dst not in bottom or len(mid_l) < typ.min_in or len(bottom) < typ.min_out:
        return []
    if (top_l & mid_l) or (top_l & bottom) or (mid_l & bottom):
        return []
    members = {a: "layer1" for a in top_l}
    members.update({a: "layer2" for a in mid_l})
    members.update({a: "layer3" for a in bottom})
    return [Match(typ.name, members, tuple(e.tx for e in (*upper, *lower)), edge.at, typ.score)]


def _split(m: TemporalMatcher, typ: Typology, edge: Edge) -> list[Match]:
    same = [e for e in _outs(m, typ, edge.src, _win(typ, edge), edge.at) if e.dst == edge.dst]
    if len(same) != typ.min_count:  # report once, when the count is reached
        return []
    return [Match(typ.name, {edge.src: "source", edge.dst: "collector"}, tuple(e.tx for e in same), edge.at,
                  typ.score)]


_SHAPES = {
    "hub": _hub,
    "cycle": _cycle,
    "scatter_gather": _scatter_gather,
    "bipartite": _bipartite,
    "stack": _stack,
    "split": _split,
}
