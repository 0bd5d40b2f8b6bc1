"""A local SMTP server for ``parcours dev`` when none is configured: prints each message, keeps it as a file.

Imports aiosmtpd (a dev extra); ``devstack.stack`` falls back to the console channel when it is missing.
"""

from __future__ import annotations

import email
import email.policy
import logging
import re
import time
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from rich.console import Console


class DevMailSink:
    def __init__(self, host: str, port: int, folder: Path, console: Console) -> None:
        self.host = host
        self.port = port
        self.folder = folder
        self.console = console
        self.count = 0
        self._controller = Controller(self, hostname=host, port=port)

    def start(self) -> None:
        logging.getLogger("mail.log").setLevel(logging.WARNING)  # one line per connection otherwise
        self.folder.mkdir(parents=True, exist_ok=True)
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    # aiosmtpd handler hook; runs in the server's thread.
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw: bytes = envelope.content
        message = email.message_from_bytes(raw, policy=email.policy.default)
        self.count += 1
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(message.get("Message-ID", self.count)).strip("<>"))[:120]
        path = self.folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{stem}.eml"
        path.write_bytes(raw)
        self.console.print(
            f"[magenta]mail[/] to {', '.join(envelope.rcpt_tos)}: {message.get('Subject', '(no subject)')} "
            f"[dim]({path.name})[/]",
            highlight=False,
        )
        return "250 OK"
