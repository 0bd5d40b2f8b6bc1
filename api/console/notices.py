"""The one-line notice a console page shows after a redirect (``?published=2&kept=3``): what the last action did.

Only numbers travel in the query and the words are ours, so a crafted link cannot make the console say anything
else.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_NUMBER = re.compile(r"^[0-9]{1,9}$")


def published_query(version: int, created: bool, running: int | None) -> str:
    """The query string of the page a publication lands on."""
    if not created:
        return f"published={version}&unchanged=1"
    return f"published={version}" + (f"&kept={running}" if running is not None else "")


def from_query(query: Mapping[str, str]) -> str | None:
    published = query.get("published", "")
    if not _NUMBER.match(published):
        return None
    version = int(published)
    if query.get("unchanged") == "1":
        return f"Nothing new to publish: the definition is the same as version {version}."
    if version == 1:
        return "Version 1 published: the journey takes entries from now on."
    kept = query.get("kept", "")
    if _NUMBER.match(kept):
        running = f"{int(kept)} customer(s) running keep their version"
    else:
        running = "customers running keep their version (how many is unknown: Temporal did not answer)"
    return f"Version {version} published; {running}. New entrants take version {version}."
