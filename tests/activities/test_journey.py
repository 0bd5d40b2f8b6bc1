"""The send activity renders HTML parts with customer and event data escaped, text parts as written."""

from __future__ import annotations

import asyncio

from contracts.journey import JourneyResult
from tests.support.engine import Engine, journey_from, make_customer

SCRIPT = "<script>alert('x')</script>"


async def test_markup_in_customer_and_event_data_is_escaped_in_html_and_verbatim_in_text(engine: Engine) -> None:
    journey = journey_from(
        {
            "id": "escape",
            "name": "Escape",
            "trigger": {"event": "escape_start"},
            "steps": [
                {
                    "id": "hello",
                    "type": "send",
                    "channel": "email",
                    "kind": "transactional",
                    "track": False,
                    "template": {
                        "subject": "Hi {{ customer.first_name }}",
                        "text": "Hi {{ customer.first_name }}, {{ event.note }}",
                        "html": "<p>Hi {{ customer.first_name }}, {{ event.note }}</p>{{ event.banner | trusted }}",
                    },
                }
            ],
        }
    )
    customer = await make_customer(engine.pool, attributes={"first_name": SCRIPT})
    await engine.pool.execute(  # make_customer names everyone Ada
        "UPDATE customers SET attributes = attributes || $2 WHERE id = $1", customer, {"first_name": SCRIPT}
    )
    handle = await engine.enter(journey, customer, {"note": '<img src=x onerror="steal()">', "banner": "<b>sale</b>"})
    result: JourneyResult = await asyncio.wait_for(handle.result(), 30)
    assert result.status == "completed"

    [mail] = engine.mail_to(customer)
    html = mail.get_body(("html",)).get_content()
    text = mail.get_body(("plain",)).get_content()
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    assert (
        "&lt;img src=x onerror=&#34;steal()&#34;&gt;" in html or "&lt;img src=x onerror=&quot;steal()&quot;&gt;" in html
    )
    assert "<b>sale</b>" in html  # marked trusted by the author
    assert f'Hi {SCRIPT}, <img src=x onerror="steal()">' in text
    assert mail["Subject"] == f"Hi {SCRIPT}"
