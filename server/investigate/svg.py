"""A small layered SVG renderer (no graphviz): boxes in columns, arrows with labels, a legend.

The caller assigns each node a ``layer`` (its column, left to right) and inserts nodes in the order they
should stack inside a column (the first node of each column on the top row), so a main path inserted first
reads as one straight line. Every piece of text is escaped, and names never become attributes or ids:
a hostile name such as ``<script>`` ends up as text, never as markup.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

#: Fill colours by node kind (anything else is grey).
KIND_COLOURS: dict[str, str] = {
    "service": "#4e79a7",
    "instance": "#76b7b2",
    "host": "#59a14f",
    "change": "#f28e2b",
    "incident": "#e15759",
    "alert": "#ff9da7",
    "anchor": "#e15759",
    "account": "#9c755f",
    "transaction": "#bab0ac",
    "device": "#b07aa1",
    "ip": "#af7aa1",
    "card": "#edc948",
    "phone": "#d37295",
    "email": "#a0cbe8",
    "merchant": "#8cd17d",
    "fraudring": "#e15759",
}
_DEFAULT_COLOUR = "#9d9d9d"

NODE_W = 210
NODE_H = 50
COL_GAP = 130
ROW_GAP = 28
MARGIN = 24
TITLE_H = 56
LABEL_CHARS = 28
_FONT = "font-family=\"Helvetica, Arial, sans-serif\""


@dataclass
class DiagramNode:
    """A box: ``label`` on the first line, ``detail`` (smaller) on the second, the full texts as tooltip."""

    id: str
    label: str
    kind: str
    detail: str = ""
    layer: int = 0
    highlight: bool = False


@dataclass
class DiagramEdge:
    source: str
    target: str
    label: str = ""
    highlight: bool = False
    #: Drawn dashed: a relation that is not a flow (an account using a shared device).
    dashed: bool = False


@dataclass
class Diagram:
    title: str
    nodes: list[DiagramNode] = field(default_factory=list)
    edges: list[DiagramEdge] = field(default_factory=list)
    subtitle: str = ""
    #: Extra lines printed under the picture (e.g. the alerts of an incident).
    notes: list[str] = field(default_factory=list)

    def node(self, node: DiagramNode) -> DiagramNode:
        """Add a node, or return the one already there with the same id (the first one wins)."""
        for existing in self.nodes:
            if existing.id == node.id:
                return existing
        self.nodes.append(node)
        return node

    def edge(self, edge: DiagramEdge) -> None:
        """Add an edge unless the same source -> target is there already (a highlighted one wins)."""
        for existing in self.edges:
            if (existing.source, existing.target) == (edge.source, edge.target):
                existing.highlight = existing.highlight or edge.highlight
                return
        self.edges.append(edge)


def _text(value: object) -> str:
    return escape(str(value))


def _short(text: str, limit: int = LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _kind_class(kind: str) -> str:
    return re.sub(r"[^a-z0-9_]", "", kind.lower()) or "other"


def colour(kind: str) -> str:
    return KIND_COLOURS.get(_kind_class(kind), _DEFAULT_COLOUR)


def layout(diagram: Diagram) -> dict[str, tuple[float, float]]:
    """Top-left corner of each node's box: columns by layer (empty layers squeezed out), rows by insertion."""
    layers = sorted({n.layer for n in diagram.nodes})
    column = {layer: i for i, layer in enumerate(layers)}
    rows: dict[int, int] = defaultdict(int)
    positions: dict[str, tuple[float, float]] = {}
    for node in diagram.nodes:
        col = column[node.layer]
        row = rows[col]
        rows[col] += 1
        positions[node.id] = (MARGIN + col * (NODE_W + COL_GAP), TITLE_H + row * (NODE_H + ROW_GAP))
    return positions


def _edge_path(src: tuple[float, float], dst: tuple[float, float]) -> tuple[str, float, float]:
    """An SVG path from ``src``'s box to ``dst``'s box, and where its label goes."""
    sx, sy = src
    dx, dy = dst
    if dx > sx:  # forward: right side -> left side
        x1, y1, x2, y2 = sx + NODE_W, sy + NODE_H / 2, dx, dy + NODE_H / 2
        bend = (x2 - x1) / 2
        path = f"M{x1:.1f},{y1:.1f} C{x1 + bend:.1f},{y1:.1f} {x2 - bend:.1f},{y2:.1f} {x2:.1f},{y2:.1f}"
        return path, (x1 + x2) / 2, (y1 + y2) / 2
    if dx < sx:  # backward: left side -> right side, arcing above
        x1, y1, x2, y2 = sx, sy + NODE_H / 2, dx + NODE_W, dy + NODE_H / 2
        lift = min(y1, y2) - NODE_H
        path = f"M{x1:.1f},{y1:.1f} C{x1 - 40:.1f},{lift:.1f} {x2 + 40:.1f},{lift:.1f} {x2:.1f},{y2:.1f}"
        return path, (x1 + x2) / 2, lift + NODE_H / 4
    # same column: out of the right side and back in, bulging right
    x1, y1, x2, y2 = sx + NODE_W, sy + NODE_H / 2, dx + NODE_W, dy + NODE_H / 2
    bulge = x1 + 50 + abs(y2 - y1) / 6
    path = f"M{x1:.1f},{y1:.1f} C{bulge:.1f},{y1:.1f} {bulge:.1f},{y2:.1f} {x2:.1f},{y2:.1f}"
    return path, bulge - 12, (y1 + y2) / 2


def render_svg(diagram: Diagram) -> str:
    """The diagram as a standalone SVG document (a string)."""
    positions = layout(diagram)
    columns = max((x for x, _ in positions.values()), default=MARGIN) + NODE_W + MARGIN
    bottom = max((y for _, y in positions.values()), default=TITLE_H) + NODE_H
    kinds = list(dict.fromkeys(_kind_class(n.kind) for n in diagram.nodes))
    legend_y = bottom + 36
    notes_y = legend_y + 30
    width = max(columns + 40, 520, MARGIN * 2 + 7 * max((len(line) for line in diagram.notes), default=0))
    height = notes_y + 18 * len(diagram.notes) + MARGIN

    out: list[str] = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" {_FONT} font-size="12">',
        "<defs>",
        '<marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker>',
        '<marker id="arrow-hot" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#c0392b"/></marker>',
        "</defs>",
        f'<rect x="0" y="0" width="{width:.0f}" height="{height:.0f}" fill="#ffffff"/>',
        f'<text x="{MARGIN}" y="24" font-size="16" font-weight="bold">{_text(diagram.title)}</text>',
    ]
    if diagram.subtitle:
        out.append(f'<text x="{MARGIN}" y="42" fill="#555">{_text(diagram.subtitle)}</text>')

    out.append('<g class="edges">')
    labels: list[str] = []
    for edge in diagram.edges:
        if edge.source not in positions or edge.target not in positions:
            continue
        path, lx, ly = _edge_path(positions[edge.source], positions[edge.target])
        stroke, marker, widthpx = ("#c0392b", "arrow-hot", 2.5) if edge.highlight else ("#777", "arrow", 1.4)
        dash = ' stroke-dasharray="5,4"' if edge.dashed else ""
        out.append(f'<path d="{path}" fill="none" stroke="{stroke}" stroke-width="{widthpx}"{dash} '
                   f'marker-end="url(#{marker})"/>')
        if edge.label:
            text = _short(edge.label, 32)
            half = 3.3 * len(text) + 4
            labels.append(f'<rect x="{lx - half:.1f}" y="{ly - 9:.1f}" width="{2 * half:.1f}" height="15" rx="3" '
                          f'fill="#ffffff" fill-opacity="0.9"/>'
                          f'<text x="{lx:.1f}" y="{ly + 3:.1f}" text-anchor="middle" font-size="10" '
                          f'fill="#333">{_text(text)}<title>{_text(edge.label)}</title></text>')
    out.append("</g>")
    out.append('<g class="edge-labels">' + "".join(labels) + "</g>")

    out.append('<g class="nodes">')
    for node in diagram.nodes:
        x, y = positions[node.id]
        kind = _kind_class(node.kind)
        border = ' stroke="#c0392b" stroke-width="3"' if node.highlight else ' stroke="#333" stroke-width="1"'
        tooltip = node.label + (f" ({node.detail})" if node.detail else "")
        out.append(
            f'<g class="node {kind}"><title>{_text(tooltip)}</title>'
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{NODE_W}" height="{NODE_H}" rx="8" fill="{colour(kind)}"'
            f'{border}/>'
            f'<text x="{x + 10:.1f}" y="{y + 21:.1f}" fill="#fff" font-weight="bold">{_text(_short(node.label))}'
            f'</text>'
            f'<text x="{x + 10:.1f}" y="{y + 39:.1f}" fill="#fff" font-size="11">'
            f'{_text(_short(node.detail, 34))}</text></g>')
    out.append("</g>")

    out.append('<g class="legend">')
    x = MARGIN
    for kind in kinds:
        out.append(f'<rect x="{x}" y="{legend_y - 10}" width="12" height="12" fill="{colour(kind)}"/>'
                   f'<text x="{x + 16}" y="{legend_y}">{_text(kind)}</text>')
        x += 24 + 7 * len(kind)
    out.append("</g>")
    if diagram.notes:
        out.append('<g class="notes">')
        for i, line in enumerate(diagram.notes):
            out.append(f'<text x="{MARGIN}" y="{notes_y + 18 * i}" fill="#333">{_text(line)}</text>')
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"
