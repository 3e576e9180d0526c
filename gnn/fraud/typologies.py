"""Money-laundering typologies, declared once as data.

The same declarations drive two consumers:

* :mod:`gnn.fraud.matcher`, the incremental temporal matcher that runs on every transaction;
* :mod:`gnn.fraud.cypher`, which generates the equivalent parameterised Cypher for investigators.

A typology is a *shape* (how the pattern is wired) plus numbers (how wide, how long, within which time
window, and how exclusive the participants must be). Shapes:

``hub``
    sources -> hub -> sinks, every inbound transfer before the outbound ones, all inside ``window``.
    ``min_in``/``min_out`` distinct counterparties on each side. fan-in (many in, forwarded out), fan-out
    (funded, then many out) and gather-scatter are hubs with different widths.
``cycle``
    a -> b -> ... -> a with non-decreasing times, ``min_length``..``max_length`` accounts.
``scatter_gather``
    source -> ``min_in``+ distinct intermediates -> sink, each intermediate forwarding after receiving.
``bipartite``
    ``min_in``+ senders each paying ``min_out``+ of the same receivers (a dense layer).
``stack``
    two bipartite layers chained: layer 1 -> layer 2 -> layer 3, each at least ``min_in`` wide.
``split``
    one sender splitting money into ``min_count``+ transfers to the same receiver in ``window``.

``max_degree`` keeps the patterns to accounts that are not legitimately busy: a participant with more
distinct counterparties than this inside the window is a merchant, employer or utility, not a mule.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

Shape = Literal["hub", "cycle", "scatter_gather", "bipartite", "stack", "split"]


@dataclass(frozen=True)
class Typology:
    """One laundering pattern: its shape and bounds."""

    name: str
    shape: Shape
    window: timedelta
    description: str
    min_in: int = 1
    min_out: int = 1
    min_length: int = 3
    max_length: int = 6
    min_count: int = 3
    #: Distinct counterparties (in the window) above which an account is too busy to be a participant.
    max_degree: int = 12
    #: For hubs: the outflow must carry at least this share of the inflow (money passes through).
    min_flow_ratio: float = 0.0
    #: Count only transfers between accounts that had not paid each other before the window (mules deal
    #: with strangers; people pay the same friends, landlords and shops again and again).
    novel_only: bool = True
    #: Channels that count. Batch ACH (payroll, direct debits) and card purchases are originator-identified
    #: and regulated; layering uses transfers that move money between private accounts.
    channels: tuple[str, ...] = ("p2p", "transfer", "wire", "online", "cash")
    #: For hubs: the flow-ratio test uses the largest single outbound transfer (money gathered, then
    #: moved on in one lump) instead of the sum of all outbound transfers.
    lump: bool = False
    #: For hubs: the outflow may exceed the inflow by at most this factor (mules do not add own money).
    max_out_over_in: float = 1.1
    #: For cycles: each hop carries between these shares of the previous hop's amount (money moves on,
    #: minus a cut), or ``None`` to ignore amounts.
    hop_ratio: tuple[float, float] | None = None
    #: For hubs: activity in the window must be at least this many times what the hub's own history
    #: predicts (0 disables). Mule hubs are quiet accounts that suddenly get busy; busy businesses are
    #: busy every day.
    burst_factor: float = 0.0
    #: For dense layers: the share of all sender x receiver pairs that must have transacted.
    min_density: float = 0.0
    #: Score of a match before the model and rules adjust it.
    score: float = 0.8
    #: Priority when one ring matches several typologies (higher names the ring).
    priority: int = 0


TYPOLOGIES: tuple[Typology, ...] = (
    Typology("fan_in", "hub", timedelta(hours=48), "many senders pay one collector who forwards the money",
             min_in=5, min_out=1, min_flow_ratio=0.5, lump=True, burst_factor=2.0, score=0.85, priority=2),
    Typology("fan_out", "hub", timedelta(hours=48), "one account is funded and pays many receivers",
             min_in=1, min_out=5, min_flow_ratio=0.0, burst_factor=2.0, score=0.85, priority=2),
    Typology("gather_scatter", "hub", timedelta(hours=48), "many senders pay a hub that pays many receivers",
             min_in=4, min_out=4, min_flow_ratio=0.7, burst_factor=2.0, score=0.9, priority=3),
    Typology("cycle", "cycle", timedelta(hours=72), "money goes round and comes back to where it started",
             min_length=3, max_length=6, hop_ratio=(0.8, 1.0), score=0.9, priority=3),
    Typology("scatter_gather", "scatter_gather", timedelta(hours=48),
             "one source pays intermediates that all forward to one sink", min_in=3, score=0.9, priority=4),
    Typology("bipartite", "bipartite", timedelta(hours=48), "a dense layer: several senders each pay the same "
             "several receivers", min_in=3, min_out=3, min_density=0.75, score=0.85, priority=3),
    Typology("stack", "stack", timedelta(hours=48), "two dense layers chained", min_in=2, min_out=2,
             score=0.9, priority=5),
    Typology("split", "split", timedelta(hours=24), "one sender splits money into several transfers to the "
             "same receiver", min_count=3, max_degree=1_000_000, novel_only=False,
             channels=("p2p", "transfer", "wire", "online", "cash", "ach", "card", "pos", "atm"), score=0.6,
             priority=1),
)

TYPOLOGY_BY_NAME: dict[str, Typology] = {t.name: t for t in TYPOLOGIES}


def typology(name: str) -> Typology:
    """The declared typology called ``name`` (``KeyError`` when unknown)."""
    return TYPOLOGY_BY_NAME[name]


@dataclass(frozen=True)
class IdentityTypology:
    """Accounts tied together by shared identifiers (synthetic identities, first-party fraud rings).

    ``min_accounts``..``max_accounts`` accounts share one identifier of ``kinds``. Below the minimum it
    is a household (a family tablet); above the maximum the identifier is public (a carrier NAT IP, a
    cafe) and says nothing about who is connected.
    """

    name: str
    kinds: tuple[str, ...]
    min_accounts: int
    max_accounts: int
    window: timedelta
    description: str
    score: float = 0.85
    priority: int = 2


IDENTITY_TYPOLOGIES: tuple[IdentityTypology, ...] = (
    IdentityTypology("shared_identity", ("device", "phone"), 4, 20, timedelta(days=30),
                     "four or more accounts opened or used from one device or phone"),
)
