"""The SVG renderer and the pictures built on it: valid XML, every name present, hostile names escaped,
causes on the left and the symptom on the right, ring accounts along the money flow."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

from gnn.rca.engine import Candidate, RcaResult
from server.investigate.pictures import causes_diagram, incident_diagram, rca_diagram, ring_diagram
from server.investigate.svg import Diagram, DiagramEdge, DiagramNode, colour, layout, render_svg

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = '<script>alert("x")</script> & "quotes" \'too\''


def _parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg.encode("utf-8"))
    assert root.tag == f"{SVG}svg"
    return root


def _texts(root: ET.Element) -> str:
    return " ".join(root.itertext())


def _boxes(root: ET.Element) -> dict[str, tuple[float, float]]:
    """Node tooltip -> top-left corner of its box."""
    boxes = {}
    for group in root.iter(f"{SVG}g"):
        if "node" in (group.get("class") or "").split():
            rect = group.find(f"{SVG}rect")
            boxes[group.find(f"{SVG}title").text] = (float(rect.get("x")), float(rect.get("y")))
    return boxes


def test_render_is_valid_xml_with_every_node_edge_label_and_a_legend() -> None:
    d = Diagram("t", subtitle="sub", notes=["a note"])
    d.node(DiagramNode("a", "alpha", "service", "svc", 0))
    d.node(DiagramNode("b", "beta-with-a-really-long-name-that-gets-shortened-on-screen", "host", "", 1))
    d.edge(DiagramEdge("a", "b", "calls"))
    d.edge(DiagramEdge("b", "a", "back"))  # backwards edge: drawn as an arc, still valid
    d.edge(DiagramEdge("a", "missing", "ignored"))  # an edge to an unknown node is skipped
    root = _parse(render_svg(d))
    text = _texts(root)
    for expected in ("alpha", "beta-with-a-really-long-name-that-gets-shortened-on-screen", "calls", "back",
                     "a note", "service", "host", "sub"):
        assert expected in text
    assert "ignored" not in text
    assert len([p for p in root.iter(f"{SVG}path") if p.get("marker-end")]) == 2


def test_hostile_names_are_escaped_never_markup() -> None:
    d = Diagram(HOSTILE, subtitle=HOSTILE, notes=[HOSTILE])
    d.node(DiagramNode("x", HOSTILE, "<img src=x onerror=1>", HOSTILE, 0))
    d.node(DiagramNode("y", "ok", "service", "", 1))
    d.edge(DiagramEdge("x", "y", HOSTILE))
    svg = render_svg(d)
    root = _parse(svg)
    assert not list(root.iter(f"{SVG}script")) and not list(root.iter("script"))
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert "<img" not in svg
    assert HOSTILE in _texts(root)  # the full text survives (in the tooltip), as text
    for element in root.iter():
        for value in element.attrib.values():
            assert "<" not in value and "script" not in value


def test_layout_columns_follow_layers_and_rows_follow_insertion() -> None:
    d = Diagram("t")
    d.node(DiagramNode("a", "a", "service", layer=0))
    d.node(DiagramNode("b", "b", "service", layer=5))  # empty layers are squeezed out
    d.node(DiagramNode("c", "c", "service", layer=0))
    pos = layout(d)
    assert pos["a"][0] < pos["b"][0] and pos["a"][0] == pos["c"][0]
    assert pos["a"][1] < pos["c"][1] and pos["a"][1] == pos["b"][1]
    assert colour("service") != colour("host") and colour("weird<kind>") == colour("other")


def test_causes_put_the_cause_left_the_symptom_right_and_stack_other_candidates() -> None:
    candidates = [
        {"rank": 1, "kind": "host", "name": "node-1", "score": 0.9, "path": ["node-1", "db", "api", "web"]},
        {"rank": 2, "kind": "instance", "name": "api-0", "score": 0.4, "path": ["api-0", "api", "web"]},
        {"rank": 3, "kind": "service", "name": "web", "score": 0.1, "path": ["web"]},
    ]
    d = causes_diagram("RCA", "sub", "web", candidates, DiagramNode("incident:i", "i-1", "incident"))
    root = _parse(render_svg(d))
    boxes = _boxes(root)
    x = {title.split(" (")[0]: pos for title, pos in boxes.items()}
    assert x["#1 node-1"][0] < x["db"][0] < x["api"][0] < x["#3 web"][0] < x["i-1"][0]
    assert x["#2 api-0"][0] == x["db"][0]  # two hops from the symptom, like db
    assert x["#1 node-1"][1] == x["db"][1] == x["api"][1] == x["#3 web"][1]  # the top path is one row
    assert x["#2 api-0"][1] > x["db"][1]  # stacked below
    text = _texts(root)
    for name in ("node-1", "db", "api", "web", "api-0", "hosts", "called by", "instance of"):
        assert name in text
    hot = [e for e in d.edges if e.highlight]
    assert [(e.source, e.target) for e in hot] == [("host:node-1", "service:db"), ("service:db", "service:api"),
                                                   ("service:api", "service:web")]
    assert [n.id for n in d.nodes if n.highlight] == ["host:node-1"]


def test_incident_picture_names_everything_and_survives_hostile_names() -> None:
    incident = {"id": "inc-<1>", "status": "analysed", "symptom": HOSTILE, "root_cause": "service:<b>",
                "started_at": datetime(2026, 1, 5, tzinfo=UTC), "model": "gnn"}
    causes = [{"rank": 1, "kind": "service", "name": "<b>", "score": 0.8, "path": ["<b>", HOSTILE]}]
    alerts = [{"alert": "fp-&-1", "name": "Down", "severity": "critical", "at": datetime(2026, 1, 5, tzinfo=UTC),
               "fired_on": [{"kind": "service", "name": HOSTILE}]}]
    root = _parse(render_svg(incident_diagram(incident, causes, alerts)))
    text = _texts(root)
    for expected in ("inc-<1>", "<b>", HOSTILE, "fp-&-1", "Down"):
        assert expected in text
    empty = incident_diagram({"id": "i2", "symptom": "web", "merged_into": "i1"}, [], [])
    text = _texts(_parse(render_svg(empty)))
    assert "merged into incident i1" in text and "no root cause written" in text and "web" in text


def test_rca_picture_from_an_engine_result() -> None:
    result = RcaResult([Candidate("change", "chg-9", 0.7, 1, [], ["chg-9", "cart", "web"]),
                        Candidate("service", "cart", 0.2, 2, [], ["cart", "web"])], "gnn", symptom="web")
    d = rca_diagram("alert a-1", result)
    root = _parse(render_svg(d))
    text = _texts(root)
    for expected in ("chg-9", "cart", "web", "alert a-1", "changed"):
        assert expected in text
    boxes = {t.split(" (")[0]: p for t, p in _boxes(root).items()}
    assert boxes["#1 chg-9"][0] < boxes["#2 cart"][0] < boxes["web"][0] < boxes["alert a-1"][0]
    none = rca_diagram("service x", RcaResult([], "gnn", "no telemetry in the window", symptom="x"))
    assert "no telemetry in the window" in _texts(_parse(render_svg(none)))


def test_ring_picture_follows_the_money_and_shows_shared_identities() -> None:
    ring = {"id": "ring-1", "kind": "scatter_gather", "score": 0.9, "detected_at": datetime(2026, 3, 5, tzinfo=UTC)}
    members = [
        {"account": "src", "role": "source", "risk_score": 0.9,
         "shared_identities": [{"kind": "Device", "id": "dev-<1>"}]},
        {"account": "m1", "role": "intermediate", "risk_score": None, "shared_identities": []},
        {"account": "m2", "role": "intermediate", "risk_score": 0.5,
         "shared_identities": [{"kind": "Device", "id": "dev-<1>"}]},
        {"account": "sink", "role": "sink", "risk_score": 0.7, "shared_identities": []},
        {"account": "idle", "role": "member", "risk_score": None, "shared_identities": []},
    ]
    at = datetime(2026, 3, 5, 1, tzinfo=UTC)
    trail = [{"transaction": f"t{i}", "at": at, "src": s, "dst": d, "amount": a, "currency": "EUR"}
             for i, (s, d, a) in enumerate([("src", "m1", 4000.0), ("src", "m2", 4000.0), ("m1", "sink", 3900.0),
                                            ("m2", "sink", 3900.0), ("m2", "sink", 100.0)])]
    d = ring_diagram(ring, members, trail)
    root = _parse(render_svg(d))
    text = _texts(root)
    for name in ("ring-1", "src", "m1", "m2", "sink", "idle", "dev-<1>", "4,000.00 EUR", "2 × 4,000.00 EUR",
                 "used by", "15,900.00 EUR"):
        assert name in text, name
    dashed = [p for p in root.iter(f"{SVG}path") if p.get("stroke-dasharray")]
    assert len(dashed) == 2  # the device, used by src and m2: a relation, not a flow
    layer = {n.id: n.layer for n in d.nodes}
    assert layer["device:dev-<1>"] < layer["account:src"] < layer["account:m1"] == layer["account:m2"] < layer[
        "account:sink"]
    assert layer["account:idle"] == layer["account:src"]


def test_a_pure_cycle_still_gets_columns() -> None:
    members = [{"account": a, "role": "member", "shared_identities": []} for a in ("a", "b", "c")]
    at = datetime(2026, 3, 5, tzinfo=UTC)
    trail = [{"transaction": "t1", "at": at, "src": "b", "dst": "c", "amount": 1.0, "currency": "EUR"},
             {"transaction": "t2", "at": at, "src": "c", "dst": "a", "amount": 1.0, "currency": "EUR"},
             {"transaction": "t3", "at": at, "src": "a", "dst": "b", "amount": 1.0, "currency": "EUR"}]
    d = ring_diagram({"id": "r", "kind": "cycle"}, members, trail)
    layer = {n.id: n.layer for n in d.nodes}
    assert layer == {"account:b": 0, "account:c": 1, "account:a": 2}  # from the first payer
    _parse(render_svg(d))
