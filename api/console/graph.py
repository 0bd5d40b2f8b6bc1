"""A journey's steps laid out as a layered graph for inline SVG.

Layers: a step's layer is its distance (in edges) from the first step, found breadth-first; steps no edge
reaches go after the last layer. Within a layer, steps are ordered by the mean position of their predecessors
in the layer above (the barycenter heuristic, two sweeps), which keeps edges from crossing where it can. Every
edge carries its branch: ``next``, ``on_event``, ``on_timeout``, ``cases[0]``, ``default``, ``variants.a``...
Edges to ``end`` go to one terminal node.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from journeys.models import END, Journey

NODE_W = 220
NODE_H = 96
GAP_X = 40
GAP_Y = 70
MARGIN = 20
LOOP_MARGIN = 80
"""Room on the right for edges that go back up (loops) and their labels."""


@dataclass
class Node:
    id: str
    label: str
    type: str
    layer: int
    order: int = 0
    x: int = 0
    y: int = 0


@dataclass
class Edge:
    source: str
    target: str
    branch: str
    points: list[tuple[float, float]] = field(default_factory=list)
    label_at: tuple[float, float] = (0.0, 0.0)


@dataclass
class Graph:
    nodes: list[Node]
    edges: list[Edge]
    width: int
    height: int


def edges_of(journey: Journey) -> list[Edge]:
    """Every (step, branch, target) of the journey, targets resolved as the workflow resolves them."""
    out = []
    for step in journey.steps:
        for branch, target in journey.successors(step.id).items():
            if target is None:
                continue
            out.append(Edge(step.id, target, _branch_name(branch)))
    return out


def _branch_name(field_name: str) -> str:
    return field_name.removeprefix("variants.")


def layout(journey: Journey) -> Graph:
    edges = edges_of(journey)
    steps = {s.id: s for s in journey.steps}
    children: dict[str, list[str]] = {s: [] for s in steps}
    for edge in edges:
        if edge.source in children:
            children[edge.source].append(edge.target)
    layer: dict[str, int] = {journey.first_step(): 0}
    queue = deque([journey.first_step()])
    while queue:
        current = queue.popleft()
        for target in children.get(current, []):
            if target in steps and target not in layer:
                layer[target] = layer[current] + 1
                queue.append(target)
    deepest = max(layer.values(), default=0)
    for step_id in steps:  # unreachable steps: one layer after the deepest, so they are still shown
        layer.setdefault(step_id, deepest + 1)
    nodes = {sid: Node(sid, s.label or sid, s.type, layer[sid]) for sid, s in steps.items()}
    if any(e.target == END for e in edges):
        nodes[END] = Node(END, "End", "end", max(n.layer for n in nodes.values()) + 1)
    layers: dict[int, list[str]] = {}
    for node in nodes.values():  # the definition's order first
        layers.setdefault(node.layer, []).append(node.id)
    parents: dict[str, list[str]] = {n: [] for n in nodes}
    for edge in edges:
        if edge.target in parents and nodes[edge.source].layer < nodes[edge.target].layer:
            parents[edge.target].append(edge.source)
    for _ in range(2):
        for index in sorted(layers)[1:]:
            position = {n: i for level in layers.values() for i, n in enumerate(level)}
            layers[index].sort(
                key=lambda n: sum(position[p] for p in parents[n]) / len(parents[n]) if parents[n] else position[n]
            )
    widest = max(len(level) for level in layers.values())
    base = 2 * MARGIN + widest * NODE_W + (widest - 1) * GAP_X
    width = base + LOOP_MARGIN
    for index, level in layers.items():
        row_width = len(level) * NODE_W + (len(level) - 1) * GAP_X
        left = (base - row_width) // 2
        for order, node_id in enumerate(level):
            node = nodes[node_id]
            node.order = order
            node.x = left + order * (NODE_W + GAP_X)
            node.y = MARGIN + index * (NODE_H + GAP_Y)
    height = 2 * MARGIN + (max(layers) + 1) * (NODE_H + GAP_Y) - GAP_Y
    for edge in edges:
        _route(edge, nodes[edge.source], nodes[edge.target], width)
    ordered = sorted(nodes.values(), key=lambda n: (n.layer, n.order))
    return Graph(ordered, edges, width, height)


def _route(edge: Edge, source: Node, target: Node, width: int) -> None:
    """A straight line downwards or to a neighbour in the same layer; upwards (a loop back), around the right."""
    sx, sy = source.x + NODE_W / 2, source.y + NODE_H
    tx, ty = target.x + NODE_W / 2, target.y
    if target.layer == source.layer and target.id != source.id:
        mid = source.y + NODE_H / 2
        leftwards = target.x < source.x
        start = source.x if leftwards else source.x + NODE_W
        end = target.x + NODE_W if leftwards else target.x
        edge.points = [(start, mid), (end, mid)]
        edge.label_at = ((start + end) / 2 - 12, mid - 6)
    elif target.layer > source.layer:
        edge.points = [(sx, sy), (tx, ty)]
        edge.label_at = (sx + (tx - sx) * 0.35, sy + (ty - sy) * 0.35)
    else:
        right = width - LOOP_MARGIN / 2
        sy_mid, ty_mid = source.y + NODE_H / 2, target.y + NODE_H / 2
        edge.points = [(source.x + NODE_W, sy_mid), (right, sy_mid), (right, ty_mid), (target.x + NODE_W, ty_mid)]
        edge.label_at = (right - 4, (sy_mid + ty_mid) / 2)
