"""Incidents, RCA answers and fraud rings as :class:`~server.investigate.svg.Diagram` pictures.

Pure functions over rows (the rows of the ready queries, or an RCA result turned into the same shape), so
they are tested without a database:

* causes: the rank-1 cause on the left, the symptom on the right, the propagation path between them on the
  top row; the other candidates stacked below, each in the column of its distance to the symptom;
* rings: shared identities on the left, then the member accounts in columns along the money flow of the
  evidence transactions (sources first), the edges labelled with the amounts.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from server.investigate.svg import Diagram, DiagramEdge, DiagramNode

#: The label of the first edge of a path, by the cause's kind (the rest are service -> calling service).
_FIRST_EDGE = {"instance": "instance of", "host": "hosts", "change": "changed", "service": "called by"}


def _num(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "?"


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, datetime) else str(value or "")


def causes_diagram(title: str, subtitle: str, symptom: str | None, candidates: Sequence[Mapping[str, Any]],
                   terminal: DiagramNode | None = None, terminal_label: str = "symptom of",
                   notes: Sequence[str] = ()) -> Diagram:
    """Ranked causes (``rank, kind, name, score, path`` each; path from the cause to the symptom)."""
    diagram = Diagram(title, subtitle=subtitle, notes=list(notes))
    ranked = sorted(candidates, key=lambda c: (c.get("rank") or 1_000_000, str(c.get("name"))))
    paths: list[tuple[Mapping[str, Any], list[tuple[str, str]]]] = []
    for cand in ranked:
        kind, name = str(cand.get("kind") or "service"), str(cand.get("name"))
        raw = [str(p) for p in (cand.get("path") or [name])]
        steps = [(kind, raw[0])]
        for service in raw[1:]:
            if service != steps[-1][1]:  # a service cause's path may repeat it (cause, then its service)
                steps.append(("service", service))
        if symptom and steps[-1][1] != symptom:
            steps.append(("service", symptom))
        paths.append((cand, steps))
    # Distance of each node to the symptom (shortest over every path it is on) -> its column.
    distance: dict[tuple[str, str], int] = {}
    for _, steps in paths:
        for j, step in enumerate(steps):
            d = len(steps) - 1 - j
            distance[step] = min(distance.get(step, d), d)
    if symptom:
        distance[("service", symptom)] = 0
    deepest = max(distance.values(), default=0)

    def node_id(step: tuple[str, str]) -> str:
        return f"{step[0]}:{step[1]}"

    candidates_by_step = {(str(c.get("kind") or "service"), str(c.get("name"))): c for c, _ in paths}

    def add(step: tuple[str, str], top: bool) -> None:
        cand = candidates_by_step.get(step)
        if cand is not None:
            label = f"#{cand.get('rank')} {step[1]}"
            detail = f"{step[0]} · score {_num(cand.get('score'), 4)}"
            if symptom and step == ("service", symptom):
                detail += " · symptom"
        else:
            label = step[1]
            detail = "service · symptom" if symptom and step == ("service", symptom) else step[0]
        diagram.node(DiagramNode(node_id(step), label, step[0], detail, deepest - distance[step],
                                 highlight=top and cand is not None and cand.get("rank") == ranked[0].get("rank")))

    # The top path first (one straight row), then the other candidates and their paths.
    for index, (_, steps) in enumerate(paths):
        for step in steps:
            add(step, index == 0)
        for j in range(len(steps) - 1):
            label = _FIRST_EDGE.get(steps[0][0], "affects") if j == 0 else "called by"
            diagram.edge(DiagramEdge(node_id(steps[j]), node_id(steps[j + 1]), label, highlight=index == 0))
    if symptom and not paths:
        add(("service", symptom), False)
    if terminal is not None:
        terminal.layer = deepest + 1
        diagram.node(terminal)
        if symptom:
            diagram.edge(DiagramEdge(node_id(("service", symptom)), terminal.id, terminal_label))
    return diagram


def incident_diagram(incident: Mapping[str, Any], causes: Sequence[Mapping[str, Any]],
                     alerts: Sequence[Mapping[str, Any]]) -> Diagram:
    """An incident (its node's properties), its current ``ROOT_CAUSE`` rows and its alert rows."""
    iid = str(incident.get("id"))
    terminal = DiagramNode(f"incident:{iid}", iid, "incident",
                           f"{len(alerts)} alerts · {incident.get('status') or ''}")
    notes = [f"alert {a.get('alert')}: {a.get('name')} ({a.get('severity')}) at {_when(a.get('at'))} on "
             + ", ".join(f"{f.get('kind')} {f.get('name')}" for f in a.get("fired_on") or [])
             for a in alerts]
    subtitle = (f"started {_when(incident.get('started_at'))} · symptom {incident.get('symptom') or '?'} · "
                f"root cause {incident.get('root_cause') or 'none'} · model {incident.get('model') or '?'}")
    if not causes:
        notes.insert(0, f"no root cause written: {incident.get('explanation') or 'not analysed yet'}")
    if incident.get("merged_into"):
        notes.insert(0, f"merged into incident {incident.get('merged_into')} (same first-ranked cause)")
    return causes_diagram(f"Incident {iid}", subtitle, incident.get("symptom") or None, causes, terminal,
                          "alerts in", notes)


def rca_diagram(anchor: str, result: Any) -> Diagram:
    """An :class:`gnn.rca.engine.RcaResult` analysed from ``anchor`` (e.g. ``alert a-1``)."""
    rows = [{"rank": c.rank, "kind": c.kind, "name": c.name, "score": c.score, "path": list(c.path)}
            for c in result.candidates]
    terminal = DiagramNode(f"anchor:{anchor}", anchor, "anchor", f"analysed with {result.method}")
    subtitle = f"method {result.method} · symptom {result.symptom or '?'}"
    notes = [f"{result.reason}"] if result.reason else []
    return causes_diagram(f"Root cause analysis: {anchor}", subtitle, result.symptom, rows, terminal,
                          "anchors", notes)


def _money_layers(members: Sequence[str], trail: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Column of each member along the money flow: breadth first from the accounts nobody in the ring pays
    (or, for a pure cycle, from the payer of the earliest transaction)."""
    out: dict[str, list[str]] = defaultdict(list)
    paid: set[str] = set()
    first_payer: list[str] = []
    for step in trail:
        src, dst = str(step.get("src")), str(step.get("dst"))
        if dst not in out[src]:
            out[src].append(dst)
        paid.add(dst)
        first_payer.append(src)
    involved = [m for m in members if m in out or m in paid]
    starts = [m for m in involved if m not in paid] or first_payer[:1]
    layer: dict[str, int] = {s: 0 for s in starts}
    queue = deque(starts)
    while queue:
        account = queue.popleft()
        for nxt in out.get(account, []):
            if nxt not in layer:
                layer[nxt] = layer[account] + 1
                queue.append(nxt)
    for account in list(out) + sorted(paid):  # anything not reached (e.g. a second component)
        layer.setdefault(account, 0)
    for member in members:  # members with no evidence transaction
        layer.setdefault(member, 0)
    return layer


def ring_diagram(ring: Mapping[str, Any], members: Sequence[Mapping[str, Any]],
                 trail: Sequence[Mapping[str, Any]]) -> Diagram:
    """A ring (its node's properties), its ``ring_members`` rows and its ``ring_money_trail`` rows."""
    rid = str(ring.get("id"))
    accounts = [str(m.get("account")) for m in members]
    layers = _money_layers(accounts, trail)
    shared = {}
    for m in members:
        for identity in m.get("shared_identities") or []:
            shared.setdefault((str(identity.get("kind")), str(identity.get("id"))), []).append(str(m.get("account")))
    offset = 1 if shared else 0
    total = sum(float(s.get("amount") or 0) for s in trail)
    currencies = sorted({str(s.get("currency")) for s in trail if s.get("currency")})
    diagram = Diagram(
        f"Fraud ring {rid}",
        subtitle=(f"{ring.get('kind') or '?'} · score {_num(ring.get('score'))} · detected "
                  f"{_when(ring.get('detected_at'))} · {len(accounts)} accounts · {len(trail)} transactions, "
                  f"{total:,.2f} {'/'.join(currencies)}"),
    )
    for (kind, value), users in sorted(shared.items()):
        diagram.node(DiagramNode(f"{kind.lower()}:{value}", value, kind.lower(), f"{kind} shared by {len(users)}",
                                 0))
    by_account = {str(m.get("account")): m for m in members}
    for account in sorted(accounts, key=lambda a: (layers.get(a, 0), a)):
        m = by_account[account]
        risk = m.get("risk_score")
        detail = str(m.get("role") or "member") + (f" · risk {_num(risk, 2)}" if risk is not None else "")
        diagram.node(DiagramNode(f"account:{account}", account, "account", detail, offset + layers.get(account, 0)))
    for (kind, value), users in sorted(shared.items()):
        for account in sorted(set(users)):
            diagram.edge(DiagramEdge(f"{kind.lower()}:{value}", f"account:{account}", "used by", dashed=True))
    flows: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for step in trail:
        flows[(str(step.get("src")), str(step.get("dst")))].append(step)
    for (src, dst), steps in flows.items():
        for account in (src, dst):  # a counterparty outside the ring (should not happen, but draw it)
            if f"account:{account}" not in {n.id for n in diagram.nodes}:
                diagram.node(DiagramNode(f"account:{account}", account, "account", "not a member",
                                         offset + layers.get(account, 0)))
        amount = sum(float(s.get("amount") or 0) for s in steps)
        currency = str(steps[0].get("currency") or "")
        label = (f"{len(steps)} × " if len(steps) > 1 else "") + f"{amount:,.2f} {currency}".strip()
        diagram.edge(DiagramEdge(f"account:{src}", f"account:{dst}", label, highlight=True))
    diagram.notes = [f"{_when(s.get('at'))}  {s.get('transaction')}: {s.get('src')} -> {s.get('dst')}  "
                     f"{float(s.get('amount') or 0):,.2f} {s.get('currency') or ''}" for s in trail[:40]]
    if len(trail) > 40:
        diagram.notes.append(f"... and {len(trail) - 40} more transactions")
    return diagram
