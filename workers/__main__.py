"""``python -m workers``: run one worker until SIGINT or SIGTERM, then finish in-flight tasks and exit.

Needs ``PARCOURS_DATABASE_URL``; Temporal is ``PARCOURS_TEMPORAL_ADDRESS`` (or ``TEMPORAL_ADDRESS``), else
``127.0.0.1:<PARCOURS_TEMPORAL_PORT>``. ``parcours worker`` does the same and can also find the database of a
running ``parcours dev``.
"""

from __future__ import annotations

import asyncio
import sys

from config.logging import configure_logging
from config.settings import get_settings
from config.tracing import configure_tracing
from workers.process import serve


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format, redacted=settings.log_redact)
    configure_tracing("parcours-worker", settings.otel_exporter)
    if not settings.database_url:
        print(
            "PARCOURS_DATABASE_URL is not set (`parcours worker` can use the database of `parcours dev`)",
            file=sys.stderr,
        )
        sys.exit(2)
    asyncio.run(serve(settings, settings.database_url))


if __name__ == "__main__":
    main()
