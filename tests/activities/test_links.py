"""Signed links (activities.links): tokens hide the customer, refuse tampering and expire; old tokens still open."""

from __future__ import annotations

import base64

import pytest

from activities import links
from config.settings import Settings


def test_link_tokens_hide_the_customer_and_refuse_tampering() -> None:
    settings = Settings()
    url = links.unsubscribe_url(settings, "ada-lovelace@example.com", "email", "promotions")
    token = url.rsplit("/", 1)[1]
    assert "ada" not in url and "promotions" not in url
    assert links.open_token(settings, token, purpose=links.UNSUBSCRIBE)["c"] == "ada-lovelace@example.com"
    # Two links for the same message differ (random nonce): nothing to correlate.
    assert links.unsubscribe_url(settings, "ada-lovelace@example.com", "email", "promotions") != url
    flipped = token[:20] + ("A" if token[20] != "A" else "B") + token[21:]
    for bad in (flipped, token[:-3], "", "x" * 40, token + "A"):
        with pytest.raises(links.InvalidLink):
            links.open_token(settings, bad, purpose=links.UNSUBSCRIBE)
    with pytest.raises(links.InvalidLink, match="not a preferences link"):
        links.open_token(settings, token, purpose=links.PREFERENCES)
    other = Settings(link_secret="another-secret")
    with pytest.raises(links.InvalidLink):
        links.open_token(other, token, purpose=links.UNSUBSCRIBE)
    expired = links.seal(settings, links.PREFERENCES, {"c": "ada"}, -1)
    with pytest.raises(links.ExpiredLink):
        links.open_token(settings, expired, purpose=links.PREFERENCES)


# Made by the version 1 (standard-library) sealer with the default link secret, before links moved to AES-GCM:
# an unsubscribe link for ada/email/promotions valid until 2100, and a preferences link that had expired at once.
V1_UNSUBSCRIBE = (
    "AZit8w8orNKxlH6C1w5ZsxyRc00NAv8Np6213RuN2W05wKipCd8AOqJis2V5niqwgEmcdmiIwY0tZMiHV8TVKUehXANpFYlFt"
    "Ghy0er94aFLr5z17MfYlvPbzbFscp0"
)
V1_EXPIRED = "Adzew80C066gxqNzNkguHhZIB5Rf3R4R_7c9pBbPX6zrAE7Mx54yinWsf-TfqrF6eP66gCOPMejhxpSQN1vb7xo"


def test_links_made_before_aes_gcm_still_open_and_new_ones_are_version_2() -> None:
    settings = Settings()
    payload = links.open_token(settings, V1_UNSUBSCRIBE, purpose=links.UNSUBSCRIBE)
    assert (payload["c"], payload["ch"], payload["t"]) == ("ada", "email", "promotions")
    with pytest.raises(links.ExpiredLink):
        links.open_token(settings, V1_EXPIRED, purpose=links.PREFERENCES)
    flipped = V1_UNSUBSCRIBE[:30] + ("A" if V1_UNSUBSCRIBE[30] != "A" else "B") + V1_UNSUBSCRIBE[31:]
    with pytest.raises(links.InvalidLink):
        links.open_token(settings, flipped, purpose=links.UNSUBSCRIBE)
    with pytest.raises(links.InvalidLink):
        links.open_token(Settings(link_secret="another-secret"), V1_UNSUBSCRIBE, purpose=links.UNSUBSCRIBE)
    fresh = links.unsubscribe_url(settings, "ada", "email", "promotions").rsplit("/", 1)[1]
    raw = base64.urlsafe_b64decode(fresh + "=" * (-len(fresh) % 4))
    assert raw[0] == 2
    # A version 2 token relabelled as version 1 is refused.
    swapped = base64.urlsafe_b64encode(b"\x01" + raw[1:]).decode().rstrip("=")
    with pytest.raises(links.InvalidLink):
        links.open_token(settings, swapped, purpose=links.UNSUBSCRIBE)
