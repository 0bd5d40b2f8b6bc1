"""The local stack: embedded PostgreSQL, the mail sink, the Temporal dev server, ``parcours dev`` and its demo."""
