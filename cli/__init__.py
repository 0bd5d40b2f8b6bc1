"""The ``parcours`` command: the one-process dev stack and the operator commands. Nothing imports this package."""
