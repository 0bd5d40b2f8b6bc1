"""The journey graph's layout: layers by distance from the first step, edges labelled with their branch."""

from __future__ import annotations

from api.console import graph
from tests.support.engine import example, journey_from


def test_abandoned_cart_is_laid_out_in_layers_with_labelled_branches() -> None:
    laid_out = graph.layout(example("abandoned-cart"))
    layer = {n.id: n.layer for n in laid_out.nodes}
    assert layer == {
        "wait-1-hour": 0, "cart-email": 1, "wait-for-click": 2, "cart-push": 3, "wait-for-order": 3,
        "sms-offer": 4, "end": 5,
    }  # fmt: skip
    edges = {(e.source, e.branch, e.target) for e in laid_out.edges}
    assert ("wait-for-click", "on_event", "wait-for-order") in edges
    assert ("wait-for-click", "on_timeout", "cart-push") in edges
    assert ("sms-offer", "next", "end") in edges
    boxes = [(n.x, n.y) for n in laid_out.nodes]
    assert len(set(boxes)) == len(boxes)  # no two nodes on top of each other
    assert all(0 <= n.x and n.x + graph.NODE_W <= laid_out.width for n in laid_out.nodes)


def test_a_loop_back_goes_up_and_a_split_labels_its_variants() -> None:
    journey = journey_from({"id": "loop", "name": "Loop", "trigger": {"event": "go"}, "steps": [
        {"id": "pick", "type": "split", "variants": [
            {"name": "a", "weight": 1, "next": "left"}, {"name": "b", "weight": 1, "next": "right"}
        ]},
        {"id": "left", "type": "wait", "duration": "1h", "next": "pick"},
        {"id": "right", "type": "exit"},
    ]})  # fmt: skip
    laid_out = graph.layout(journey)
    edges = {(e.source, e.branch, e.target): e for e in laid_out.edges}
    assert set(edges) == {("pick", "a", "left"), ("pick", "b", "right"), ("left", "next", "pick")}
    back = edges[("left", "next", "pick")]
    assert back.points[-1][1] < back.points[0][1]  # drawn upwards, back to the split
