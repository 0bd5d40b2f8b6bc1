"""What a template renders for a customer who lacks a variable, and how a preview learns which ones did."""

from __future__ import annotations

import pytest

from journeys.templates import HTML_KEYS, _compile, noting_undefined, render_template, render_value


def test_a_missing_variable_renders_empty_and_is_noted_only_when_asked() -> None:
    content = {
        "subject": "Worth {{ event.cart_value }} EUR, {{ customer.first_name }}",
        "text": "{{ customer.nickname | default: 'Hi' }}{% if event.coupon %}{{ event.coupon }}{% endif %} {{ nope }}",
        "html": "<p>{{ event['gift note'] }}{{ event.items[0] }}{{ event.cart_value | upcase }}</p>",
    }
    context = {"customer": {"first_name": "Ada"}, "event": {"items": []}}
    with noting_undefined() as missing:
        rendered = render_value(content, context, html_keys=HTML_KEYS)
    # Sending is unchanged: the blank stays blank; a default or an `if` is not "missing".
    assert rendered == {"subject": "Worth  EUR, Ada", "text": "Hi ", "html": "<p></p>"}
    assert missing == ["event.cart_value", "event: index out of range", "event['gift note']", "nope"]
    # Outside the block nothing is noted (a send pays nothing for it), and blocks do not leak into each other.
    assert render_value(content, context, html_keys=HTML_KEYS) == rendered
    with noting_undefined() as other:
        render_value({"text": "{{ customer.first_name }}"}, context)
    assert other == [] and missing == ["event.cart_value", "event: index out of range", "event['gift note']", "nope"]


@pytest.mark.parametrize(
    "text",
    ["Winter sale: 20% off.", "a & <b>c</b>\n\t end  ", "Zoé — ✓ 100% }} %}", "", "line\r\nnext\rlast\r\n", "-%}"],
)
@pytest.mark.parametrize("html", [False, True])
def test_text_without_liquid_renders_as_liquid_writes_it(text: str, html: bool) -> None:
    assert render_template(text, {"customer": {}}, html=html) == str(_compile(text, html).render())
