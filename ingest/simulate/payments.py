"""Payments simulator: accounts, identities, merchants, normal behaviour and labelled fraud.

The output is a stream of :class:`schema.events.IdentityEvent` and :class:`schema.events.TransactionEvent`
sorted by time, plus ground-truth labels per account (with a ring id for organised fraud) and per
transaction.

Why it is built the way it is:

* Fraud must not be separable by trivial artefacts. Laundering amounts are drawn from the same
  distributions as normal person-to-person payments, and laundering uses the same channels in the same
  proportions (a p2p app or a bank transfer), ring members are ordinary accounts that keep their
  normal activity, and the normal population contains the look-alikes a detector must not flag:
  employers fanning salaries out, landlords and utilities collecting from many payers, families sharing a
  device, friends paying each other back (short cycles), people sending several payments the same day.
* Every random draw comes from one seeded :class:`random.Random`, so a seed reproduces a scenario exactly.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from schema.events import IdentityEvent, TransactionEvent

PaymentEvent = IdentityEvent | TransactionEvent

#: The laundering typologies the simulator injects (names shared with ``gnn.fraud.typologies``).
LAUNDERING_KINDS: tuple[str, ...] = (
    "fan_in", "fan_out", "cycle", "scatter_gather", "gather_scatter", "bipartite", "stack",
)


@dataclass(frozen=True)
class PaymentsSimConfig:
    """What to simulate. Counts are per scenario; times are UTC."""

    seed: int = 0
    accounts: int = 1500
    merchants: int = 120
    employers: int = 25
    landlords: int = 30
    utilities: int = 6
    days: int = 28
    #: Fraud starts after this many days of normal history (a detector needs to know who pays whom).
    history_days: int = 5
    start: datetime = datetime(2026, 3, 2, tzinfo=UTC)
    #: Share of people living in a family that shares one device (legitimately shared identity).
    family_share: float = 0.15
    #: Share of people who are legitimately busy (many p2p payments).
    busy_share: float = 0.03
    #: Mean p2p payments per person per day (busy people get ``busy_factor`` times more).
    p2p_rate: float = 0.35
    busy_factor: float = 8.0
    shopping_rate: float = 0.8
    #: Share of person-to-person payments made as bank transfers rather than through a p2p app, the same
    #: for everybody: the channel of a person-to-person payment says nothing about fraud.
    transfer_share: float = 0.3
    #: Laundering rings injected per typology.
    rings_per_kind: int = 3
    identity_rings: int = 3
    account_takeovers: int = 6
    #: Reporting threshold (cash-transaction report); structurers stay just below it.
    reporting_threshold: float = 10_000.0
    currency: str = "EUR"

    def __post_init__(self) -> None:
        if self.days < 3 or not 0 <= self.history_days < self.days:
            raise ValueError(f"payments simulation needs days >= 3 and 0 <= history_days < days, got "
                             f"days={self.days}, history_days={self.history_days}")


@dataclass
class PaymentsScenario:
    """A simulated stream with ground truth."""

    config: PaymentsSimConfig
    events: list[PaymentEvent] = field(default_factory=list)
    labels: list[dict[str, Any]] = field(default_factory=list)

    @property
    def transactions(self) -> list[TransactionEvent]:
        """Only the transactions, in time order."""
        return [e for e in self.events if isinstance(e, TransactionEvent)]


@dataclass
class _Person:
    id: str
    devices: list[str]
    ips: list[str]
    phone: str
    email: str
    card: str
    friends: list[str] = field(default_factory=list)
    busy: bool = False


class _Builder:
    """Mutable state of one simulation run (kept out of the config and the scenario)."""

    def __init__(self, config: PaymentsSimConfig) -> None:
        self.cfg = config
        self.rng = random.Random(config.seed)
        self.end = config.start + timedelta(days=config.days)
        self.tx: list[tuple[datetime, dict[str, Any], bool]] = []
        self.identity: list[tuple[datetime, str, str, str]] = []
        self.account_labels: dict[str, dict[str, Any]] = {}
        self.people: dict[str, _Person] = {}
        self.merchants: list[tuple[str, str]] = []
        self.counter = 0
        self.reserved: set[str] = set()

    # -- helpers -----------------------------------------------------------------------------

    def uid(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.cfg.seed}-{self.counter:06d}"

    def p2p_amount(self) -> float:
        """Person-to-person amounts: log-normal, median ~60, tail to a few thousand."""
        return round(min(6000.0, max(1.0, self.rng.lognormvariate(math.log(60), 1.0))), 2)

    def daytime(self, day: datetime) -> datetime:
        """A time of day with a daily rhythm: few payments at night, peaks at noon and evening."""
        hour = self.rng.choices(range(24), weights=_HOUR_WEIGHTS)[0]
        return day + timedelta(hours=hour, minutes=self.rng.random() * 60)

    def add_tx(self, at: datetime, src: str, dst: str, amount: float, *, fraud: bool = False,
               channel: str = "p2p", device: str | None = None, ip: str | None = None,
               card: str | None = None, merchant: str | None = None) -> str:
        if src == dst or at >= self.end or at < self.cfg.start:
            return ""
        if channel == "p2p" and self.rng.random() < self.cfg.transfer_share:
            channel = "transfer"
        person = self.people.get(src)
        if person is not None:
            device = device or self.rng.choice(person.devices)
            ip = ip or self.rng.choice(person.ips)
        tx_id = self.uid("t")
        self.tx.append((at, {"id": tx_id, "at": at, "src": src, "dst": dst, "amount": round(max(amount, 0.5), 2),
                             "currency": self.cfg.currency, "channel": channel, "device": device, "ip": ip,
                             "card": card, "merchant": merchant}, fraud))
        return tx_id

    def add_identity(self, at: datetime, account: str, kind: str, value: str) -> None:
        self.identity.append((at, account, kind, value))

    def random_time(self, margin_days: float = 2.0) -> datetime:
        """A time after the history period, at least ``margin_days`` before the end."""
        lo = float(self.cfg.history_days)
        span = self.cfg.days - margin_days
        return self.cfg.start + timedelta(days=self.rng.uniform(lo, max(lo + 0.1, span)))

    def mark(self, accounts: list[str], ring: str | None) -> None:
        for account in accounts:
            label = {"account": account, "fraud": True}
            if ring is not None:
                label["ring"] = ring
            self.account_labels[account] = label

    def pick_members(self, n: int) -> list[str]:
        """Ring members are existing ordinary people (so they have normal history), not yet in a ring."""
        pool = [p for p in self.people if p not in self.reserved and not self.people[p].busy]
        picked = self.rng.sample(pool, n)
        self.reserved.update(picked)  # nobody plays two parts (or joins two rings)
        return picked


_HOUR_WEIGHTS = [1, 0.5, 0.3, 0.3, 0.3, 0.5, 1, 2, 3, 4, 4, 5, 6, 5, 4, 4, 4, 5, 6, 6, 5, 4, 3, 2]


# -- population and normal behaviour -------------------------------------------------------------


def _population(b: _Builder) -> None:
    cfg, rng = b.cfg, b.rng
    ids = [f"A{cfg.seed}-{i:05d}" for i in range(cfg.accounts)]
    for acc in ids:
        b.people[acc] = _Person(acc, [b.uid("dev")], [b.uid("ip")], b.uid("ph"), b.uid("em"), b.uid("card"))
        if rng.random() < 0.3:
            b.people[acc].devices.append(b.uid("dev"))
        b.people[acc].busy = rng.random() < cfg.busy_share
    # Families share a device and a home IP: the legitimate face of shared identities (2-3 people).
    shuffled = ids[:]
    rng.shuffle(shuffled)
    n_family = int(len(ids) * cfg.family_share)
    i = 0
    while i < n_family:
        size = rng.choice((2, 2, 3))
        family = shuffled[i:i + size]
        device, home_ip = b.uid("dev"), b.uid("ip")
        for acc in family:
            b.people[acc].devices.append(device)
            b.people[acc].ips.append(home_ip)
        i += size
    # A few public IPs (offices, cafes, carrier NAT) are shared by many people.
    public_ips = [b.uid("ip") for _ in range(8)]
    for acc in ids:
        if rng.random() < 0.25:
            b.people[acc].ips.append(rng.choice(public_ips))
    # Friends: a small-world p2p network.
    for acc in ids:
        b.people[acc].friends = rng.sample(ids, rng.randint(3, 8))
    for acc, person in b.people.items():
        for dev in person.devices:
            b.add_identity(cfg.start, acc, "device", dev)
        for ip in person.ips:
            b.add_identity(cfg.start, acc, "ip", ip)
        b.add_identity(cfg.start, acc, "phone", person.phone)
        b.add_identity(cfg.start, acc, "email", person.email)
        b.add_identity(cfg.start, acc, "card", person.card)
    b.merchants = [(f"M{cfg.seed}-{i:04d}", f"MA{cfg.seed}-{i:04d}") for i in range(cfg.merchants)]


def _normal(b: _Builder) -> None:
    cfg, rng = b.cfg, b.rng
    people = list(b.people)
    days = [cfg.start + timedelta(days=d) for d in range(cfg.days)]
    # Salaries: employers fan out to their staff on one day a month (legitimate fan-out).
    employers = [f"E{cfg.seed}-{i:03d}" for i in range(cfg.employers)]
    staff = {e: [] for e in employers}
    for person in people:
        if rng.random() < 0.8:
            staff[rng.choice(employers)].append(person)
    for e in employers:
        payday = rng.randint(0, min(cfg.days - 1, 27))
        salaries = {p: rng.uniform(1500, 5000) for p in staff[e]}
        for p, salary in salaries.items():
            b.add_tx(days[payday] + timedelta(hours=6, minutes=rng.random() * 120), e, p, salary, channel="ach")
        # Employers also receive revenue from their own business customers (busy both ways).
        customers = [f"C{cfg.seed}-{e}-{k:02d}" for k in range(40)]
        for _ in range(cfg.days * 4):
            b.add_tx(b.daytime(rng.choice(days)), rng.choice(customers), e, rng.uniform(100, 4000), channel="wire")
    # Rent: landlords collect from several tenants on the first days of the month (legitimate fan-in)
    # and forward part of it to a mortgage bank.
    for i in range(cfg.landlords):
        landlord = f"L{cfg.seed}-{i:03d}"
        tenants = rng.sample(people, rng.randint(3, 9))
        rent_day = rng.randint(0, min(3, cfg.days - 3))  # the bank transfer two days later stays inside
        total = 0.0
        for tenant in tenants:
            rent = rng.uniform(400, 1500)
            total += rent
            b.add_tx(b.daytime(days[rent_day]) + timedelta(hours=rng.random() * 24), tenant, landlord, rent,
                     channel="transfer")
        b.add_tx(days[rent_day + 2] + timedelta(hours=10), landlord, f"BANK{cfg.seed}", total * 0.8, channel="ach")
    # Bills: utilities collect from a large share of people (legitimate, very busy fan-in).
    utilities = [f"U{cfg.seed}-{i:02d}" for i in range(cfg.utilities)]
    for person in people:
        for utility in rng.sample(utilities, min(len(utilities), rng.randint(1, 3))):
            b.add_tx(b.daytime(rng.choice(days)), person, utility, rng.uniform(30, 300), channel="ach")
    # Person to person and shopping, with a weekly rhythm (more on Fridays and weekends).
    for day in days:
        weekly = 1.4 if day.weekday() >= 4 else 1.0
        for person in people:
            p = b.people[person]
            rate = cfg.p2p_rate * weekly * (cfg.busy_factor if p.busy else 1.0)
            for _ in range(_poisson(rng, rate)):
                friend = rng.choice(p.friends)
                at = b.daytime(day)
                b.add_tx(at, person, friend, b.p2p_amount())
                # People sometimes send several payments to the same friend the same day.
                if rng.random() < 0.04:
                    for _ in range(rng.randint(1, 3)):
                        b.add_tx(at + timedelta(minutes=rng.uniform(2, 300)), person, friend, b.p2p_amount())
                # Friends pay back (short cycles in normal traffic).
                if rng.random() < 0.15:
                    b.add_tx(at + timedelta(hours=rng.uniform(1, 72)), friend, person, b.p2p_amount())
            for _ in range(_poisson(rng, cfg.shopping_rate * weekly)):
                merchant, merchant_acct = rng.choice(b.merchants)
                b.add_tx(b.daytime(day), person, merchant_acct, round(rng.lognormvariate(math.log(35), 0.9), 2),
                         channel=rng.choice(("card", "pos", "online")), card=p.card, merchant=merchant)
    # Groups of three friends splitting bills (legitimate triangles over a few days).
    for _ in range(cfg.accounts // 30):
        a, c, d = rng.sample(people, 3)
        t0 = b.random_time()
        amount = b.p2p_amount()
        b.add_tx(t0, a, c, amount)
        b.add_tx(t0 + timedelta(hours=rng.uniform(2, 48)), c, d, b.p2p_amount())
        b.add_tx(t0 + timedelta(hours=rng.uniform(50, 90)), d, a, b.p2p_amount())


def _poisson(rng: random.Random, lam: float) -> int:
    threshold, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= threshold:
            return k
        k += 1


# -- fraud ----------------------------------------------------------------------------------


def _laundering(b: _Builder, kind: str, ring: str) -> None:
    """Inject one laundering ring of ``kind`` among normal traffic; amounts come from the p2p range."""
    rng = b.rng
    t = b.random_time()
    step = lambda: timedelta(minutes=rng.uniform(10, 240))  # noqa: E731 - tiny local helper

    def split(total: float, parts: int) -> list[float]:
        weights = [rng.uniform(0.6, 1.4) for _ in range(parts)]
        return [total * w / sum(weights) for w in weights]

    def send(at: datetime, src: str, dst: str, amount: float, *, smurf: bool = False) -> datetime:
        # Smurfs sometimes split one deposit into several smaller transfers.
        if smurf and rng.random() < 0.4:
            parts = rng.randint(2, 4)
            for share in split(amount, parts):
                b.add_tx(at, src, dst, share, fraud=True)
                at += timedelta(minutes=rng.uniform(1, 30))
            return at
        b.add_tx(at, src, dst, amount, fraud=True)
        return at

    if kind == "fan_in":
        sources = b.pick_members(rng.randint(5, 9))
        collector, exit_ = b.pick_members(2)
        total = 0.0
        for s in sources:
            amount = b.p2p_amount()
            total += amount
            t += step()
            send(t, s, collector, amount, smurf=True)
        b.add_tx(t + step(), collector, exit_, total * rng.uniform(0.85, 0.98), fraud=True)
        members = [*sources, collector, exit_]
    elif kind == "fan_out":
        funder, hub = b.pick_members(2)
        sinks = b.pick_members(rng.randint(5, 9))
        amounts = [b.p2p_amount() for _ in sinks]
        b.add_tx(t, funder, hub, sum(amounts) * rng.uniform(1.02, 1.15), fraud=True)
        for sink, amount in zip(sinks, amounts, strict=True):
            t += step()
            b.add_tx(t, hub, sink, amount, fraud=True)
        members = [funder, hub, *sinks]
    elif kind == "cycle":
        members = b.pick_members(rng.randint(3, 6))
        amount = b.p2p_amount() * 3
        for i, src in enumerate(members):
            t += step() * 2
            b.add_tx(t, src, members[(i + 1) % len(members)], amount, fraud=True)
            amount *= rng.uniform(0.9, 0.99)
    elif kind == "scatter_gather":
        src, sink = b.pick_members(2)
        mids = b.pick_members(rng.randint(4, 7))
        for mid in mids:
            amount = b.p2p_amount()
            t1 = t + step()
            b.add_tx(t1, src, mid, amount, fraud=True)
            b.add_tx(t1 + step(), mid, sink, amount * rng.uniform(0.9, 0.99), fraud=True)
        members = [src, *mids, sink]
    elif kind == "gather_scatter":
        sources = b.pick_members(rng.randint(4, 6))
        hub = b.pick_members(1)[0]
        sinks = b.pick_members(rng.randint(4, 6))
        total = 0.0
        for s in sources:
            amount = b.p2p_amount()
            total += amount
            t += step()
            send(t, s, hub, amount, smurf=True)
        for sink, amount in zip(sinks, split(total * 0.95, len(sinks)), strict=True):
            t += step()
            b.add_tx(t, hub, sink, amount, fraud=True)
        members = [*sources, hub, *sinks]
    elif kind == "bipartite":
        left = b.pick_members(rng.randint(3, 4))
        right = b.pick_members(rng.randint(3, 4))
        for src in left:
            for dst in right:
                if rng.random() < 0.9:
                    b.add_tx(t + step() * 2, src, dst, b.p2p_amount(), fraud=True)
        members = [*left, *right]
    elif kind == "stack":
        layers = [b.pick_members(rng.randint(2, 3)) for _ in range(3)]
        for depth, (upper, lower) in enumerate(zip(layers, layers[1:], strict=False)):
            for src in upper:
                for dst in lower:
                    b.add_tx(t + timedelta(hours=6 * depth) + step(), src, dst, b.p2p_amount(), fraud=True)
        members = [acc for layer in layers for acc in layer]
    else:  # pragma: no cover - guarded by LAUNDERING_KINDS
        raise ValueError(f"unknown typology {kind!r}")
    b.mark(members, ring)


def _identity_ring(b: _Builder, ring: str) -> None:
    """Synthetic / first-party fraud: new accounts opened from one device and phone, then busted out."""
    rng = b.rng
    n = rng.randint(4, 7)
    t = b.random_time(margin_days=6)
    device, phone = b.uid("dev"), b.uid("ph")
    members = [b.uid("S") for _ in range(n)]
    collector = rng.choice(members)
    for i, acc in enumerate(members):
        opened = t + timedelta(hours=rng.uniform(0, 48))
        own_ip = b.uid("ip")
        b.add_identity(opened, acc, "device", device)
        # Most share the phone too; some use their own to look less connected.
        b.add_identity(opened, acc, "phone", phone if rng.random() < 0.7 or i == 0 else b.uid("ph"))
        b.add_identity(opened, acc, "email", b.uid("em"))
        b.add_identity(opened, acc, "ip", own_ip)
        card = b.uid("card")
        b.add_identity(opened, acc, "card", card)
        # A little normal-looking shopping to build trust, then the bust-out to the collector.
        for _ in range(rng.randint(1, 4)):
            merchant, merchant_acct = rng.choice(b.merchants)
            b.add_tx(opened + timedelta(hours=rng.uniform(1, 72)), acc, merchant_acct,
                     round(rng.lognormvariate(math.log(35), 0.9), 2), fraud=True, channel="card",
                     device=device, ip=own_ip, card=card, merchant=merchant)
        if acc != collector:
            b.add_tx(opened + timedelta(hours=rng.uniform(72, 120)), acc, collector, b.p2p_amount() * 2,
                     fraud=True, device=device, ip=own_ip)
    b.mark(members, ring)


def _account_takeover(b: _Builder) -> None:
    """A victim's account used from a new device and IP to drain money to a mule."""
    rng = b.rng
    victim = b.pick_members(1)[0]
    mule = b.pick_members(1)[0]
    t = b.random_time()
    device, ip = b.uid("dev"), b.uid("ip")
    b.add_identity(t, victim, "device", device)
    b.add_identity(t, victim, "ip", ip)
    for _ in range(rng.randint(1, 3)):
        t += timedelta(minutes=rng.uniform(5, 90))
        b.add_tx(t, victim, mule, rng.uniform(1500, 6000), fraud=True, channel="online", device=device, ip=ip)
    # The victim is not a fraudster; the mule that received the money is.
    b.mark([mule], None)


def _structuring(b: _Builder, ring: str) -> None:
    """Cash structuring just below the reporting threshold into one account (a small ring)."""
    rng, cfg = b.rng, b.cfg
    depositor, dst = b.pick_members(2)
    t = b.random_time()
    for _ in range(rng.randint(3, 5)):
        t += timedelta(hours=rng.uniform(1, 20))
        b.add_tx(t, depositor, dst, cfg.reporting_threshold * rng.uniform(0.9, 0.995), fraud=True, channel="cash")
    b.mark([depositor, dst], ring)


def simulate_payments(config: PaymentsSimConfig | None = None) -> PaymentsScenario:
    """Simulate a labelled payments stream (events sorted by time, unique ids, tz-aware datetimes)."""
    cfg = config or PaymentsSimConfig()
    b = _Builder(cfg)
    _population(b)
    _normal(b)
    ring_no = 0
    for kind in LAUNDERING_KINDS:
        for _ in range(cfg.rings_per_kind):
            ring_no += 1
            _laundering(b, kind, f"R{cfg.seed}-{ring_no:03d}-{kind}")
    for _ in range(cfg.identity_rings):
        ring_no += 1
        _identity_ring(b, f"R{cfg.seed}-{ring_no:03d}-identity")
    for _ in range(max(1, cfg.rings_per_kind // 2)):
        ring_no += 1
        _structuring(b, f"R{cfg.seed}-{ring_no:03d}-structuring")
    for _ in range(cfg.account_takeovers):
        _account_takeover(b)
    return _assemble(b)


def _assemble(b: _Builder) -> PaymentsScenario:
    events: list[tuple[datetime, int, PaymentEvent]] = []
    for i, (at, account, kind, value) in enumerate(b.identity):
        events.append((at, 0, IdentityEvent(id=f"i{b.cfg.seed}-{i:07d}", at=at, account=account,
                                            kind=kind, value=value)))  # type: ignore[arg-type]
    tx_labels: list[dict[str, Any]] = []
    accounts: set[str] = set()
    for at, fields, fraud in b.tx:
        events.append((at, 1, TransactionEvent(**fields)))
        tx_labels.append({"transaction": fields["id"], "fraud": fraud})
        accounts.update((fields["src"], fields["dst"]))
    accounts.update(acc for _, acc, _, _ in b.identity)
    # Identity events come before transactions at the same instant (an account is seen, then it pays).
    events.sort(key=lambda item: (item[0], item[1], item[2].id))
    account_labels = [b.account_labels.get(acc, {"account": acc, "fraud": False}) for acc in sorted(accounts)]
    return PaymentsScenario(b.cfg, [e for _, _, e in events], account_labels + tx_labels)


def write_scenario(scenario: PaymentsScenario, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``events.jsonl`` and ``labels.jsonl`` into ``out_dir``; returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    events_path, labels_path = out / "events.jsonl", out / "labels.jsonl"
    with events_path.open("w", encoding="utf-8") as fh:
        for event in scenario.events:
            fh.write(event.model_dump_json() + "\n")
    with labels_path.open("w", encoding="utf-8") as fh:
        for label in scenario.labels:
            fh.write(json.dumps(label) + "\n")
    return events_path, labels_path
