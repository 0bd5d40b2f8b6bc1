"""Fault tests: real processes (dev server, PostgreSQL, workers) stopped, killed and restarted mid-run.

They run in the normal suite (CI included); ``pytest -m faults`` runs them alone, ``-m "not faults"`` leaves
them out of a quick local loop.
"""

from __future__ import annotations

from tests.support.faults import dev_server, own_postgres  # noqa: F401  (fixtures)
from tests.support.stack import stack_fixture  # noqa: F401  (fixture)
